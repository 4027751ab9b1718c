"""
A TCP proxy for tests: put it between glancetx and an object store, then
cut the store off in the middle of an upload and bring it back.

    proxy = TCPProxy(reactor, "127.0.0.1", 8080)
    port = await proxy.start()          # listens on 127.0.0.1:<port>
    ...
    proxy.cut()       # drop every connection and refuse new ones
    await proxy.restore()               # listen again on the same port
    await proxy.stop()

While cut, the listening port is closed, so new connections are refused
(ECONNREFUSED) rather than accepted and dropped.  C{blackHole()} instead
keeps every connection open and throws away whatever either side sends:
a partition, where TCP sees nothing wrong.

Given C{tls} (server-side TLS options), the proxy takes TLS from its
clients and speaks plain TCP to the server: a TLS front for a server that
has none of its own.
"""

from typing import List, Optional

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol


class _Upstream(Protocol):
    """
    The proxy's connection to the real server.
    """

    def __init__(self, downstream: "_Downstream") -> None:
        self.downstream = downstream

    def connectionMade(self) -> None:
        self.downstream.upstreamReady(self)

    def dataReceived(self, data: bytes) -> None:
        if self.downstream.proxy.swallowing:
            return
        self.downstream.proxy.bytesFromServer += len(data)
        self.downstream.transport.write(data)

    def connectionLost(self, reason=None) -> None:
        self.downstream.upstreamLost()


class _Downstream(Protocol):
    """
    A client's connection to the proxy.  Bytes that arrive before the
    upstream connection is made are held; afterwards each side's transport
    is registered as the producer of the other, so a slow side pauses the
    fast one and nothing piles up in the proxy.
    """

    def __init__(self, proxy: "TCPProxy") -> None:
        self.proxy = proxy
        self.upstream: Optional[_Upstream] = None
        self._pending: List[bytes] = []
        self._closed = False

    def connectionMade(self) -> None:
        self.proxy.connections.append(self)
        self.proxy.accepted += 1
        self.transport.pauseProducing()
        endpoint = TCP4ClientEndpoint(self.proxy.reactor, self.proxy.targetHost,
                                      self.proxy.targetPort, timeout=10)
        d = endpoint.connect(Factory.forProtocol(lambda: _Upstream(self)))
        d.addErrback(lambda f: self.transport.abortConnection())

    def upstreamReady(self, upstream: _Upstream) -> None:
        if self._closed:
            upstream.transport.abortConnection()
            return
        self.upstream = upstream
        upstream.transport.registerProducer(self.transport, True)
        self.transport.registerProducer(upstream.transport, True)
        for data in self._pending:
            upstream.transport.write(data)
        self._pending = []
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.proxy.swallowing:
            return
        self.proxy.bytesToServer += len(data)
        if self.upstream is None:
            self._pending.append(data)
        else:
            self.upstream.transport.write(data)

    def upstreamLost(self) -> None:
        if not self._closed:
            self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self._closed = True
        if self in self.proxy.connections:
            self.proxy.connections.remove(self)
        if self.upstream is not None:
            self.upstream.transport.loseConnection()

    def abort(self) -> None:
        self._closed = True
        self.transport.abortConnection()
        if self.upstream is not None:
            self.upstream.transport.abortConnection()


class TCPProxy:
    """
    Forwards 127.0.0.1:C{port} to C{targetHost}:C{targetPort}.
    """

    def __init__(self, reactor, targetHost: str, targetPort: int,
                 interface: str = "127.0.0.1", tls=None) -> None:
        self.reactor = reactor
        self.tls = tls
        self.targetHost = targetHost
        self.targetPort = targetPort
        self.interface = interface
        self.port = 0
        self.connections: List[_Downstream] = []
        self.accepted = 0
        self.bytesToServer = 0
        self.bytesFromServer = 0
        self.swallowing = False
        self._listening = None

    async def start(self) -> int:
        """
        Listen (on a free port the first time); fire with the port number.
        """
        if self.tls is not None:
            from twisted.internet.endpoints import SSL4ServerEndpoint

            endpoint = SSL4ServerEndpoint(self.reactor, self.port, self.tls,
                                          interface=self.interface)
        else:
            endpoint = TCP4ServerEndpoint(self.reactor, self.port, interface=self.interface)
        self._listening = await endpoint.listen(Factory.forProtocol(lambda: _Downstream(self)))
        self.port = self._listening.getHost().port
        return self.port

    @property
    def address(self) -> str:
        return "%s:%d" % (self.interface, self.port)

    def cut(self) -> Deferred:
        """
        Drop every connection (both sides, with a reset) and stop listening,
        so the store looks dead: new connections are refused.
        """
        listening, self._listening = self._listening, None
        d = maybeDeferred(listening.stopListening) if listening is not None else Deferred()
        if listening is None:
            d.callback(None)
        for conn in list(self.connections):
            conn.abort()
        return d

    def blackHole(self) -> None:
        """
        From now on throw away what either side sends, on every connection,
        and keep them all open.
        """
        self.swallowing = True

    async def restore(self) -> int:
        """
        Listen again on the same port, and pass bytes on again.
        """
        self.swallowing = False
        if self._listening is None:
            await self.start()
        return self.port

    async def stop(self) -> None:
        await self.cut()
