"""
The http store against locations it must refuse and origins that answer
badly: locations it cannot parse, redirects with no, an unreadable or a
non-http target, refusals, answers that never come, sizes it cannot read,
and bodies that end short of the size it was given.

Origins are twisted.web resources on loopback, reached through the guarded
client as in L{tests.test_store_http}.  Every location carries credentials,
and no message may show them.
"""

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool, ResponseDone
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from glancetx.netguard import guardedHTTPClient
from glancetx.store.http import HTTPStore, _ResponseBody
from glancetx.store.interface import BadLocation, LocationNotFound, StoreError, StoreUnavailable
from tests.bodies import CollectingConsumer, readAll
from tests.test_store_http import IMAGE, Chunked, FakeResponse
from tests.test_store_s3_failures import serveOnLoopback

TIMEOUT = 60


class Answer(Resource):
    """
    The same answer to GET and HEAD: C{code}, raw C{headers}, C{body}.
    """

    isLeaf = True

    def __init__(self, code, headers=(), body=b""):
        super().__init__()
        self.code = code
        self.headers = headers
        self.body = body

    def render_GET(self, request):
        request.setResponseCode(self.code)
        for name, value in self.headers:
            request.responseHeaders.addRawHeader(name, value)
        return self.body

    render_HEAD = render_GET


class Sizes(Resource):
    """
    A HEAD with C{length} as its Content-Length (none if None), and a
    ranged GET answered 206 with C{ranges} as its Content-Range headers.
    """

    isLeaf = True

    def __init__(self, length, ranges):
        super().__init__()
        self.length = length
        self.ranges = ranges

    def render_HEAD(self, request):
        if self.length is not None:
            request.setHeader(b"content-length", self.length)
        return b""

    def render_GET(self, request):
        request.setResponseCode(206)
        request.responseHeaders.setRawHeaders(b"content-range", self.ranges)
        return IMAGE[:1]


class IgnoresRange(Resource):
    """
    A HEAD without a length, and a GET that ignores Range: the whole image,
    200, with its Content-Length.
    """

    isLeaf = True

    def render_HEAD(self, request):
        return b""

    def render_GET(self, request):
        return IMAGE


class ShortOfItsRange(Chunked):
    """
    Like L{Chunked}, but its Content-Range promises ten bytes more than its
    chunked body brings.
    """

    def render_GET(self, request):
        if request.getHeader(b"range"):
            request.setResponseCode(206)
            request.setHeader(b"content-range", b"bytes 0-0/%d" % (len(self.data) + 10,))
            return self.data[:1]
        return Chunked.render_GET(self, request)


class Silent(Resource):
    """
    Never answers.  C{arrived} fires with the first request to come.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.arrived = Deferred()
        self.gone = []

    def render(self, request):
        self.gone.append(request.notifyFinish().addErrback(lambda _: None))
        if not self.arrived.called:
            self.arrived.callback(request)
        return NOT_DONE_YET


class _OriginCase(TestCase):
    """
    Origins as children of C{self.root}, on loopback.
    """

    def setUp(self):
        self.root = Resource()
        self.port = serveOnLoopback(self, self.root)
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def serve(self, name, resource):
        """
        Put C{resource} at /C{name}.

        @return: its location, with credentials.
        """
        self.root.putChild(name.encode("ascii"), resource)
        return "http://user:secret@127.0.0.1:%d/%s" % (self.port, name)

    def store(self, clock=reactor):
        client = guardedHTTPClient(reactor, "127.0.0.0/8", pool=self.pool)
        return HTTPStore(client, clock, TIMEOUT)

    def plain(self, location):
        """
        C{location} as messages may show it: without its credentials.
        """
        return location.replace("user:secret@", "")

    async def assertRefused(self, location, error, message=None, methods=("get", "get_size")):
        """
        Every one of C{methods} fails for C{location} with C{error} (or a
        subclass), with C{message} if given, and without the credentials.
        """
        for method in methods:
            with self.assertRaises(error) as caught:
                await getattr(self.store(), method)(location)
            text = str(caught.exception)
            if message is not None:
                self.assertEqual(text, message)
            self.assertNotIn("secret", text)
            self.assertNotIn("user", text)


class LocationTests(_OriginCase):
    def test_unparseable(self):
        """
        A location that is not a URL at all is a bad location, not a
        crash and not an attempt to reach something.
        """
        async def go():
            for location in ("http://user:secret@[::1/x",
                             "http://user:secret@127.0.0.1\x00/x",
                             "ftp://user:secret@127.0.0.1/x"):
                await self.assertRefused(location, BadLocation, "not an http location")
        return ensureDeferred(go())

    def test_portNotANumber(self):
        """
        A port that is not a number is a bad location too.  get and
        get_size redact the location for their messages before parsing it,
        and redact() (store/interface.py) once let urlsplit's ValueError for
        the port escape, which the API answered with a 500, not a 400.
        """
        return ensureDeferred(self.assertRefused(
            "http://user:secret@127.0.0.1:notaport/x", BadLocation, "not an http location"))

    def test_redirectWithoutLocation(self):
        async def go():
            location = self.serve("nowhere", Answer(302))
            await self.assertRefused(location, StoreUnavailable,
                                     self.plain(location) + ": a redirect without a Location")
        return ensureDeferred(go())

    def test_redirectToUnreadableLocation(self):
        async def go():
            for n, target in enumerate([b"http://\xff\xfe/image", b"http://127.0.0.1:bad/",
                                        b"//[::1/image"]):
                location = self.serve("unreadable%d" % (n,), Answer(301, [(b"location", target)]))
                await self.assertRefused(
                    location, StoreUnavailable,
                    self.plain(location) + ": a redirect to an unreadable Location")
        return ensureDeferred(go())

    def test_redirectToOtherScheme(self):
        """
        An origin may not send the store to a file, or to any scheme it
        does not serve: a user could otherwise read what the server can.
        """
        async def go():
            for n, target in enumerate([b"file:///etc/passwd", b"ftp://127.0.0.1/image",
                                        b"gopher://127.0.0.1:70/x"]):
                location = self.serve("away%d" % (n,), Answer(302, [(b"location", target)]))
                await self.assertRefused(
                    location, BadLocation,
                    self.plain(location)
                    + ": redirected to a scheme the http store does not serve")
        return ensureDeferred(go())

    def test_redirectToUnencodableHost(self):
        """
        A redirect to a host name IDNA cannot encode (a label over 63
        characters) is refused, and the message says so rather than
        blaming the scheme.
        """
        async def go():
            target = b"http://" + b"a" * 64 + b".example/image"
            location = self.serve("longlabel", Answer(302, [(b"location", target)]))
            await self.assertRefused(
                location, BadLocation,
                self.plain(location) + ": redirected to a host whose name cannot be encoded")
        return ensureDeferred(go())

    def test_redirectToIPv6Address(self):
        """
        A redirect to an IPv6 address goes through the address guard like
        any other: one the server may not reach is refused, saying why.  It
        was refused for being IPv6.
        """
        async def go():
            location = self.serve("v6", Answer(302, [(b"location", b"http://[::1]:8080/i")]))
            await self.assertRefused(location, BadLocation, "the address of ::1 is not allowed")
        return ensureDeferred(go())

    def test_redirectToOpaqueURI(self):
        """
        A redirect to a URI without a path of slashes (mailto:, data:,
        javascript:) is refused like any other scheme the store does not
        serve.  hyperlink's click raises NotImplementedError for these,
        which once reached the API as a 500 instead of a 400.
        """
        async def go():
            for n, target in enumerate([b"mailto:root@example.com", b"data:,image",
                                        b"javascript:alert(1)"]):
                location = self.serve("opaque%d" % (n,), Answer(302, [(b"location", target)]))
                await self.assertRefused(location, (BadLocation, StoreError))
        return ensureDeferred(go())

    def test_refusals(self):
        """
        An origin that refuses the request is unavailable (not "not
        found"), and says with what status.
        """
        async def go():
            for code in (401, 403, 405, 451, 502):
                location = self.serve("refuses%d" % (code,), Answer(code, body=b"no"))
                with self.assertRaises(StoreError) as caught:
                    await self.store().get(location)
                self.assertNotIsInstance(caught.exception, LocationNotFound)
                self.assertEqual(str(caught.exception),
                                 "%s: the origin answered %d" % (self.plain(location), code))
        return ensureDeferred(go())


class SlowOriginTests(_OriginCase):
    async def timedOut(self):
        """
        A download from an origin that never answers: still waiting just
        before the time-out, unavailable at it.

        @return: its exception, and the location.
        """
        clock = Clock()
        silent = Silent()
        location = self.serve("silent", silent)
        download = self.store(clock).get(location)
        await silent.arrived
        clock.advance(TIMEOUT - 1)
        self.assertNoResult(download)
        clock.advance(1)
        with self.assertRaises(StoreUnavailable) as caught:
            await download
        self.assertNotIn("secret", str(caught.exception))
        await silent.gone[0]
        return caught.exception, location

    def test_noAnswerInTime(self):
        """
        An origin that never answers is unavailable after the time-out,
        not a wait for ever, and the origin sees the connection go.
        """
        return ensureDeferred(self.timedOut())

    def test_timeoutSaysSo(self):
        """
        A time-out is reported as one.  The agent fails a request cancelled
        once it is sent with ResponseNeverReceived (wrapping the
        CancelledError), which was once reported as "could not be reached".
        """
        async def go():
            e, location = await self.timedOut()
            self.assertEqual(str(e), "%s: no answer within %d seconds"
                             % (self.plain(location), TIMEOUT))
        return ensureDeferred(go())

    def test_sizeLookupWaitsOneTimeout(self):
        """
        A size lookup whose HEAD gets no answer in time is unavailable at
        that time-out: only an origin that answers HEAD with a refusal is
        asked again with a ranged GET, so a silent origin does not cost the
        caller two time-outs.
        """
        async def go():
            clock = Clock()
            silent = Silent()
            location = self.serve("silent", silent)
            lookup = self.store(clock).get_size(location)
            await silent.arrived
            clock.advance(TIMEOUT)
            with self.assertRaises(StoreUnavailable) as caught:
                await lookup
            self.assertEqual(str(caught.exception), "%s: no answer within %d seconds"
                             % (self.plain(location), TIMEOUT))
            self.assertEqual(len(silent.gone), 1)
            await silent.gone[0]
        return ensureDeferred(go())

    def test_callerGivesUp(self):
        """
        A download the caller cancels (its client went away) fails with
        CancelledError, not as an origin that is down.
        """
        async def go():
            silent = Silent()
            download = self.store(Clock()).get(self.serve("silent", silent))
            await silent.arrived
            download.cancel()
            with self.assertRaises(CancelledError):
                await download
            await silent.gone[0]
        return ensureDeferred(go())



class SizeTests(_OriginCase):
    def test_unreadableSizes(self):
        """
        A HEAD whose Content-Length is not a number is not believed; the
        size then comes from a ranged GET, and a Content-Range that gives
        none (unknown total, other units, two of them) is a store error,
        not a guess.
        """
        async def go():
            good = self.serve("good", Sizes(b"lots", [b"bytes 0-0/%d" % (len(IMAGE),)]))
            self.assertEqual(await self.store().get_size(good), len(IMAGE))
            cases = [
                (b"lots", [b"bytes 0-0/*"]),
                (None, [b"items 0-0/5"]),
                (None, [b"bytes 0-0/5", b"bytes 0-0/6"]),
                (b"5, 6", [b"bytes 0-0/"]),
            ]
            for n, (length, ranges) in enumerate(cases):
                location = self.serve("bad%d" % (n,), Sizes(length, ranges))
                await self.assertRefused(
                    location, StoreError,
                    self.plain(location) + ": the origin does not say how large the image is",
                    methods=("get_size",))
        return ensureDeferred(go())

    def test_sizeFromWholeAnswer(self):
        """
        An origin that gives no length to HEAD and ignores Range answers
        the ranged GET with the whole image, 200, and its Content-Length:
        that is its size.  twisted's client takes a GET's Content-Length out
        of response.headers into response.length, where get_size reads it.
        """
        async def go():
            location = self.serve("norange", IgnoresRange())
            self.assertEqual(await self.store().get_size(location), len(IMAGE))
        return ensureDeferred(go())

    def test_chunkedBodyShortOfItsSize(self):
        """
        A body sent without a Content-Length is held to the size the
        Content-Range gave: ending short fails the download.
        """
        async def go():
            location = self.serve("short", ShortOfItsRange(IMAGE))
            producer = await self.store().get(location)
            self.assertEqual(producer.length, len(IMAGE) + 10)
            with self.assertRaises(StoreError) as caught:
                await readAll(reactor, producer)
            self.assertEqual(str(caught.exception), "%s: the origin sent %d of %d bytes"
                             % (self.plain(location), len(IMAGE), len(IMAGE) + 10))
        return ensureDeferred(go())


class QuietAboutLocationsTests(_OriginCase):
    """
    A failing origin is told of at debug level only: the store's lines
    name the location (its host and path, and a DNS error the host),
    which an info log never shows; the caller logs the failure, and the
    image it was for, without them.
    """

    def infoLines(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        # (Not the origin's own access log.)
        return lambda: [formatEvent(e) for e in events if e["log_level"] >= LogLevel.info
                        and e.get("log_namespace", "").startswith("glancetx")]

    def test_unreachableOrigin(self):
        lines = self.infoLines()

        async def go():
            closed = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
            where = "127.0.0.1:%d" % (closed.getHost().port,)
            await closed.stopListening()
            with self.assertRaises(StoreUnavailable):
                await self.store().get_size("http://%s/private/image" % (where,))
            self.assertEqual([line for line in lines() if where in line], [])
        return ensureDeferred(go())

    def test_bodyEndedShort(self):
        lines = self.infoLines()

        async def go():
            location = self.serve("short", ShortOfItsRange(IMAGE))
            producer = await self.store().get(location)
            with self.assertRaises(StoreError):
                await readAll(reactor, producer)
            self.assertEqual([line for line in lines() if "/short" in line], [])
        return ensureDeferred(go())


class EndedBodyTests(SynchronousTestCase):
    def test_lateEventsIgnored(self):
        """
        Once a download has failed (here: more bytes than promised), what
        still comes is dropped: bytes the origin had on their way, the
        connection's end, and the consumer's resume, abort or stop.  None
        fires the Deferred again or writes to the consumer.
        """
        response = FakeResponse()
        body = _ResponseBody(response, 4, Clock(), TIMEOUT, "http://x/y")
        consumer = CollectingConsumer()
        done = body.startProducing(consumer)
        response.protocol.dataReceived(b"01234")
        self.failureResultOf(done, StoreError)
        response.protocol.dataReceived(b"56789")
        body.resumeProducing()
        body.abort()
        body.stopProducing()
        response.protocol.connectionLost(Failure(ResponseDone()))
        self.assertEqual(consumer.value(), b"")
        self.assertEqual(response.transport.producerState, "stopped")
