"""
Tests for L{glancetx.web.channel.GlanceChannel}: the response head in one
write, and the connection's address and security asked of the transport
once.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from glancetx.web.channel import GlanceChannel


class CountingTransport(StringTransport):
    def __init__(self):
        super().__init__(hostAddress=IPv4Address("TCP", "127.0.0.1", 9292))
        self.writes = []
        self.hostAsked = 0

    def write(self, data):
        self.writes.append(data)
        super().write(data)

    def writeSequence(self, seq):
        for data in seq:
            self.write(data)

    def getHost(self):
        self.hostAsked += 1
        return super().getHost()


class GlanceChannelTests(SynchronousTestCase):
    def channel(self):
        channel = GlanceChannel()
        transport = CountingTransport()
        channel.makeConnection(transport)
        return channel, transport

    def test_headInOneWrite(self):
        channel, transport = self.channel()
        headers = Headers()
        headers.setRawHeaders(b"x-image-meta-name", [b"cirros"])
        headers.setRawHeaders(b"content-length", [b"0"])
        channel.writeHeaders(b"HTTP/1.1", b"200", b"OK", headers)
        self.assertEqual(transport.writes, [
            b"HTTP/1.1 200 OK\r\nX-Image-Meta-Name: cirros\r\nContent-Length: 0\r\n\r\n"])

    def test_pairsStillSanitised(self):
        """
        Headers given as pairs (not a L{Headers}) take twisted.web's path,
        which folds line breaks out of values.
        """
        channel, transport = self.channel()
        channel.writeHeaders(b"HTTP/1.1", b"200", b"OK", [(b"x-a", b"one\r\nx-b: two")])
        head = transport.value()
        self.assertNotIn(b"\r\nx-b:", head.lower().replace(b"x-a: one", b""))
        self.assertTrue(head.endswith(b"\r\n\r\n"))

    def test_hostAskedOnce(self):
        channel, transport = self.channel()
        for _ in range(3):
            self.assertEqual(channel.getHost(), IPv4Address("TCP", "127.0.0.1", 9292))
        self.assertEqual(transport.hostAsked, 1)

    def test_plainTCPIsNotSecure(self):
        channel, _ = self.channel()
        self.assertIs(channel.isSecure(), False)
        self.assertIs(channel.isSecure(), False)

    def test_requestsOnOneConnection(self):
        """
        Two requests on one connection both answer, with the host asked of
        the transport once.
        """
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        class Hello(Resource):
            isLeaf = True

            def render_GET(self, request):
                return b"%d" % (request.getHost().port,)

        site = Site(Hello())
        channel, transport = self.channel()
        channel.site = site
        channel.requestFactory = site.requestFactory
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(transport.value().count(b"200 OK"), 2)
        self.assertEqual(transport.value().count(b"\r\n\r\n9292"), 2)
        self.assertEqual(transport.hostAsked, 1)


class SendNowTests(SynchronousTestCase):
    """
    Small writes go straight to an idle TCP socket, and never ahead of
    anything already queued.
    """

    def connected(self):
        import socket

        from twisted.internet import tcp
        from twisted.internet.testing import MemoryReactor

        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        theirs.setblocking(False)
        reactor = MemoryReactor()
        transport = tcp.Connection(ours, None, reactor=reactor)
        transport.connected = True
        channel = GlanceChannel()
        channel.transport = transport
        return channel, transport, reactor, theirs

    def test_idleSocketAtOnce(self):
        channel, transport, reactor, peer = self.connected()
        channel.write(b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertEqual(peer.recv(100), b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertFalse(reactor.writers)  # no epoll registration

    def test_neverOvertakesQueued(self):
        channel, transport, reactor, peer = self.connected()
        transport.write(b"first ")
        channel.write(b"second")
        self.assertRaises(BlockingIOError, peer.recv, 100)
        self.assertIn(transport, reactor.writers)
        transport.doWrite()
        self.assertEqual(peer.recv(100), b"first second")

    def test_largeWritesQueued(self):
        channel, transport, reactor, peer = self.connected()
        channel.writeSequence([b"x" * 40000, b"y" * 40000])
        self.assertIn(transport, reactor.writers)
