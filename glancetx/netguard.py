"""
The outbound-address guard: where the server may fetch from when a user
names the URL (copy-from sources, registered http locations).

A check on the name alone is not enough: DNS can answer one address to the
check and another to the connect, and a redirect can point anywhere.  So the
guard sits in the HTTP agent's endpoint.  It resolves the name itself,
drops every address that is not allowed, connects to an allowed IP literal,
and checks C{transport.getPeer()} once more before the HTTP (or TLS)
protocol sees the connection.  Every connection the agent opens, redirect
hops included, goes through it.  TLS still verifies the certificate against
the hostname from the URL, not the address.  Which addresses are allowed
is L{glancetx.addresses}.
"""

from typing import Callable, Iterable, List, Optional, Sequence, Union

import attr
from treq.client import HTTPClient
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import (
    IHostnameResolver,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from glancetx.addresses import Network, isPermitted, parseAddress, parseNetworks
from glancetx.asyncutil import fromCoroutine
from glancetx.headercap import HeaderCappedEndpoint
from glancetx.wrapfactory import WrappingFactory
from glancetx.lazytls import clientTLS
from glancetx.store.interface import BadLocation

__all__ = [
    "ForbiddenAddress",
    "GuardedEndpoint",
    "GuardedEndpointFactory",
    "guardedAgent",
    "guardedHTTPClient",
    "isPermitted",
    "parseNetworks",
]

#: Seconds one TCP connection attempt may take.
CONNECT_TIMEOUT = 30


class ForbiddenAddress(BadLocation):
    """
    The URL's host is, or resolves to, an address the server may not fetch
    from.
    """


def _refusal(host: str) -> ForbiddenAddress:
    return ForbiddenAddress("the address of %s is not allowed" % (host,))


@implementer(IResolutionReceiver)
class _Collector:
    """
    Gathers the addresses one resolution produces into a Deferred.
    """

    def __init__(self, done: "Deferred[List[str]]") -> None:
        self._done = done
        self._addresses: List[str] = []

    def resolutionBegan(self, resolution) -> None:
        pass

    def addressResolved(self, address) -> None:
        host = getattr(address, "host", None)
        if isinstance(host, str):
            self._addresses.append(host)

    def resolutionComplete(self) -> None:
        if not self._done.called:
            self._done.callback(self._addresses)


def resolve(resolver: IHostnameResolver, host: str, port: int) -> "Deferred[List[str]]":
    """
    Every address C{host} resolves to, without blocking the reactor.
    Cancelling stops waiting (the resolution itself may run on).
    """
    done: "Deferred[List[str]]" = Deferred()
    resolver.resolveHostName(
        _Collector(done),
        host,
        portNumber=port,
        addressTypes=[IPv4Address, IPv6Address],
        transportSemantics="TCP",
    )
    return done


class _PeerCheckingProtocol(Protocol):
    """
    Sits under the real protocol for one connection and lets it see the
    connection only if the peer actually connected to is allowed.
    """

    refused = False

    def __init__(self, wrapped: Protocol, permitted: Callable[[object], bool]) -> None:
        self.wrapped = wrapped
        self._permitted = permitted

    def makeConnection(self, transport) -> None:
        self.transport = transport
        self.connected = 1
        peer = transport.getPeer()
        if not self._permitted(getattr(peer, "host", None)):
            self.refused = True
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                transport.loseConnection()
            return
        self.wrapped.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        if not self.refused:
            self.wrapped.dataReceived(data)

    def connectionLost(self, reason) -> None:
        self.connected = 0
        if not self.refused:
            self.wrapped.connectionLost(reason)


def _tcpEndpoint(reactor) -> Callable[[str, int], IStreamClientEndpoint]:
    def connectTo(ip: str, port: int) -> IStreamClientEndpoint:
        if ":" in ip:
            return TCP6ClientEndpoint(reactor, ip, port, timeout=CONNECT_TIMEOUT)
        return TCP4ClientEndpoint(reactor, ip, port, timeout=CONNECT_TIMEOUT)

    return connectTo


@implementer(IStreamClientEndpoint)
@attr.s(eq=False)
class GuardedEndpoint:
    """
    A client endpoint for C{host}:C{port} that only ever connects to
    allowed addresses.

    @ivar _connectTo: makes the endpoint for one IP literal and port (a TCP
        endpoint in production; tests inject others).
    """

    log = Logger()

    _host: str = attr.ib()
    _port: int = attr.ib()
    _allowedNetworks: Sequence[Network] = attr.ib()
    _resolver: IHostnameResolver = attr.ib()
    _connectTo: Callable[[str, int], IStreamClientEndpoint] = attr.ib()

    def _permitted(self, address: object) -> bool:
        return isinstance(address, str) and isPermitted(address, self._allowedNetworks)

    @fromCoroutine
    async def connect(self, protocolFactory):
        if parseAddress(self._host) is not None:
            addresses = [self._host]
        else:
            addresses = await resolve(self._resolver, self._host, self._port)
            if not addresses:
                raise DNSLookupError("no address for %s" % (self._host,))
        allowed = [a for a in addresses if self._permitted(a)]
        if not allowed:
            self.log.info(
                "refused to connect to {host}: no allowed address in {addresses}",
                host=self._host,
                addresses=addresses,
            )
            raise _refusal(self._host)
        lastError: Optional[BaseException] = None
        for address in allowed:
            endpoint = self._connectTo(address, self._port)
            checking = WrappingFactory(
                protocolFactory, lambda proto: _PeerCheckingProtocol(proto, self._permitted))
            try:
                proto = await endpoint.connect(checking)
            except CancelledError:
                raise
            except Exception as e:
                lastError = e
                continue
            if proto.refused:
                peer = getattr(proto.transport.getPeer(), "host", None)
                self.log.warn(
                    "refused connection to {host}: connected to {peer}, not {address}",
                    host=self._host,
                    peer=peer,
                    address=address,
                )
                raise _refusal(self._host)
            return proto.wrapped
        assert lastError is not None
        raise lastError


@implementer(IAgentEndpointFactory)
@attr.s(eq=False)
class GuardedEndpointFactory:
    """
    Guarded endpoints for L{Agent.usingEndpointFactory}: plain for C{http},
    wrapped in TLS verified against the URL's hostname for C{https}.
    """

    _reactor = attr.ib()
    _allowedNetworks: Sequence[Network] = attr.ib()
    _resolver: Optional[IHostnameResolver] = attr.ib(default=None)
    _connectTo: Optional[Callable[[str, int], IStreamClientEndpoint]] = attr.ib(default=None)
    _tlsPolicy: IPolicyForHTTPS = attr.ib(factory=BrowserLikePolicyForHTTPS)

    def endpointForURI(self, uri) -> IStreamClientEndpoint:
        if uri.scheme not in (b"http", b"https"):
            raise SchemeNotSupported("unsupported scheme: %r" % (uri.scheme,))
        # Twisted's URI keeps any userinfo in host; it is never part of the
        # address.
        hostBytes = uri.host.rpartition(b"@")[2]
        try:
            host = hostBytes.decode("ascii")
        except UnicodeDecodeError:
            raise BadLocation("the host name is not ASCII")
        resolver = self._resolver
        if resolver is None:
            resolver = self._reactor.nameResolver
        connectTo = self._connectTo or _tcpEndpoint(self._reactor)
        endpoint: IStreamClientEndpoint = GuardedEndpoint(
            host, uri.port, self._allowedNetworks, resolver, connectTo
        )
        if uri.scheme == b"https":
            creator = self._tlsPolicy.creatorForNetloc(hostBytes, uri.port)
            endpoint = clientTLS(creator, endpoint)
        # Outside TLS's wrapper, so that what it counts is the headers.
        return HeaderCappedEndpoint(endpoint)


def _networks(allowedNetworks: Union[None, str, Iterable[Network]]) -> List[Network]:
    if allowedNetworks is None or isinstance(allowedNetworks, str):
        return parseNetworks(allowedNetworks)
    return list(allowedNetworks)


def guardedAgent(
    reactor,
    allowedNetworks: Union[None, str, Iterable[Network]],
    pool=None,
    resolver: Optional[IHostnameResolver] = None,
    connectTo: Optional[Callable[[str, int], IStreamClientEndpoint]] = None,
    tlsPolicy: Optional[IPolicyForHTTPS] = None,
) -> Agent:
    """
    An L{Agent} whose every connection goes through L{GuardedEndpoint}.

    @param allowedNetworks: the parsed C{copy_from_allowed_networks} (or the
        option's text).
    @param resolver: the name resolver; the reactor's by default.
    @param connectTo: makes an endpoint for an IP literal and port.
    @param tlsPolicy: the HTTPS policy (certificate checks against the
        hostname, platform trust by default).
    """
    factory = GuardedEndpointFactory(
        reactor,
        _networks(allowedNetworks),
        resolver,
        connectTo,
        tlsPolicy if tlsPolicy is not None else BrowserLikePolicyForHTTPS(),
    )
    return Agent.usingEndpointFactory(reactor, factory, pool=pool)


def guardedHTTPClient(reactor, allowedNetworks, pool=None, **kwargs) -> HTTPClient:
    """
    A treq client over L{guardedAgent}.  Keyword arguments are
    L{guardedAgent}'s.
    """
    return HTTPClient(guardedAgent(reactor, allowedNetworks, pool=pool, **kwargs))


#: The agent, by the name the design uses.
GuardedAgent = guardedAgent
