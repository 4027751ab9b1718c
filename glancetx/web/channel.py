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

Chunked request bodies (every python-glanceclient upload) are decoded by
L{glancetx.web.chunked.ChunkedDecoder}, which passes image bytes on
with at most one copy where twisted.web's decoder makes two.
"""

from twisted.internet import tcp
from twisted.web import http
from twisted.web.http_headers import Headers

from glancetx.web.chunked import ChunkedDecoder
from glancetx.web.sendfile import transportIsIdle

#: Writes up to this size go straight to the socket when nothing is queued
#: (a response head, a JSON body); larger ones take the usual path.
SEND_NOW_MAX = 64 * 1024


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

    def _maybeChooseTransferDecoder(self, header, data):
        """
        Decode chunked bodies with L{ChunkedDecoder}.  (twisted.web builds
        its decoder here, by name; setup.py bounds Twisted's version, and
        the tests check this is still the place.)
        """
        chosen = super()._maybeChooseTransferDecoder(header, data)
        decoder = self._transferDecoder
        if type(decoder) is http._ChunkedTransferDecoder:
            self._transferDecoder = ChunkedDecoder(decoder.dataCallback,
                                                   decoder.finishCallback)
        return chosen

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
        self.write(b"".join(head))

    def write(self, data: bytes) -> None:
        """
        Send a small write at once when nothing is queued ahead of it.

        twisted.web's transport queues every write and asks epoll to say
        when the socket is writable: two epoll_ctl calls and a turn of the
        reactor per response, each releasing the GIL to the database
        threads, for a socket that almost always has room.  A HEAD spent
        a tenth of its reactor time there (bench.profile head).  What the
        kernel does not take, or any error, goes the usual way.
        """
        t = self.transport
        if (len(data) <= SEND_NOW_MAX and isinstance(t, tcp.Connection) and t.connected
                and not t.disconnecting and not t._writeDisconnected and transportIsIdle(t)):
            sent = t.writeSomeData(data)
            if isinstance(sent, int):
                if sent == len(data):
                    return
                data = data[sent:]
        self.transport.write(data)

    def writeSequence(self, iovec) -> None:
        iovec = list(iovec)
        if sum(map(len, iovec)) <= SEND_NOW_MAX:
            self.write(b"".join(iovec))
        else:
            self.transport.writeSequence(iovec)

