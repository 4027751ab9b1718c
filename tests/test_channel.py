"""
Tests for L{glancetx.web.channel.GlanceChannel}: the response head in one
write, a small answer's head and body in one write, and the connection's
address and security asked of the transport once.
"""

import struct

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET

from glancetx.web.channel import GlanceChannel


class Accept:
    """
    A consumer that takes whatever a body writes.
    """

    def __init__(self):
        self.received = []

    def write(self, data: bytes) -> None:
        self.received.append(data)


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

    def test_closeAmongConnectionTokens(self):
        """
        C{close} anywhere in the Connection fields (a list, in any number
        of fields) ends the connection after the answer, and a request
        pipelined behind it is not served (RFC 9112 9.6).  twisted.web
        read only the first field, split at spaces.
        """
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        class Hello(Resource):
            isLeaf = True

            def render_GET(self, request):
                return b"hi"

        site = Site(Hello())
        for fields in [b"Connection: close,keep-alive\r\n",
                       b"Connection: keep-alive, Close\r\n",
                       b"Connection: keep-alive\r\nConnection: close\r\n"]:
            channel, transport = self.channel()
            channel.site = site
            channel.requestFactory = site.requestFactory
            channel.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n"
                                 b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertEqual(transport.value().count(b"200 OK"), 1, fields)
            self.assertIn(b"Connection: close", transport.value())
            self.assertTrue(transport.disconnecting, fields)
        channel, transport = self.channel()
        channel.site = site
        channel.requestFactory = site.requestFactory
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, te\r\n\r\n"
                             b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(transport.value().count(b"200 OK"), 2)
        self.assertFalse(transport.disconnecting)


class HeadWithBodyTests(SynchronousTestCase):
    """
    A small answer's head and body go to the transport in one write; a
    large first write, and anything that writes no body, still follow or
    send the head on its own, in order.
    """

    def serve(self, render, request=b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"):
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        from glancetx.web.streaming import StreamingRequest

        class Answer(Resource):
            isLeaf = True

            def render_GET(self, request):
                return render(request)

            render_HEAD = render_GET

        site = Site(Answer())
        site.requestFactory = StreamingRequest
        channel = GlanceChannel()
        transport = CountingTransport()
        channel.makeConnection(transport)
        channel.site = site
        channel.requestFactory = site.requestFactory
        channel.dataReceived(request)
        return transport

    def test_smallAnswerInOneWrite(self):
        def render(request):
            request.setHeader(b"content-length", b"5")
            return b"hello"
        transport = self.serve(render)
        self.assertEqual(len(transport.writes), 1)
        self.assertTrue(transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(transport.writes[0].endswith(b"\r\n\r\nhello"))

    def test_smallChunkedAnswerInOneWrite(self):
        def render(request):
            request.write(b"hello")
            request.finish()
            return NOT_DONE_YET
        transport = self.serve(render)
        self.assertTrue(transport.writes[0].endswith(b"\r\n\r\n5\r\nhello\r\n"))
        self.assertEqual(transport.writes[1:], [b"0\r\n\r\n"])

    def test_largeFirstWriteAfterHead(self):
        """
        A first write larger than L{SEND_NOW_MAX} is not copied onto the
        head: the head goes first, then the data as it was.
        """
        from glancetx.web.channel import SEND_NOW_MAX
        data = b"x" * (SEND_NOW_MAX + 1)

        def render(request):
            request.setHeader(b"content-length", b"%d" % (len(data),))
            return data
        transport = self.serve(render)
        self.assertTrue(transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(transport.writes[0].endswith(b"\r\n\r\n"))
        self.assertIs(transport.writes[1], data)

    def test_headAnswer(self):
        def render(request):
            request.setHeader(b"content-length", b"5")
            return b""
        transport = self.serve(render, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(transport.writes), 1)
        self.assertIn(b"\r\nContent-Length: 5\r\n", transport.writes[0])
        self.assertTrue(transport.writes[0].endswith(b"\r\n\r\n"))

    def test_headSentWhenBodyWriteFails(self):
        """
        A head held for a body write that then fails is still sent.
        """
        channel, transport = GlanceChannel(), CountingTransport()
        channel.makeConnection(transport)

        def writeBody():
            channel.writeHeaders(b"HTTP/1.1", b"200", b"OK", Headers())
            raise ValueError("no body after all")
        self.assertRaises(ValueError, channel.headWithBody, writeBody)
        self.assertEqual(transport.writes, [b"HTTP/1.1 200 OK\r\n\r\n"])
        channel.write(b"later")
        self.assertEqual(transport.writes[1:], [b"later"])


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


class MalformedRequestTests(SynchronousTestCase):
    """
    A request twisted.web cannot parse gets a status that says why, a
    plain message and C{Connection: close}; twisted.web's own answer is a
    bare C{400} with no body, or for a line over its limit no answer at all.
    """

    def connect(self):
        from twisted.internet.task import Clock

        from glancetx.config import Config
        from glancetx.service import GlanceSite
        from glancetx.web.app import GlanceAPI

        site = GlanceSite(GlanceAPI(None, Config()), Clock())
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def assertRefused(self, transport, status, message):
        head, _, body = transport.value().partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"HTTP/1.1 " + status)
        self.assertIn(b"Connection: close", lines)
        self.assertIn(b"Content-Type: text/plain; charset=UTF-8", lines)
        self.assertIn(b"Content-Length: %d" % (len(body),), lines)
        self.assertEqual(body, message)
        self.assertTrue(transport.disconnecting)

    def test_headerLineTooLong(self):
        channel, transport = self.connect()
        channel.dataReceived(b"GET /v1/images HTTP/1.1\r\nHost: h\r\n"
                             b"x-image-meta-name: " + b"a" * 17000 + b"\r\n\r\n")
        self.assertRefused(transport, b"431 Request Header Fields Too Large",
                           b"A request header line is longer than 16384 bytes.\n")

    def test_headersTooLarge(self):
        channel, transport = self.connect()
        channel.dataReceived(b"GET /v1/images HTTP/1.1\r\nHost: h\r\n"
                             + b"".join(b"x-image-meta-property-p%d: %s\r\n" % (i, b"v" * 1000)
                                        for i in range(70)) + b"\r\n")
        self.assertRefused(transport, b"431 Request Header Fields Too Large",
                           b"The request headers are larger than 65536 bytes in all.\n")

    def test_headersAsLargeAsGlanceTook(self):
        """
        The property quota's 128 properties of 150 characters each, and
        python-glanceclient's 40 of 500: within the 64 KiB Glance's server
        took, where twisted.web's 16 KiB refused them.
        """
        for count, size in ((128, 150), (40, 500)):
            channel, transport = self.connect()
            channel.dataReceived(b"GET /nowhere HTTP/1.1\r\nHost: h\r\n"
                                 + b"".join(b"x-image-meta-property-p%d: %s\r\n"
                                            % (i, b"v" * size) for i in range(count))
                                 + b"\r\n")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 300 "))

    def test_contentLengthOfManyDigits(self):
        """
        A Content-Length of thousands of digits: int() refuses more than
        4,300 with a ValueError twisted.web did not catch, so the client
        got no answer at all.  Leading zeros are no length.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"PUT /v1/images/x HTTP/1.1\r\nHost: h\r\n"
                             b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n")
        self.assertRefused(transport, b"400 Bad Request", b"Malformed HTTP request.\n")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_tooManyHeaders(self):
        channel, transport = self.connect()
        channel.dataReceived(b"GET /v1/images HTTP/1.1\r\nHost: h\r\n"
                             + b"".join(b"p%d: v\r\n" % (i,) for i in range(600)) + b"\r\n")
        self.assertRefused(transport, b"431 Request Header Fields Too Large",
                           b"The request has more than %d headers.\n" % (channel.maxHeaders,))

    def test_requestLineTooLong(self):
        channel, transport = self.connect()
        channel.dataReceived(b"GET /v1/images?name=" + b"a" * 17000 + b" HTTP/1.1\r\n")
        self.assertRefused(transport, b"414 URI Too Long",
                           b"The request line is longer than 16384 bytes.\n")

    def test_requestLineTooLongAfterARequest(self):
        """
        The request line of the next request on a kept-alive connection is
        told apart from a header line too.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 300 "))
        transport.clear()
        channel.dataReceived(b"GET /v1/images?name=" + b"a" * 17000 + b" HTTP/1.1\r\n")
        self.assertRefused(transport, b"414 URI Too Long",
                           b"The request line is longer than 16384 bytes.\n")

    def test_malformedHeader(self):
        channel, transport = self.connect()
        channel.dataReceived(b"GET /v1/images HTTP/1.1\r\nHost: h\r\nno colon here\r\n\r\n")
        self.assertRefused(transport, b"400 Bad Request", b"Malformed HTTP request.\n")

    def test_malformedRequestLine(self):
        channel, transport = self.connect()
        channel.dataReceived(b"GET\r\n")
        self.assertRefused(transport, b"400 Bad Request", b"Malformed HTTP request.\n")

    def test_pipelinedAnswersWaitForTheClient(self):
        """
        Requests pipelined in one read are not answered while the client
        reads no answers (the transport asked to pause), so the answers do
        not pile up in memory; they are, in order, once it reads again.
        """
        from twisted.internet.defer import Deferred
        from twisted.internet.task import Clock

        from glancetx.config import Config
        from glancetx.service import GlanceSite
        from glancetx.web.app import GlanceAPI

        pending = []

        class SlowLists:
            def list(self, ctx, query):
                pending.append(Deferred())
                return pending[-1]

        channel = GlanceSite(GlanceAPI(SlowLists(), Config()), Clock()).buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"".join(b"GET /v1/images?name=%d HTTP/1.1\r\nHost: h\r\n\r\n"
                                      % (i,) for i in range(4)))
        self.assertEqual(len(pending), 1)
        channel.pauseProducing()
        pending[0].callback([])
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 1)
        self.assertEqual((len(pending), transport.producerState), (1, "paused"))
        channel.resumeProducing()
        for n in range(1, 4):
            self.assertEqual(len(pending), n + 1)
            pending[n].callback([])
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 4)
        self.assertEqual(transport.producerState, "producing")

    def test_clientThatReadsNothingIsClosed(self):
        """
        A client that stops reading an answer (the transport asks to pause)
        has its connection closed after client_socket_timeout seconds,
        unless it reads again before.
        """
        from twisted.internet.task import Clock

        from glancetx.config import Config
        from glancetx.service import GlanceSite
        from glancetx.web.app import GlanceAPI

        clock = Clock()
        site = GlanceSite(GlanceAPI(None, Config(client_socket_timeout=30)), clock)
        for readsAgain in (True, False):
            channel = site.buildProtocol(None)
            transport = StringTransport()
            channel.makeConnection(transport)
            channel.pauseProducing()
            clock.advance(29)
            if readsAgain:
                channel.resumeProducing()
            clock.advance(2)
            self.assertEqual(transport.disconnecting, not readsAgain)
            self.assertIsNone(channel._stallTimer)

    def assertSlowReaderKept(self, reads):
        """
        A client that C{reads(transport)} a little every 31 s keeps a
        paused download's connection (client_socket_timeout 30) for as
        long as it reads, and loses it 30 s after it stops.
        """
        from twisted.internet.task import Clock

        from glancetx.config import Config
        from glancetx.service import GlanceSite
        from glancetx.web.app import GlanceAPI

        class AckingSocket:
            # What Linux's TCP_INFO says the client acknowledged.
            acked = 1

            def getsockopt(self, level, option, size):
                return bytes(120) + struct.pack("Q", self.acked) + bytes(size - 128)

        class BufferingTransport(StringTransport):
            # What Twisted's TCP transport keeps of what it has to send.
            def __init__(self):
                super().__init__()
                self.dataBuffer = b""
                self.offset = 0
                self._tempDataBuffer = [b"x" * 1048576]
                self._tempDataLen = 1048576
                self.socket = AckingSocket()

        clock = Clock()
        site = GlanceSite(GlanceAPI(None, Config(client_socket_timeout=30)), clock)
        channel = site.buildProtocol(None)
        transport = BufferingTransport()
        channel.makeConnection(transport)
        # As while an answer is written: twisted.web's idle timeout is off.
        channel.setTimeout(None)
        channel.pauseProducing()
        for _ in range(5):
            clock.advance(29)
            reads(transport)
            clock.advance(2)
            self.assertFalse(transport.disconnecting)
        # Then it stops reading.
        clock.advance(31)
        self.assertTrue(transport.disconnecting)

    def test_clientThatReadsSlowlyIsNotClosed(self):
        """
        A client that reads, however slowly, is not taken for one that
        reads nothing: the transport resumes its producer only once its
        buffer is empty, but any bytes it sent on since the pause keep
        the connection, for another client_socket_timeout seconds.
        """
        def takesFromTwistedsBuffer(transport):
            transport._tempDataLen -= 30000
        self.assertSlowReaderKept(takesFromTwistedsBuffer)

    def test_clientWhoseKernelAcknowledgesIsNotClosed(self):
        """
        A client that reads while Twisted's buffer does not shrink (the
        kernel's send buffer, up to 4 MiB, takes from it only once a third
        of it is free; under TLS the pause comes part way through a write,
        whose rest fills the buffer past the mark) is still reading: what
        its kernel acknowledges grows, and that keeps the connection.
        Readers at 10-100 KB/s of S3, Swift and TLS downloads were cut off.
        """
        def acknowledges(transport):
            transport.socket.acked += 30000
        self.assertSlowReaderKept(acknowledges)

    def test_ackedBytesOfARealConnection(self):
        """
        L{ackedBytes} reads how much the peer acknowledged from the kernel
        (Linux's TCP_INFO), under TLS from the TCP transport beneath.
        """
        import socket
        import time

        from glancetx.web.channel import ackedBytes
        if not hasattr(socket, "TCP_INFO"):
            raise SkipTest("no TCP_INFO here")
        server = socket.socket()
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        client = socket.create_connection(server.getsockname())
        self.addCleanup(client.close)
        accepted, _ = server.accept()
        self.addCleanup(accepted.close)

        class TCP:
            # The attribute by which tcpTransport knows Twisted's TCP.
            def __init__(self, sock):
                self._tempDataBuffer = []
                self.socket = sock

        class TLS:
            def __init__(self, transport):
                self.transport = transport

        before = ackedBytes(TLS(TCP(accepted)))
        accepted.sendall(b"x" * 100000)
        got = 0
        while got < 100000:
            got += len(client.recv(65536))
        for _ in range(100):
            after = ackedBytes(TCP(accepted))
            if after - before == 100000:
                break
            time.sleep(0.01)
        self.assertEqual(after - before, 100000)
        self.assertIsNone(ackedBytes(StringTransport()))

    def test_slowHeadIsCutOff(self):
        """
        A request head sent a byte every few seconds is cut off one idle
        timeout (60 seconds) after its first byte, with a 408 that says
        why, though no single pause was that long; a head that takes less
        is answered, and the next request gets a full timeout of its own.
        """
        from twisted.internet.task import Clock

        from glancetx.config import Config
        from glancetx.service import GlanceSite
        from glancetx.web.app import GlanceAPI

        clock = Clock()
        site = GlanceSite(GlanceAPI(None, Config()), clock)
        head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: " + b"a" * 40 + b"\r\n\r\n"

        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        clock.advance(50)  # idle before the first byte: not counted
        for n, byte in enumerate(head[:-1]):
            channel.dataReceived(bytes([byte]))
            clock.advance(1)
            if n < 59:
                self.assertFalse(transport.disconnecting, n)
        self.assertRefused(transport, b"408 Request Timeout",
                           b"The request head did not arrive within 60 seconds.\n")

        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        for round in range(2):
            for byte in head:  # 77 bytes in 38.5 seconds
                channel.dataReceived(bytes([byte]))
                clock.advance(0.5)
            self.assertEqual(transport.value().count(b"HTTP/1.1 300 "), round + 1)
            self.assertFalse(transport.disconnecting)
        self.assertEqual(len(clock.getDelayedCalls()), 1)  # the idle timeout only
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_identityCodingRefused(self):
        """
        "Transfer-Encoding: identity" frames no body: the bytes after the
        head are not read as the next request (a DELETE, here).
        """
        for framing in (b"", b"Content-Length: 5\r\n"):
            channel, transport = self.connect()
            channel.dataReceived(
                b"POST /v1/images HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n"
                + framing + b"\r\nDELETE /v1/images/x HTTP/1.1\r\nHost: h\r\n\r\n")
            self.assertRefused(transport, b"400 Bad Request", b"Malformed HTTP request.\n")

    def test_hostThatIsNotUTF8(self):
        from twisted.logger import globalLogPublisher
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        # Not UTF-8; control characters; names werkzeug cannot IDNA-encode
        # (it raised, a 500); not ASCII (echoed garbled in Location); not
        # a name at all.
        for host in (b"\xff", b"a\x01b", b"a..b", b".a", b"a" * 70 + b".com",
                     b"a" * 70 + b":80", b"a\xc2\x85b", b"caf\xc3\xa9", b"a b", b"a\"<b"):
            channel, transport = self.connect()
            channel.dataReceived(b"GET /v1/images HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "),
                            (host, transport.value()))
            self.assertTrue(transport.value().endswith(
                b"The Host header is not a host name (and port).\n"))
        for host in (b"h", b"glance.example.com:9292", b"10.0.0.1:80", b"[::1]:9292",
                     b"example.com.", b"my_host-1"):
            channel, transport = self.connect()
            channel.dataReceived(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 300 "), host)
        self.assertEqual([e for e in logged if "log_failure" in e], [])

    def test_absoluteFormTarget(self):
        """
        A request target in absolute form (RFC 9112 3.2.2: a server must
        take it) names the path in it; it was taken whole for the path,
        and an upload sent so got the version document.
        """
        for target, status in [(b"http://a:9292/versions", b"200"),
                               (b"HTTPS://a/versions?x=1", b"200"),
                               (b"http://a", b"300"),
                               (b"http://a?x", b"300")]:
            channel, transport = self.connect()
            channel.dataReceived(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertEqual(transport.value()[8:13], b" %s " % (status,),
                             (target, transport.value()))
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://a/versions HTTP/1.1\r\nHost: a\r\n\r\n"
                             b"GET /versions HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2)

    def test_absoluteFormTargetNamesTheHost(self):
        """
        The authority of a target in absolute form is the request's host,
        and the Host header is ignored (RFC 9112 3.2.2): the answer's links
        name it, as they name the Host of a request in origin form.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://user@glance.example:9292/versions HTTP/1.1\r\n"
                             b"Host: other\r\nHost: another\r\n\r\n"
                             b"GET /versions HTTP/1.1\r\nHost: plain.example\r\n\r\n")
        first, second = transport.value().split(b"HTTP/1.1 200 OK")[1:]
        self.assertIn(b"http://glance.example:9292/v1/", first)
        self.assertNotIn(b"other", first)
        self.assertNotIn(b"user", first)
        self.assertIn(b"http://plain.example/v1/", second)
        self.assertNotIn(b"glance.example", second)

    def test_oneHostPerRequest(self):
        """
        An HTTP/1.1 request with no Host, or with two Host fields, is a 400
        (RFC 9112 3.2): the answer's links were built from whichever came
        last.  HTTP/1.0 needs none.
        """
        for head in (b"GET / HTTP/1.1\r\n",
                     b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n",
                     b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n",
                     b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n"):
            channel, transport = self.connect()
            channel.dataReceived(head + b"\r\n")
            self.assertEqual(transport.value()[8:13], b" 400 ", (head, transport.value()))
            self.assertTrue(transport.value().endswith(
                b"A request must carry one Host header (RFC 9112 3.2).\n"))
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.0 300 "), transport.value())

    def test_methodsAreCaseSensitive(self):
        """
        "post" is not POST: refused, rather than run as a POST that read
        its body as no upload and dropped it.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"post /v1/images HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                             b"x-image-meta-name: x\r\n\r\nhello")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), transport.value())
        self.assertIn(b"methods are case-sensitive", transport.value())

    def test_oneAnswerWhenRefusedBeforeDispatch(self):
        """
        A body that breaks in the same read as its headers is refused
        before the upload it belongs to is dispatched: the handler's own
        answer, when it comes, is not sent after the refusal.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"POST /v1/images HTTP/1.1\r\nHost: h\r\n"
                             b"x-image-meta-min_disk: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"3\r\nabc\r\nzz\r\n")
        channel.site.reactor.advance(0)
        self.assertRefused(transport, b"400 Bad Request",
                           b"The chunked request body is malformed: Chunk-size must be an"
                           b" integer.\n")

    def test_malformedChunkedUploadSaysWhy(self):
        """
        An upload whose chunked framing breaks part way is refused with
        what was wrong, and its body fails for that reason (which is what
        the failed image's notification and log say), not as if the
        client had gone away.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"PUT /v1/images/abc HTTP/1.1\r\nHost: h\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        body = channel.requests[0].body
        failures = []
        body.startProducing(Accept()).addErrback(failures.append)
        channel.dataReceived(b"3\r\nabcX\r\n")
        self.assertRefused(transport, b"400 Bad Request",
                           b"The chunked request body is malformed: Chunk did not end"
                           b" with CRLF.\n")
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0].value.message,
                         "the chunked request body is malformed: Chunk did not end with CRLF")

    def test_noRefusalAfterAnAnswer(self):
        """
        A body that breaks after the handler has answered (while the
        channel drains it) closes the connection with no second answer.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"POST /v1/images HTTP/1.1\r\nHost: h\r\n"
                             b"x-image-meta-min_disk: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"3\r\nabc\r\n")
        channel.site.reactor.advance(0)
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        self.assertIn(b"min_disk", answer)
        channel.dataReceived(b"zz\r\n")
        self.assertEqual(transport.value(), answer)
        self.assertTrue(transport.disconnecting)


class AccessLogTests(SynchronousTestCase):
    """
    The access log, written to a file of its own.
    """

    def test_unwritableLogLosesNoAnswer(self):
        """
        A log file that cannot be written (a full disk): each request is
        still answered and cleaned up, a C{Connection: close} connection
        closes, and the failure is said once a minute, not per request.
        """
        from twisted.internet.task import Clock
        from twisted.logger import globalLogPublisher

        from glancetx.config import Config
        from glancetx.service import GlanceSite
        from glancetx.web.app import GlanceAPI

        class Full:
            def write(self, line):
                raise OSError(28, "No space left on device")

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = Clock()
        site = GlanceSite(GlanceAPI(None, Config()), clock, "/nowhere/access.log")
        site._logFile = Full()
        for n in range(3):
            channel = site.buildProtocol(None)
            transport = StringTransport()
            channel.makeConnection(transport)
            channel.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 300 "))
            self.assertTrue(transport.disconnecting, n)
            clock.advance(30)
        said = [e for e in events if "access log" in e.get("log_format", "")]
        self.assertEqual(len(said), 2)
        self.assertEqual(said[0]["error"], "No space left on device")
        self.assertEqual(self.flushLoggedErrors(), [])


class LostConnectionTests(SynchronousTestCase):
    """
    A connection lost with bytes still queued lets go of them at once,
    not when its transport is collected.
    """

    def wrap(self, transport, channel):
        return transport

    def test_writeBuffersDropped(self):
        import socket

        from twisted.internet import tcp
        from twisted.internet.error import ConnectionLost
        from twisted.internet.testing import MemoryReactor

        from glancetx.web.sendfile import transportIsIdle

        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        ours.setblocking(False)
        channel = GlanceChannel()
        transport = tcp.Connection(ours, channel, reactor=MemoryReactor())
        transport.connected = True
        channel.transport = self.wrap(transport, channel)
        # The peer reads nothing: the kernel takes some, the rest waits in
        # the transport's two buffers.
        transport.write(b"x" * (4 * 1024 * 1024))
        transport.doWrite()
        transport.write(b"y" * (1024 * 1024))
        self.assertGreater(len(transport.dataBuffer) - transport.offset, 0)
        self.assertEqual(transport._tempDataLen, 1024 * 1024)
        transport.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(transport.dataBuffer, b"")
        self.assertEqual(transport._tempDataBuffer, [])
        self.assertTrue(transportIsIdle(transport))


class LostTLSConnectionTests(LostConnectionTests):
    """
    The same under TLS, whose protocol is the channel's transport and
    sends through the TCP transport beneath it.
    """

    def wrap(self, transport, channel):
        from twisted.protocols.tls import TLSMemoryBIOProtocol
        tls = TLSMemoryBIOProtocol(None, channel)
        tls.transport = transport
        return tls
