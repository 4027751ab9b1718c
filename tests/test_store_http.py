"""
The read-only http store, against a real twisted.web server on loopback
reached through the guarded client, plus unit tests of the body producer
with a StringTransport.
"""

import datetime
import gzip
import hashlib
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import BrowserLikePolicyForHTTPS, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web import util
from twisted.web.static import Data
from zope.interface.verify import verifyObject

from glancetx.netguard import ForbiddenAddress, guardedHTTPClient
from glancetx.store.http import HTTPStore, _ResponseBody
from glancetx.store.interface import (
    BadLocation,
    IStore,
    LocationNotFound,
    StoreError,
    StoreUnavailable,
    redact,
)
from tests.bodies import CollectingConsumer, readAll
from tests.test_netguard import FakeResolver

IMAGE = os.urandom(300 * 1024 + 7)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class Chunked(Resource):
    """
    The image without a Content-Length (chunked), a HEAD without length, and
    a ranged GET that answers 206 with Content-Range.
    """

    isLeaf = True

    def __init__(self, data, honourRange=True):
        super().__init__()
        self.data = data
        self.honourRange = honourRange

    def render_HEAD(self, request):
        return b""

    def render_GET(self, request):
        if self.honourRange and request.getHeader(b"range") == b"bytes=0-0":
            request.setResponseCode(206)
            request.setHeader(b"content-range", b"bytes 0-0/%d" % (len(self.data),))
            request.setHeader(b"content-length", b"1")
            return self.data[:1]
        for i in range(0, len(self.data), 65536):
            request.write(self.data[i:i + 65536])
        request.finish()
        return NOT_DONE_YET


class Liar(Resource):
    """
    Promises more bytes than it sends, then closes the connection.
    """

    isLeaf = True

    def __init__(self, data, extra=1000):
        super().__init__()
        self.data = data
        self.extra = extra

    def render_HEAD(self, request):
        request.setHeader(b"content-length", b"%d" % (len(self.data) + self.extra,))
        return b""

    def render_GET(self, request):
        request.setHeader(b"content-length", b"%d" % (len(self.data) + self.extra,))
        request.write(self.data)
        request.loseConnection()
        return NOT_DONE_YET


class Stall(Resource):
    """
    Sends part of the body, then nothing more.
    """

    isLeaf = True

    def __init__(self, data):
        super().__init__()
        self.data = data
        self.requests = []

    def render_GET(self, request):
        self.requests.append(request)
        request.setHeader(b"content-length", b"%d" % (len(self.data),))
        request.write(self.data[: len(self.data) // 2])
        return NOT_DONE_YET


class Redirect(Resource):
    """
    /redirect/N answers 302 to /redirect/N-1, and /redirect/1 to /image:
    N redirects in all.
    """

    isLeaf = True

    def __init__(self, auths):
        super().__init__()
        self.auths = auths

    def render_GET(self, request):
        self.auths.append(request.getHeader(b"authorization"))
        n = int(request.postpath[0]) - 1
        if n == 0:
            request.redirect(b"/image")
        else:
            request.redirect(b"/redirect/%d" % (n,))
        return b""

    render_HEAD = render_GET


class Status(Resource):
    isLeaf = True

    def __init__(self, code):
        super().__init__()
        self.code = code

    def render_GET(self, request):
        request.setResponseCode(self.code)
        return b"no such thing" * 100

    render_HEAD = render_GET


class Gzipped(Resource):
    isLeaf = True

    def render_GET(self, request):
        body = gzip.compress(IMAGE)
        request.setHeader(b"content-encoding", b"gzip")
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return body


class AuthCheck(Data):
    def __init__(self, data, seen):
        super().__init__(data, "application/octet-stream")
        self.seen = seen

    def render_GET(self, request):
        self.seen.append((request.getUser(), request.getPassword()))
        return Data.render_GET(self, request)


def makeRoot(test):
    root = Resource()
    test.auths = []
    test.seenAuth = []
    root.putChild(b"image", Data(IMAGE, "application/octet-stream"))
    root.putChild(b"empty", Data(b"", "application/octet-stream"))
    root.putChild(b"chunked", Chunked(IMAGE))
    root.putChild(b"nosize", Chunked(IMAGE, honourRange=False))
    root.putChild(b"liar", Liar(IMAGE))
    test.stall = Stall(IMAGE)
    root.putChild(b"stall", test.stall)
    root.putChild(b"redirect", Redirect(test.auths))
    root.putChild(b"gone", Status(410))
    root.putChild(b"broken", Status(500))
    root.putChild(b"gzip", Gzipped())
    root.putChild(b"private", AuthCheck(IMAGE, test.seenAuth))
    return root


class HTTPStoreTests(TestCase):
    def setUp(self):
        self.root = makeRoot(self)
        self.port = reactor.listenTCP(0, Site(self.root), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.base = "http://127.0.0.1:%d" % (self.port.getHost().port,)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.store = self.makeStore("127.0.0.0/8")

    def makeStore(self, allowed, clock=reactor, timeout=60.0, **kw):
        client = guardedHTTPClient(reactor, allowed, pool=self.pool, **kw)
        return HTTPStore(client, clock, timeout)

    def test_endlessHeadersCut(self):
        """
        An origin that sends header lines without end has its connection
        closed once they pass 256 KiB, and the location fails at once: the
        client's parser limits each line, not their number, and kept them
        all (128 MB of headers grew the server by 220 MB) until the
        store's wait for an answer ran out.
        """
        from twisted.internet.protocol import Factory, Protocol
        closed = Deferred()

        class Endless(Protocol):
            def dataReceived(self, data):
                if not self.transport.disconnecting:
                    self.transport.write(b"HTTP/1.1 200 OK\r\n" + b"".join(
                        b"X-%d: %s\r\n" % (n, b"h" * 1000) for n in range(2048)))

            def connectionLost(self, reason):
                closed.callback(None)

        port = reactor.listenTCP(0, Factory.forProtocol(Endless), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        store = self.makeStore("127.0.0.0/8", timeout=20.0)

        async def go():
            began = reactor.seconds()
            url = "http://127.0.0.1:%d/x" % (port.getHost().port,)
            with self.assertRaises(StoreError) as caught:
                await store.get_size(url)
            self.assertEqual(str(caught.exception), "%s: the origin sent more than 256 KiB"
                             " of response headers" % (url,))
            self.assertLess(reactor.seconds() - began, 10)
            await closed
        return ensureDeferred(go())

    def test_provides(self):
        verifyObject(IStore, self.store)
        self.assertEqual(self.store.name, "http")
        self.assertEqual(self.store.schemes, ("http", "https"))
        self.assertFalse(self.store.writable)

    def test_addRefused(self):
        f = self.failureResultOf(self.store.add("abc", None), StoreError)
        self.assertEqual(str(f.value), "the http store is read-only")

    def test_deleteIsNoop(self):
        self.assertIsNone(self.successResultOf(self.store.delete(self.base + "/image")))

    def test_notHTTP(self):
        self.failureResultOf(self.store.get("file:///etc/passwd"), BadLocation)
        self.failureResultOf(self.store.get_size("http:///nohost"), BadLocation)

    def test_hostNameIDNACannotEncode(self):
        """
        A host name that has no ASCII form (a label over 63 characters, an
        empty label, a NUL) is not a location, not an unexpected error.
        """
        for host in ("a" * 70 + ".com", "\u00e9\u00e9..com", "a\x00b.com", "a%00b.com"):
            self.failureResultOf(self.store.get_size("http://%s/x" % (host,)), BadLocation)

    def test_ipv6Literal(self):
        """
        An IPv6 address as the host is a location like any other: an
        operator on an IPv6-only network registers one.  hyperlink puts
        every host through IDNA on its way to the wire, which refuses an
        IPv6 address; that was answered with a 400 saying IPv6 was not
        supported.
        """
        port = reactor.listenTCP(0, Site(makeRoot(self)), interface="::1")
        self.addCleanup(port.stopListening)
        store = self.makeStore("::1/128")
        return ensureDeferred(self.roundTrip(
            "/image", store, base="http://[::1]:%d" % (port.getHost().port,)))

    def test_ipv6Redirect(self):
        """
        A redirect to an IPv6 address is followed like any other.
        """
        port = reactor.listenTCP(0, Site(makeRoot(self)), interface="::1")
        self.addCleanup(port.stopListening)
        store = self.makeStore("::1/128, 127.0.0.0/8")
        self.root.putChild(b"tov6", util.Redirect(b"http://[::1]:%d/image" % (port.getHost().port,)))
        return ensureDeferred(self.roundTrip("/tov6", store))

    def test_ipv6NotAnAddress(self):
        """
        Brackets that hold no IPv6 address (one with a zone, a letter that
        is not hex, no closing bracket) are not a location.
        """
        for url in ("http://[fe80::1%25eth0]/x", "http://[::g]/x", "http://[::1/x"):
            f = self.failureResultOf(self.store.get_size(url), BadLocation)
            self.assertEqual(str(f.value), "not an http location")

    async def roundTrip(self, path, store=None, base=None):
        store = store or self.store
        url = (base or self.base) + path
        size = await store.get_size(url)
        self.assertEqual(size, len(IMAGE))
        producer = await store.get(url)
        self.assertEqual(producer.length, len(IMAGE))
        got = await readAll(reactor, producer)
        self.assertEqual(md5(got), md5(IMAGE))

    def test_roundTrip(self):
        return ensureDeferred(self.roundTrip("/image"))

    def test_empty(self):
        async def go():
            self.assertEqual(await self.store.get_size(self.base + "/empty"), 0)
            producer = await self.store.get(self.base + "/empty")
            self.assertEqual(producer.length, 0)
            self.assertEqual(await readAll(reactor, producer), b"")
        return ensureDeferred(go())

    def test_chunkedWithRangedSize(self):
        """
        No Content-Length anywhere: the size comes from a ranged GET's
        Content-Range, and the chunked body is checked against it.
        """
        return ensureDeferred(self.roundTrip("/chunked"))

    def test_noSizeAnywhere(self):
        async def go():
            with self.assertRaises(StoreError):
                await self.store.get_size(self.base + "/nosize")
            with self.assertRaises(StoreError):
                await self.store.get(self.base + "/nosize")
        return ensureDeferred(go())

    def test_shortBodyFails(self):
        async def go():
            url = self.base + "/liar"
            self.assertEqual(await self.store.get_size(url), len(IMAGE) + 1000)
            producer = await self.store.get(url)
            self.assertEqual(producer.length, len(IMAGE) + 1000)
            with self.assertRaises(StoreError) as ctx:
                await readAll(reactor, producer)
            self.assertIn("sent %d of %d bytes" % (len(IMAGE), len(IMAGE) + 1000),
                          str(ctx.exception))
        return ensureDeferred(go())

    def test_redirectsFollowed(self):
        async def go():
            await self.roundTrip("/redirect/5")
            # HEAD and GET each followed all five.
            self.assertEqual(len(self.auths), 10)
        return ensureDeferred(go())

    def test_tooManyRedirects(self):
        async def go():
            with self.assertRaises(StoreUnavailable) as ctx:
                await self.store.get(self.base + "/redirect/6")
            self.assertIn("more than 5 redirects", str(ctx.exception))
            self.assertEqual(len(self.auths), 6)
        return ensureDeferred(go())

    def test_redirectGoesThroughTheGuard(self):
        """
        Only 127.0.0.1 is allowed; the origin redirects to 127.0.0.2.
        """
        async def go():
            store = self.makeStore("127.0.0.1/32")
            root = Resource()

            class Away(Resource):
                isLeaf = True

                def render_GET(inner, request):
                    request.redirect(
                        b"http://127.0.0.2:%d/image" % (self.port.getHost().port,)
                    )
                    return b""

            root.putChild(b"away", Away())
            port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            url = "http://127.0.0.1:%d/away" % (port.getHost().port,)
            with self.assertRaises(ForbiddenAddress):
                await store.get(url)
        return ensureDeferred(go())

    def test_notFound(self):
        async def go():
            for path in ["/missing", "/gone"]:
                with self.assertRaises(LocationNotFound):
                    await self.store.get(self.base + path)
                with self.assertRaises(LocationNotFound):
                    await self.store.get_size(self.base + path)
        return ensureDeferred(go())

    def test_serverError(self):
        async def go():
            with self.assertRaises(StoreUnavailable) as ctx:
                await self.store.get("http://user:secret@127.0.0.1:%d/broken"
                                     % (self.port.getHost().port,))
            self.assertIn("answered 500", str(ctx.exception))
            self.assertNotIn("secret", str(ctx.exception))
            self.assertNotIn("user", str(ctx.exception))
        return ensureDeferred(go())

    def test_connectionRefused(self):
        async def go():
            port = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
            number = port.getHost().port
            await port.stopListening()
            with self.assertRaises(StoreUnavailable) as ctx:
                await self.store.get("http://u:secret@127.0.0.1:%d/x" % (number,))
            self.assertNotIn("secret", str(ctx.exception))
        return ensureDeferred(go())

    def test_loopbackRefusedByDefault(self):
        async def go():
            store = self.makeStore("")
            with self.assertRaises(ForbiddenAddress) as ctx:
                await store.get(self.base + "/image")
            self.assertIn("not allowed", str(ctx.exception))
            with self.assertRaises(BadLocation):
                await store.get_size(self.base + "/image")
        return ensureDeferred(go())

    def test_lyingResolverRefused(self):
        """
        The check sees a public address, the socket lands on loopback.
        """
        async def go():
            resolver = FakeResolver({"images.example": ["93.184.216.34"]})
            store = self.makeStore(
                "", resolver=resolver,
                connectTo=lambda ip, port: TCP4ClientEndpoint(
                    reactor, "127.0.0.1", self.port.getHost().port),
            )
            with self.assertRaises(ForbiddenAddress):
                await store.get("http://images.example/image")
        return ensureDeferred(go())

    def test_credentialsSentToTheirOrigin(self):
        async def go():
            url = "http://us%40er:p%3Ass@127.0.0.1:" + str(self.port.getHost().port) + "/private"
            producer = await self.store.get(url)
            got = await readAll(reactor, producer)
            self.assertEqual(md5(got), md5(IMAGE))
            self.assertEqual(self.seenAuth, [(b"us@er", b"p:ss")])
        return ensureDeferred(go())

    def test_credentialsStayWithTheirOrigin(self):
        """
        Same-origin redirects keep the credentials; a redirect to another
        origin (here: another port) does not get them.
        """
        async def go():
            await self.store.get_size(
                "http://u:pw@127.0.0.1:" + str(self.port.getHost().port) + "/redirect/2")
            self.assertEqual(len(self.auths), 2)
            self.assertTrue(all(a and a.startswith(b"Basic ") for a in self.auths))
            root = Resource()

            class Away(Resource):
                isLeaf = True

                def render_GET(inner, request):
                    request.redirect(self.base.encode("ascii") + b"/private")
                    return b""

            root.putChild(b"away", Away())
            port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            producer = await self.store.get(
                "http://u:pw@127.0.0.1:" + str(port.getHost().port) + "/away")
            await readAll(reactor, producer)
            self.assertEqual(self.seenAuth, [(b"", b"")])
        return ensureDeferred(go())

    def test_contentCodingRefused(self):
        async def go():
            with self.assertRaises(StoreError):
                await self.store.get(self.base + "/gzip")
        return ensureDeferred(go())

    def test_idleTimeout(self):
        async def go():
            clock = Clock()
            store = self.makeStore("127.0.0.0/8", clock=clock, timeout=60)
            producer = await store.get(self.base + "/stall")
            consumer = CollectingConsumer()
            half = len(IMAGE) // 2
            arrived = Deferred()
            write = consumer.write

            def counting(data):
                write(data)
                if len(consumer.value()) >= half and not arrived.called:
                    arrived.callback(None)

            consumer.write = counting
            consumer.registerProducer(producer, True)
            done = producer.startProducing(consumer)
            await arrived
            clock.advance(59)
            self.assertNoResult(done)
            clock.advance(2)
            with self.assertRaises(StoreUnavailable):
                await done
            # The origin sees the connection go.
            for request in self.stall.requests:
                await request.notifyFinish().addErrback(lambda _: None)
        return ensureDeferred(go())


class FakeResponse:
    """
    Just enough of an IResponse for the body producer.
    """

    def __init__(self):
        self.protocol = None
        self.transport = StringTransport()

    def deliverBody(self, protocol):
        self.protocol = protocol
        protocol.makeConnection(self.transport)


class ResponseBodyTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.response = FakeResponse()
        self.body = _ResponseBody(self.response, 10, self.clock, 60, "http://x/y")
        self.consumer = CollectingConsumer()
        self.consumer.registerProducer(self.body, True)

    def test_exactBytes(self):
        d = self.body.startProducing(self.consumer)
        self.response.protocol.dataReceived(b"01234")
        self.response.protocol.dataReceived(b"56789")
        self.response.protocol.connectionLost(Failure(ResponseDone()))
        self.successResultOf(d)
        self.assertEqual(self.consumer.value(), b"0123456789")

    def test_closeDelimitedExact(self):
        d = self.body.startProducing(self.consumer)
        self.response.protocol.dataReceived(b"0123456789")
        self.response.protocol.connectionLost(Failure(PotentialDataLoss()))
        self.successResultOf(d)

    def test_short(self):
        d = self.body.startProducing(self.consumer)
        self.response.protocol.dataReceived(b"01234")
        self.response.protocol.connectionLost(Failure(ResponseDone()))
        f = self.failureResultOf(d, StoreError)
        self.assertEqual(str(f.value), "http://x/y: the origin sent 5 of 10 bytes")

    def test_long(self):
        d = self.body.startProducing(self.consumer)
        self.response.protocol.dataReceived(b"0123456789ABC")
        self.failureResultOf(d, StoreError)
        self.assertEqual(self.consumer.value(), b"")
        self.assertEqual(self.response.transport.producerState, "stopped")

    def test_abort(self):
        """
        A copy the server ends (it is shutting down) closes the origin's
        connection and fails, so the image is killed before the process
        exits.
        """
        d = self.body.startProducing(self.consumer)
        self.response.protocol.dataReceived(b"01234")
        self.body.abort()
        f = self.failureResultOf(d, StoreUnavailable)
        self.assertEqual(str(f.value), "http://x/y: the server is shutting down")
        self.assertEqual(self.response.transport.producerState, "stopped")

    def test_abortBeforeStart(self):
        self.body.abort()
        self.failureResultOf(self.body.startProducing(self.consumer), StoreUnavailable)

    def test_backpressure(self):
        d = self.body.startProducing(self.consumer)
        self.assertEqual(self.response.transport.producerState, "producing")
        self.body.pauseProducing()
        self.assertEqual(self.response.transport.producerState, "paused")
        # Paused: no idle timeout runs.
        self.clock.advance(600)
        self.assertNoResult(d)
        self.body.resumeProducing()
        self.assertEqual(self.response.transport.producerState, "producing")
        self.clock.advance(61)
        self.failureResultOf(d, StoreUnavailable)
        self.assertEqual(self.response.transport.producerState, "stopped")

    def test_pausedDuringDelivery(self):
        """
        twisted.web resumes the socket after handing over buffered bytes;
        a pause asked for meanwhile must stick.
        """
        class Resuming(FakeResponse):
            def deliverBody(self, protocol):
                FakeResponse.deliverBody(self, protocol)
                protocol.dataReceived(b"01")
                self.transport.resumeProducing()

        response = Resuming()
        body = _ResponseBody(response, 10, self.clock, 60, "x")
        consumer = CollectingConsumer()
        consumer.registerProducer(body, True)
        consumer.write = lambda data: body.pauseProducing()
        body.startProducing(consumer)
        self.assertEqual(response.transport.producerState, "paused")

    def test_stopProducing(self):
        d = self.body.startProducing(self.consumer)
        self.body.stopProducing()
        self.assertEqual(self.response.transport.producerState, "stopped")
        self.response.protocol.connectionLost(Failure(ResponseDone()))
        self.assertNoResult(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopBeforeStart(self):
        self.body.stopProducing()
        self.assertEqual(self.response.transport.producerState, "stopped")

    def test_unknownLengthNotUsed(self):
        self.assertNotEqual(self.body.length, UNKNOWN_LENGTH)


def _certificate(name: str):
    """
    A self-signed certificate for C{name}, as (PEM key, PEM cert).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )


class HTTPSTests(TestCase):
    """
    TLS through the guard still checks the certificate against the URL's
    hostname, not against the address connected to.
    """

    def setUp(self):
        keyPEM, certPEM = _certificate("images.example")
        server = ssl.PrivateCertificate.loadPEM(keyPEM + certPEM)
        self.trust = ssl.Certificate.loadPEM(certPEM)
        root = Resource()
        root.putChild(b"image", Data(IMAGE, "application/octet-stream"))
        self.port = reactor.listenSSL(
            0, Site(root), server.options(), interface="127.0.0.1"
        )
        self.addCleanup(self.port.stopListening)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.resolver = FakeResolver({
            "images.example": ["127.0.0.1"],
            "other.example": ["127.0.0.1"],
        })

    def store(self):
        client = guardedHTTPClient(
            reactor, "127.0.0.0/8", pool=self.pool, resolver=self.resolver,
            tlsPolicy=BrowserLikePolicyForHTTPS(trustRoot=self.trust),
        )
        return HTTPStore(client, reactor)

    def test_verifiedByHostname(self):
        async def go():
            url = "https://images.example:%d/image" % (self.port.getHost().port,)
            producer = await self.store().get(url)
            got = await readAll(reactor, producer)
            self.assertEqual(md5(got), md5(IMAGE))
        return ensureDeferred(go())

    def test_wrongHostname(self):
        async def go():
            url = "https://other.example:%d/image" % (self.port.getHost().port,)
            with self.assertRaises(StoreUnavailable):
                await self.store().get(url)
        return ensureDeferred(go())


class HTTPStoreOnFirstUseTests(SynchronousTestCase):
    """
    The http store every default configuration lists is built (with its
    HTTP client, and TLS) only when an image is first read from the web.
    """

    def test_builtOnceOnFirstUse(self):
        from twisted.internet.defer import succeed

        from glancetx.store.interface import IStore
        from glancetx.store.remote import HTTPStoreOnFirstUse

        built = []

        class Store:
            def get_size(self, location):
                return succeed(len(location))

        def build():
            built.append(Store())
            return built[-1]

        lazy = HTTPStoreOnFirstUse(build)
        self.assertTrue(IStore.providedBy(lazy))
        self.assertEqual((lazy.name, lazy.schemes, lazy.writable),
                         ("http", ("http", "https"), False))
        self.assertEqual(built, [])
        self.assertEqual(self.successResultOf(lazy.get_size("http://a/b")), 10)
        self.assertEqual(self.successResultOf(lazy.get_size("http://a/bc")), 11)
        self.assertEqual(len(built), 1)


class RedactTests(SynchronousTestCase):
    def test_ipv6KeepsItsBrackets(self):
        """
        A log line names an IPv6 host in brackets, as a URL must, without
        the credentials; it lost the brackets, which made the port part of
        the address.
        """
        self.assertEqual(redact("http://u:secret@[2001:db8::1]:8080/images/x?q#f"),
                         "http://[2001:db8::1]:8080/images/x")
        self.assertEqual(redact("https://[::1]/x"), "https://[::1]/x")

    def test_slashInPassword(self):
        """
        A password with a raw "/" ends the authority early, so its
        credentials did not look like credentials and went into messages
        and log lines whole; such a location is now not shown at all.
        """
        for location in ("http://user:123/SEKRITpw@127.0.0.1:8080/404",
                         "http://user:a/b/SEKRIT@host/x"):
            self.assertEqual(redact(location), "<unparseable location>")
            self.assertNotIn("SEKRIT", redact(location))


class QuietConnectionsTests(TestCase):
    """
    Twisted's HTTP client logs two lines at info level ("Starting factory",
    "Stopping factory") for every connection it opens, saying nothing an
    operator can use (Twisted #9330): two lines for every URL fetched.
    """

    def test_httpStoreLogsNoFactoryLines(self):
        from twisted.logger import globalLogPublisher

        from glancetx.store.remote import makeRemoteStores

        class Config:
            stores = ["http"]
            raw = {"copy_from_allowed_networks": "127.0.0.0/8"}

        port = reactor.listenTCP(0, Site(makeRoot(self)), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        store = makeRemoteStores(Config(), reactor)["http"]

        async def fetch():
            url = "http://127.0.0.1:%d/image" % (port.getHost().port,)
            self.assertEqual(await store.get_size(url), len(IMAGE))
            await store._built()._client._agent._pool.closeCachedConnections()
            factories = [e for e in events if "factory" in e.get("log_format", "").lower()]
            self.assertEqual(factories, [])
        return ensureDeferred(fetch())

    def test_trustedClientLogsNoFactoryLines(self):
        """
        The S3 and Swift drivers' client is as quiet.
        """
        from glancetx.store.remote import makeRemoteStores

        class Config:
            stores = ["s3"]
            raw = {"s3_store_host": "http://127.0.0.1:1", "s3_store_access_key": "a",
                   "s3_store_secret_key": "s", "s3_store_bucket": "images"}

        store = makeRemoteStores(Config(), reactor)["s3"]
        self.assertFalse(store._client._agent._pool._factory.noisy)
