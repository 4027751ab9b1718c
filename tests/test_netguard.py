"""
The outbound-address guard: the address rules, the parsing of the allowed
networks, and the endpoint that checks the address actually connected to.
"""

import ipaddress

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IHostnameResolver
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import URI, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data
from zope.interface import implementer

from glancetx.errors import ConfigError
from glancetx.netguard import (
    ForbiddenAddress,
    GuardedEndpoint,
    GuardedEndpointFactory,
    guardedHTTPClient,
    isPermitted,
    parseNetworks,
)
from glancetx.store.interface import BadLocation


@implementer(IHostnameResolver)
class FakeResolver:
    """
    Answers from a table, at once; remembers what it was asked.
    """

    def __init__(self, table):
        self.table = table
        self.asked = []

    def resolveHostName(self, receiver, hostName, portNumber=0,
                        addressTypes=None, transportSemantics="TCP"):
        self.asked.append(hostName)
        receiver.resolutionBegan(None)
        for ip in self.table.get(hostName, []):
            cls = IPv6Address if ":" in ip else IPv4Address
            receiver.addressResolved(cls("TCP", ip, portNumber))
        receiver.resolutionComplete()


class AddressRuleTests(SynchronousTestCase):
    refused = [
        "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.1.1",
        "169.254.169.254", "0.0.0.0", "224.0.0.1", "239.1.1.1", "240.0.0.1",
        "255.255.255.255", "100.64.0.1",
        "::1", "::", "fe80::1", "fe80::1%lo", "fc00::1", "fd12:3456::1",
        "ff02::1", "fec0::1",
        "::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254",
        "64:ff9b::7f00:1", "2002:7f00:1::1", "2002:a00:1::",
        "not an address", "", "example.com",
    ]
    permitted = [
        "8.8.8.8", "93.184.216.34", "1.1.1.1",
        "2001:4860:4860::8888", "::ffff:8.8.8.8", "2606:4700:4700::1111",
    ]

    def test_refusedByDefault(self):
        for address in self.refused:
            self.assertFalse(isPermitted(address, []), address)

    def test_publicPermitted(self):
        for address in self.permitted:
            self.assertTrue(isPermitted(address, []), address)

    def test_allowedNetworks(self):
        nets = parseNetworks("127.0.0.0/8, 10.1.0.0/16, fd00::/8")
        self.assertTrue(isPermitted("127.0.0.1", nets))
        self.assertTrue(isPermitted("10.1.2.3", nets))
        self.assertTrue(isPermitted("fd00::5", nets))
        self.assertFalse(isPermitted("10.2.0.1", nets))
        self.assertFalse(isPermitted("::1", nets))
        self.assertFalse(isPermitted("169.254.169.254", nets))

    def test_mappedFormFollowsItsIPv4(self):
        nets = parseNetworks("127.0.0.0/8")
        self.assertTrue(isPermitted("::ffff:127.0.0.1", nets))
        self.assertFalse(isPermitted("::ffff:10.0.0.1", nets))

    def test_acceptsIPAddressObjects(self):
        self.assertFalse(isPermitted(ipaddress.ip_address("127.0.0.1"), []))
        self.assertTrue(isPermitted(ipaddress.ip_address("8.8.8.8"), []))


class ParseNetworksTests(SynchronousTestCase):
    def test_empty(self):
        self.assertEqual(parseNetworks(""), [])
        self.assertEqual(parseNetworks(None), [])
        self.assertEqual(parseNetworks(" , "), [])

    def test_list(self):
        self.assertEqual(
            parseNetworks("127.0.0.0/8,  ::1/128 ,192.0.2.7"),
            [
                ipaddress.ip_network("127.0.0.0/8"),
                ipaddress.ip_network("::1/128"),
                ipaddress.ip_network("192.0.2.7/32"),
            ],
        )

    def test_bad(self):
        for text in ["127.0.0.0/33", "nonsense", "10.0.0.1/8", "10.0.0.0/8;"]:
            e = self.assertRaises(ConfigError, parseNetworks, text)
            self.assertTrue(str(e).startswith("copy_from_allowed_networks: "), str(e))


class _Recorder(Protocol):
    made = False

    def connectionMade(self):
        self.made = True


class _OneFactory(Factory):
    def __init__(self):
        self.built = []

    def buildProtocol(self, addr):
        p = _Recorder()
        self.built.append(p)
        return p


class GuardedEndpointUnitTests(SynchronousTestCase):
    """
    The endpoint against a MemoryReactor: what it connects to, and what it
    does once it sees the peer.
    """

    def setUp(self):
        self.reactor = MemoryReactor()

    def endpoint(self, host, table=None, allowed=""):
        self.resolver = FakeResolver(table or {})
        return GuardedEndpoint(
            host, 80, parseNetworks(allowed), self.resolver,
            lambda ip, port: TCP4ClientEndpoint(self.reactor, ip, port),
        )

    def connectAndLand(self, endpoint, peer):
        """
        Connect, then complete the connection as if the socket's peer were
        C{peer}.
        """
        factory = _OneFactory()
        d = endpoint.connect(factory)
        host, port, clientFactory, _, _ = self.reactor.tcpClients[-1]
        transport = StringTransport(peerAddress=IPv4Address("TCP", peer, port))
        proto = clientFactory.buildProtocol(transport.getPeer())
        proto.makeConnection(transport)
        return d, factory, transport, host

    def test_connectsToTheResolvedAddress(self):
        ep = self.endpoint("images.example", {"images.example": ["93.184.216.34"]})
        d, factory, transport, host = self.connectAndLand(ep, "93.184.216.34")
        self.assertEqual(host, "93.184.216.34")
        self.assertIs(self.successResultOf(d), factory.built[0])
        self.assertTrue(factory.built[0].made)
        self.assertFalse(transport.disconnecting)

    def test_peerRecheck(self):
        """
        The name resolved to a public address, but the socket landed on
        loopback: refused before the protocol hears of the connection.
        """
        ep = self.endpoint("images.example", {"images.example": ["93.184.216.34"]})
        d, factory, transport, host = self.connectAndLand(ep, "127.0.0.1")
        failure = self.failureResultOf(d, ForbiddenAddress)
        self.assertEqual(str(failure.value), "the address of images.example is not allowed")
        self.assertFalse(factory.built[0].made)
        self.assertTrue(transport.disconnected or transport.disconnecting)

    def test_forbiddenNamesNeverConnect(self):
        ep = self.endpoint("intranet.example", {"intranet.example": ["10.0.0.5", "::1"]})
        d = ep.connect(_OneFactory())
        self.failureResultOf(d, ForbiddenAddress)
        self.assertEqual(self.reactor.tcpClients, [])

    def test_onlyAllowedAddressesTried(self):
        ep = self.endpoint(
            "mixed.example", {"mixed.example": ["10.0.0.5", "93.184.216.34"]}
        )
        ep.connect(_OneFactory())
        self.assertEqual([c[0] for c in self.reactor.tcpClients], ["93.184.216.34"])

    def test_literalNotResolved(self):
        ep = self.endpoint("127.0.0.1")
        self.failureResultOf(ep.connect(_OneFactory()), ForbiddenAddress)
        self.assertEqual(self.resolver.asked, [])
        self.assertEqual(self.reactor.tcpClients, [])

    def test_literalAllowed(self):
        ep = self.endpoint("127.0.0.1", allowed="127.0.0.0/8")
        d, factory, transport, host = self.connectAndLand(ep, "127.0.0.1")
        self.assertEqual(host, "127.0.0.1")
        self.successResultOf(d)

    def test_nextAddressAfterFailure(self):
        ep = self.endpoint("two.example", {"two.example": ["93.184.216.34", "8.8.8.8"]})
        d = ep.connect(_OneFactory())
        from twisted.internet.error import ConnectionRefusedError
        self.reactor.tcpClients[0][2].clientConnectionFailed(None, ConnectionRefusedError())
        self.assertEqual(self.reactor.tcpClients[1][0], "8.8.8.8")
        self.assertNoResult(d)

    def test_ipv6Forms(self):
        for host in ["::1", "::ffff:127.0.0.1", "fe80::1", "fe80::1%lo"]:
            ep = self.endpoint(host)
            self.failureResultOf(ep.connect(_OneFactory()), ForbiddenAddress)
        ep = self.endpoint(
            "v6.example", {"v6.example": ["::ffff:169.254.169.254", "fe80::1"]}
        )
        self.failureResultOf(ep.connect(_OneFactory()), ForbiddenAddress)
        self.assertEqual(self.reactor.tcpClients, [])

    def test_mappedLiteralAllowed(self):
        ep = GuardedEndpoint(
            "::ffff:127.0.0.1", 80, parseNetworks("127.0.0.0/8"), FakeResolver({}),
            lambda ip, port: TCP4ClientEndpoint(self.reactor, ip, port),
        )
        ep.connect(_OneFactory())
        self.assertEqual(self.reactor.tcpClients[0][0], "::ffff:127.0.0.1")

    def test_unknownName(self):
        from twisted.internet.error import DNSLookupError
        ep = self.endpoint("nowhere.example")
        self.failureResultOf(ep.connect(_OneFactory()), DNSLookupError)

    def test_forbiddenIsBadLocation(self):
        self.assertTrue(issubclass(ForbiddenAddress, BadLocation))


class EndpointFactoryTests(SynchronousTestCase):
    def test_httpsWrapsTLS(self):
        factory = GuardedEndpointFactory(MemoryReactor(), [], FakeResolver({}))
        ep = factory.endpointForURI(URI.fromBytes(b"https://images.example/x"))._endpoint
        self.assertNotIsInstance(ep, GuardedEndpoint)
        self.assertIsInstance(ep._wrappedEndpoint, GuardedEndpoint)

    def test_httpPlain(self):
        factory = GuardedEndpointFactory(MemoryReactor(), [], FakeResolver({}))
        ep = factory.endpointForURI(URI.fromBytes(b"http://u:p@images.example:81/x"))._endpoint
        self.assertIsInstance(ep, GuardedEndpoint)
        self.assertEqual((ep._host, ep._port), ("images.example", 81))

    def test_ipv6Literal(self):
        factory = GuardedEndpointFactory(MemoryReactor(), [], FakeResolver({}))
        ep = factory.endpointForURI(URI.fromBytes(b"http://[::1]:8080/x"))._endpoint
        self.assertEqual(ep._host, "::1")
        self.failureResultOf(ep.connect(_OneFactory()), ForbiddenAddress)


class GuardedClientTests(TestCase):
    """
    The guarded treq client against a real server on loopback.
    """

    def setUp(self):
        self.hits = []
        root = Resource()
        hits = self.hits

        class Counting(Data):
            def render_GET(self, request):
                hits.append(request.uri)
                return Data.render_GET(self, request)

        root.putChild(b"hello", Counting(b"hello", "text/plain"))
        self.port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.portNumber = self.port.getHost().port
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def client(self, allowed="", **kw):
        return guardedHTTPClient(reactor, allowed, pool=self.pool, **kw)

    def test_loopbackRefusedByDefault(self):
        async def go():
            url = "http://127.0.0.1:%d/hello" % (self.portNumber,)
            with self.assertRaises(ForbiddenAddress) as ctx:
                await self.client().get(url)
            self.assertIn("not allowed", str(ctx.exception))
            self.assertEqual(self.hits, [])
        return ensureDeferred(go())

    def test_loopbackAllowed(self):
        async def go():
            url = "http://127.0.0.1:%d/hello" % (self.portNumber,)
            response = await self.client("127.0.0.0/8").get(url)
            self.assertEqual(await response.content(), b"hello")
        return ensureDeferred(go())

    def test_nameResolvingToLoopback(self):
        async def go():
            resolver = FakeResolver({"images.example": ["127.0.0.1"]})
            url = "http://images.example:%d/hello" % (self.portNumber,)
            with self.assertRaises(ForbiddenAddress):
                await self.client(resolver=resolver).get(url)
            response = await self.client("127.0.0.1/32", resolver=resolver).get(url)
            self.assertEqual(await response.content(), b"hello")
        return ensureDeferred(go())

    def test_connectionLandsOnLoopback(self):
        """
        DNS said public, the socket reached 127.0.0.1 (a rebinding, a NAT, a
        lying resolver): the peer re-check refuses it, no request is sent.
        """
        async def go():
            resolver = FakeResolver({"images.example": ["93.184.216.34"]})
            landed = []

            def connectTo(ip, port):
                landed.append(ip)
                return TCP4ClientEndpoint(reactor, "127.0.0.1", self.portNumber)

            url = "http://images.example/hello"
            with self.assertRaises(ForbiddenAddress):
                await self.client(resolver=resolver, connectTo=connectTo).get(url)
            self.assertEqual(landed, ["93.184.216.34"])
            self.assertEqual(self.hits, [])
        return ensureDeferred(go())
