"""
A cap on the bytes of a response's status line and headers, for the HTTP
client that talks to servers users name (copy-from sources and http
locations).

twisted.web's client parser limits each header line (16 KiB) but not how
many there are: an origin that sent header lines without end for the
whole of the store's 60 s wait grew the server by hundreds of MiB, which
it never gave back.
"""

import attr
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import HEADER, STATUS
from zope.interface import implementer

from glancetx.wrapfactory import WrappingFactory

#: Far beyond any real origin's headers (nginx refuses requests whose
#: headers pass 32 KiB by default), far below what hurts.
MAX_HEADER_BYTES = 256 * 1024

#: The parser states in which what arrives is a status line or headers.
_HEADING = (STATUS, HEADER)


class HeadersTooLarge(Exception):
    """
    An origin's response head passed L{MAX_HEADER_BYTES}.
    """


def headersTooLarge(error: BaseException) -> bool:
    """
    Whether a request failed because its response head was cut off here
    (the client's L{twisted.web.client.ResponseFailed} carries the
    reason given to its protocol).
    """
    return any(isinstance(reason, Failure) and reason.check(HeadersTooLarge)
               for reason in getattr(error, "reasons", ()))


class _HeaderCapped(Protocol):
    """
    Sits under one connection's HTTP client protocol, passing it the real
    transport, and closes the connection once more than C{limit} bytes
    arrive while a response's head is being read.  Bytes are counted a
    read at a time, so the head's own share of a read that also carries
    the body counts whole; the limit leaves room for that.
    """

    log = Logger()

    def __init__(self, wrapped: Protocol, limit: int) -> None:
        self.wrapped = wrapped
        self._limit = limit
        self._heading = 0
        self._closed = False

    def makeConnection(self, transport) -> None:
        self.transport = transport
        self.connected = 1
        self.wrapped.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        # HTTP11ClientProtocol's parser of the response now being read,
        # if any (None between the responses of a kept-alive connection).
        parser = getattr(self.wrapped, "_parser", None)
        if getattr(parser, "state", None) in _HEADING:
            self._heading += len(data)
            if self._heading > self._limit:
                self._closed = True
                peer = self.transport.getPeer()
                self.log.info(
                    "closed the connection to {host}:{port}: more than {limit} bytes of"
                    " response headers",
                    host=getattr(peer, "host", "?"),
                    port=getattr(peer, "port", "?"),
                    limit=self._limit,
                )
                # The client protocol learns why now (its request fails
                # with this reason), and nothing of the connection after.
                self.wrapped.connectionLost(Failure(HeadersTooLarge(self._limit)))
                self.transport.abortConnection()
                return
        else:
            self._heading = 0
        self.wrapped.dataReceived(data)

    def connectionLost(self, reason) -> None:
        self.connected = 0
        if not self._closed:
            self.wrapped.connectionLost(reason)


@implementer(IStreamClientEndpoint)
@attr.s(eq=False)
class HeaderCappedEndpoint:
    """
    C{endpoint}, its connections' response heads capped at C{limit} bytes.
    The protocol it connects is the caller's own (an agent's pool calls
    its methods), not the wrapper.
    """

    _endpoint: IStreamClientEndpoint = attr.ib()
    _limit: int = attr.ib(default=MAX_HEADER_BYTES)

    def connect(self, protocolFactory):
        connecting = self._endpoint.connect(WrappingFactory(
            protocolFactory, lambda proto: _HeaderCapped(proto, self._limit)))
        return connecting.addCallback(lambda proto: proto.wrapped)
