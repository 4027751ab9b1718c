"""
twisted.web's HTTP/1.1 channel, with the per-request costs that are really
per-connection paid once.

A metadata request (HEAD of an image) is a few hundred microseconds of
Python, so the constant costs of the request path show: C{getHost} is a
C{getsockname} call for every request, C{isSecure} a zope adaptation on
every call (Klein and the Location header each ask), and the response
head goes to the transport as a hundred small strings that
C{writeSequence} checks one by one.  None of these can change while the
connection lives.
"""

from twisted.web import http
from twisted.web.http_headers import Headers


class GlanceChannel(http.HTTPChannel):
    _host = None
    _secure = None

    def getHost(self):
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def isSecure(self) -> bool:
        if self._secure is None:
            self._secure = super().isSecure()
        return self._secure

    def writeHeaders(self, version, code, reason, headers) -> None:
        """
        The response head as one string.  A L{Headers} holds names and
        values already checked for line breaks when they were set; anything
        else goes through twisted.web's own sanitising path.
        """
        if not isinstance(headers, Headers):
            return super().writeHeaders(version, code, reason, headers)
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self.transport.write(b"".join(head))
