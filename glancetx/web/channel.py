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

A small answer goes out in one send, head and body together
(L{GlanceChannel.headWithBody}): twisted.web writes the head on its own,
and two sends cost a second wake-up of the client and, with Nagle's
algorithm on (twisted.web leaves it on), can hold the body until the
client acknowledges the head.

A request twisted.web cannot parse is refused here with a status that says
why and a plain message: twisted.web answers a bare C{400} with no body,
and closes a connection whose line passes its limit without a word, which
a client reports as a dropped connection rather than as its own mistake.
"""

import re
import socket
import struct
from typing import Callable, Optional, Tuple

from twisted.internet import tcp
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.protocols import basic
from twisted.web import http
from twisted.web.http_headers import Headers
from zope.interface import implementer

from glancetx.web.chunked import ChunkedDecoder
from glancetx.web.sendfile import transportIsIdle

#: Writes up to this size go straight to the socket when nothing is queued
#: (a response head, a JSON body); larger ones take the usual path.
SEND_NOW_MAX = 64 * 1024


def _refusal(status: bytes, message: bytes) -> bytes:
    body = message + b"\n"
    return (b"HTTP/1.1 %s\r\nConnection: close\r\n"
            b"Content-Type: text/plain; charset=UTF-8\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body))


def dropWriteBuffers(transport) -> None:
    """
    Let go of what a closed connection still had to send.

    Twisted's TCP transport keeps its write buffers (up to a download's
    read of 1 MiB, and the one before it) after the connection is lost,
    for as long as the transport lives; and a download cut off by its
    client leaves the transport in reference cycles (the request, its
    producer, the failure's traceback, the handler's frame) that only
    Python's full collection frees, which runs rarely.  Forty clients
    that each cut a download after a few megabytes, over and over, held
    hundreds of dead connections' buffers at once (peaks of 140-250 MB
    against 82 without them).
    (Private attributes of Twisted's transport, as L{transportIsIdle}
    reads; nothing is written to a transport once its connection is lost.)
    Under TLS the bytes wait in the TCP transport beneath.
    """
    beneath = tcpTransport(transport)
    if beneath is not None:
        beneath.dataBuffer = b""
        beneath.offset = 0
        beneath._tempDataBuffer = []
        beneath._tempDataLen = 0


def tcpTransport(transport):
    """
    Twisted's TCP transport, C{transport} itself or the one beneath its
    TLS (which passes attributes it lacks on to it, hence the instance's
    own dictionary); None for any other.
    """
    for _ in range(3):
        if transport is None or "_tempDataBuffer" in getattr(transport, "__dict__", ()):
            return transport
        transport = getattr(transport, "transport", None)
    return None


def bufferedBytes(transport) -> Optional[int]:
    """
    How many bytes written to C{transport} still wait in Twisted's write
    buffers, for the kernel to take as the client reads; None where the
    transport is not Twisted's TCP (the same private attributes
    L{dropWriteBuffers} clears, under TLS those of the TCP transport
    beneath).
    """
    beneath = tcpTransport(transport)
    if beneath is None:
        return None
    return len(beneath.dataBuffer) - beneath.offset + beneath._tempDataLen


#: Where Linux's struct tcp_info keeps tcpi_bytes_acked (since 4.1).
_TCPI_BYTES_ACKED = 120


def ackedBytes(transport) -> Optional[int]:
    """
    How many bytes the client's side of C{transport}'s TCP connection has
    acknowledged (under TLS, the connection beneath): a count that grows
    as the client reads, whatever Twisted's and the kernel's send buffers
    hold meanwhile.  None where the system does not say (not Linux, or
    not Twisted's TCP).
    """
    sock = getattr(tcpTransport(transport), "socket", None)
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCPI_BYTES_ACKED + 8:
        return None
    return struct.unpack_from("Q", info, _TCPI_BYTES_ACKED)[0]


def _progress(transport) -> Tuple[Optional[int], Optional[int]]:
    return ackedBytes(transport), bufferedBytes(transport)


def _movedOn(now: Tuple[Optional[int], Optional[int]],
             mark: Tuple[Optional[int], Optional[int]]) -> bool:
    """
    Whether a client read anything between C{mark} and C{now} (each from
    L{_progress}): its kernel acknowledged more, or Twisted's buffer
    shrank.
    """
    (acked, left), (ackedThen, leftThen) = now, mark
    if acked is not None and ackedThen is not None and acked > ackedThen:
        return True
    return left is not None and leftThen is not None and left < leftThen


#: A request target's scheme and authority, in absolute form.
_ABSOLUTE_FORM = re.compile(rb"\A[hH][tT][tT][pP][sS]?://([^/?]*)")


@implementer(IHalfCloseableProtocol)
class GlanceChannel(http.HTTPChannel):
    #: A request head may be as large as Glance's server (eventlet) took:
    #: 64 KiB in all, each line at most 16 KiB.  twisted.web's 16 KiB in all
    #: refused an image-create with the property quota's 128 properties
    #: of 150 characters, or python-glanceclient's with 40 of 500.
    totalHeadersSize = 65536

    _host = None
    _secure = None
    #: Set once this connection is refused: nothing more is written to it.
    _refused = False

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
        if header == b"Content-Length" and len(data) > 19 and data.isdigit():
            # int() refuses more than 4,300 digits with a ValueError that
            # twisted.web does not catch (no answer at all); more than 19
            # significant ones are beyond any body.
            data = data.lstrip(b"0") or b"0"
            if len(data) > 19:
                return self._failChooseTransferDecoder()
        if header == b"Transfer-Encoding" and data.strip().lower() == b"identity":
            # twisted.web takes "identity" as no coding at all, and the body
            # as the next request; RFC 9112 6.1: a request whose final
            # coding is not chunked is a 400, and the connection closes.
            return self._failChooseTransferDecoder()
        chosen = super()._maybeChooseTransferDecoder(header, data)
        decoder = self._transferDecoder
        if type(decoder) is http._ChunkedTransferDecoder:
            self._transferDecoder = ChunkedDecoder(decoder.dataCallback,
                                                   decoder.finishCallback)
        return chosen

    def lineReceived(self, line: bytes) -> None:
        super().lineReceived(line)
        path = getattr(self, "_path", b"/")
        absolute = _ABSOLUTE_FORM.match(path) if path[:1] != b"/" else None
        if absolute is not None:
            # RFC 9112 3.2.2: a server takes a target in absolute form
            # (which clients send to proxies) as its path and query, and
            # its authority as the host; the router took it whole for a
            # path and answered 300, and links named the Host header.
            self._targetAuthority = absolute.group(1).rpartition(b"@")[2] or None
            path = path[absolute.end():]
            self._path = path if path[:1] == b"/" else b"/" + path

    #: The host named by this request's target in absolute form.
    _targetAuthority = None

    def allHeadersReceived(self) -> None:
        authority, self._targetAuthority = self._targetAuthority, None
        headers = self.requests[-1].requestHeaders
        if authority is not None and headers.hasHeader(b"Host"):
            # Only in place of one: an HTTP/1.1 request without is a 400
            # all the same (RFC 9112 3.2).
            headers.setRawHeaders(b"Host", [authority])
        super().allHeadersReceived()

    def checkPersistence(self, request, version) -> bool:
        # twisted.web reads only the first Connection field, split at
        # spaces; it is a comma-separated list, in any number of fields
        # (RFC 9110 7.6.1), and "close" anywhere in it ends the connection.
        fields = request.requestHeaders.getRawHeaders(b"Connection") or []
        tokens = {t.strip().lower() for f in fields for t in f.split(b",")}
        if version == b"HTTP/1.1" and b"close" in tokens:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return super().checkPersistence(request, version)

    def readConnectionLost(self) -> None:
        """
        The client has sent all it will (C{shutdown(SHUT_WR)}), as some
        do after a request: answer a request that arrived whole, then
        close; one cut off is a client gone.  (Taken for a closed
        connection, such a client got no answer, though an upload it had
        sent whole went active, and would upload it again.)
        """
        if self._handlingRequest:
            self.persistent = False
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        # The server never half-closes; nothing is left to do but close.
        self.transport.loseConnection()

    #: Pipelined requests already read, not yet answered because the
    #: client is not reading the answers.
    _held = b""

    def requestDone(self, request) -> None:
        """
        twisted.web answers the requests a client pipelined, once read, one
        after another even while the client reads none of the answers,
        which then pile up in memory (one read of 64 KiB holds a thousand
        small requests, each of whose answers may be a large list page).
        Until the client reads, hold them, and read no more.
        """
        if self._waitingForTransport and self.persistent and self._dataBuffer:
            self._held = b"".join(self._dataBuffer)
            self._dataBuffer = []
            self._networkProducer.pauseProducing()
        super().requestDone(request)

    def _resumeProducing(self) -> None:
        super().resumeProducing()
        if self._held and not self._handlingRequest and not self._waitingForTransport:
            held, self._held = self._held, b""
            self.dataReceived(held)

    _stallTimer = None
    #: How far the client had read when the stall timer was set (see
    #: L{_progress}).
    _stallMark: Tuple[Optional[int], Optional[int]] = (None, None)

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full: the client is reading no answer.
        twisted.web's idle timeout does not run while a request is being
        answered, so a client that stops reading a download would hold the
        connection, its file and its buffers for good: close it after
        C{client_socket_timeout} seconds (Glance's option) unless it reads.
        """
        super().pauseProducing()
        seconds = getattr(getattr(getattr(self.site, "api", None), "config", None),
                          "client_socket_timeout", 0)
        if seconds and self._stallTimer is None:
            self._stallTimer = self.callLater(seconds, self._stalled, seconds)
            self._stallMark = _progress(self.transport)

    def resumeProducing(self) -> None:
        timer, self._stallTimer = self._stallTimer, None
        if timer is not None and timer.active():
            timer.cancel()
        self._resumeProducing()

    def _stalled(self, seconds: int) -> None:
        self._stallTimer = None
        # The transport resumes its producer only once its buffer is empty,
        # which a download's 1 MiB reads take a slow client long to reach;
        # a client that took any of it meanwhile is reading, if slowly
        # (readers at 30 KB/s were cut off after 20 s of this).  Twisted's
        # buffer alone does not tell: the kernel's send buffer (up to 4 MiB)
        # takes from it only once a third of it is free, and under TLS the
        # pause comes part way through a write, whose rest then fills the
        # buffer past the mark.  Readers at 10-100 KB/s of S3 and Swift
        # downloads, and at 30 KB/s over TLS, were cut off so.  What the
        # client's kernel acknowledges tells.
        now = _progress(self.transport)
        if _movedOn(now, self._stallMark):
            self._stallMark = now
            self._stallTimer = self.callLater(seconds, self._stalled, seconds)
            return
        self._log.info("closing the connection of {peer}: it read nothing for {seconds}"
                       " seconds", peer=str(self.transport.getPeer()), seconds=seconds)
        self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        timer, self._stallTimer = self._stallTimer, None
        if timer is not None and timer.active():
            timer.cancel()
        dropWriteBuffers(self.transport)
        super().connectionLost(reason)

    def _readingHead(self) -> bool:
        """
        Whether part of a request's head has arrived and the rest has not.
        """
        return bool(self.line_mode and not self._handlingRequest
                    and (self._buffer or self.requests))

    def _readingSmallBody(self) -> bool:
        """
        Whether a request that is no upload (a member list) has its head
        in and its body still arriving.
        """
        return bool(not self.line_mode and not self._handlingRequest and self.requests
                    and getattr(self.requests[-1], "body", True) is None)

    def dataReceived(self, data: bytes) -> None:
        """
        A request's head, and its body unless it is an upload, must arrive
        whole within one idle timeout of the read that began it.
        twisted.web restarts the timeout at every read, so a client
        sending its headers a byte at a time held the connection, and a
        slot of the server's, for as long as it liked; and clients
        trickling member lists held the process's share of small bodies,
        so that every other member list got 503s, for as long as they
        liked.  An upload's body restarts it as before.
        """
        if self._readingHead() or self._readingSmallBody():
            basic.LineReceiver.dataReceived(self, data)
        else:
            super().dataReceived(data)

    def timeoutConnection(self) -> None:
        """
        An upload whose store has paused the socket is not idle: its client
        cannot send.  Look again a timeout later (the body restarts the
        count when it resumes the socket).  twisted.web's timeout is 60
        seconds, and a remote store can stall longer than that.

        A client still sending its request's head is told why it is cut off.
        """
        for request in self.requests:
            body = getattr(request, "body", None)
            if body is not None and body.holdsSocket:
                self.setTimeout(self.timeOut)
                return
        if (self._readingHead() or self._readingSmallBody()) and not self._refused:
            self._refused = True
            self.transport.write(_refusal(
                b"408 Request Timeout",
                b"The request %s did not arrive within %d seconds."
                % (b"head" if self._readingHead() else b"body", self.timeOut)))
        super().timeoutConnection()

    def _refuse(self, status: bytes, message: bytes) -> None:
        """
        Answer and close, once.  Where a handler has already begun its
        answer (an upload refused while its body drains), that answer
        stands and the connection just closes; a handler that answers
        after the refusal (an upload dispatched in the same read) is not
        heard.
        """
        if self._refused:
            return
        self._refused = True
        if not any(getattr(r, "startedWriting", False) for r in self.requests):
            self.transport.write(_refusal(status, message))
        self.loseConnection()

    def _respondToBadRequestAndDisconnect(self) -> None:
        """
        twisted.web's answer to anything it cannot parse, and to headers
        over its count or size limits (which it checks just before).
        """
        if self._receivedHeaderSize > self.totalHeadersSize:
            self._refuse(b"431 Request Header Fields Too Large",
                         b"The request headers are larger than %d bytes in all."
                         % (self.totalHeadersSize,))
        elif self._receivedHeaderCount > self.maxHeaders:
            self._refuse(b"431 Request Header Fields Too Large",
                         b"The request has more than %d headers." % (self.maxHeaders,))
        elif getattr(self._transferDecoder, "refusedBecause", None) is not None:
            why = "chunked request body is malformed: " + self._transferDecoder.refusedBecause
            for request in self.requests:
                body = getattr(request, "body", None)
                if body is not None:
                    body.refused("the " + why)
            self._refuse(b"400 Bad Request", b"The %s." % (why.encode(),))
        else:
            self._refuse(b"400 Bad Request", b"Malformed HTTP request.")

    def lineLengthExceeded(self, line) -> None:
        # The name-mangled flag twisted.web sets while it waits for a
        # request line (tests.test_channel checks it still does).
        if getattr(self, "_HTTPChannel__first_line", 0):
            self._refuse(b"414 URI Too Long",
                         b"The request line is longer than %d bytes." % (self.MAX_LENGTH,))
        else:
            self._refuse(b"431 Request Header Fields Too Large",
                         b"A request header line is longer than %d bytes." % (self.MAX_LENGTH,))

    def writeHeaders(self, version, code, reason, headers) -> None:
        """
        The response head as one string.  A L{Headers} holds names and
        values already checked for line breaks when they were set; anything
        else goes through twisted.web's own sanitising path.
        """
        if self._refused:
            return
        if not isinstance(headers, Headers):
            return super().writeHeaders(version, code, reason, headers)
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        if self._holdHead:
            self._heldHead = b"".join(head)
            return
        self.write(b"".join(head))

    _holdHead = False
    _heldHead = None

    def headWithBody(self, writeBody: Callable[[], None]) -> None:
        """
        Call C{writeBody}, which writes a response's head and then the
        first part of its body, and send the two as one write.  Whatever
        happens in C{writeBody}, a head it wrote is sent by the time this
        returns.
        """
        self._holdHead = True
        try:
            writeBody()
        finally:
            self._holdHead = False
            head, self._heldHead = self._heldHead, None
            if head is not None:
                self.write(head)

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
        if self._refused:
            return
        if self._heldHead is not None:
            data, self._heldHead = self._heldHead + data, None
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
        if self._refused:
            return
        iovec = list(iovec)
        if self._heldHead is not None:
            iovec.insert(0, self._heldHead)
            self._heldHead = None
        if sum(map(len, iovec)) <= SEND_NOW_MAX:
            self.write(b"".join(iovec))
        else:
            self.transport.writeSequence(iovec)

