"""
The Swift store's failure paths, against a fake Swift on loopback whose
answers each test scripts: error statuses, answers sent before the request
body, answers that never come, connections dropped.

What matters most is that a failed upload leaves no object and no segment
behind, and that no error message (or log line) shows the key or the token.
The fake keeps what a real Swift would keep, every object it answered 201
to (or that a test says was committed anyway), so "nothing left behind" is
its object table being empty at the end.

The store's reactor is a L{Clock}: it runs only the request timeouts and
the background clean-up retries, which the tests advance by hand; the bytes
go over real loopback sockets with the real reactor.
"""

import datetime
import fnmatch
import hashlib
import json
from typing import Dict, List, Optional
from urllib.parse import unquote

import attr
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from glancetx.store.interface import (
    LocationNotFound,
    StoreError,
    StoreUnavailable,
    UploadFailed,
)
from glancetx.store.swift import SwiftStore, makeLocation
from glancetx.web.streaming import pendingRequestLine
from tests.bodies import BytesBody, PushBody
from tests.test_store_swift import _client

USER = "test:tester"
KEY = "k3y-that-must-never-show"
TOKEN = "AUTH_tk-that-must-never-show"
ACCOUNT = "/v1/AUTH_test"
IMAGE = ACCOUNT + "/glance/img"
#: Segment and large-object sizes: small, so a few kB make several segments.
CHUNK = 1000
#: Three segments: 1000, 1000 and 500 bytes.
LARGE = b"L" * 2500
TIMEOUT = 5.0


def segmentsOf(image: str, number: str = "*") -> str:
    """
    The glob of an image's segment URIs (any upload), or of its segment
    C{number} (as C{"00000002"}).
    """
    return "%s/glance_segments/%s/*/%s" % (ACCOUNT, image, number)


@attr.s(frozen=True)
class Answer:
    """
    What the fake answers to one request (L{HANG} and L{DROP} are not
    statuses, and are never sent as such).

    @ivar keep: store the request's body under its name whatever the
        answer says, as a Swift whose object servers committed the object
        before its proxy failed (or dropped the connection).
    @ivar early: answer as soon as the request's headers arrive, before its
        body, as Swift does when it refuses a token.
    @ivar chunked: send the body without a Content-Length.
    @ivar silent: send the head, promising a body of 100 bytes, and then
        nothing more.
    @ivar deaf: with C{early}, read no more of the body after answering
        (the client's writes back up, its body unfinished).
    """

    code: int = attr.ib()
    headers: Dict[str, str] = attr.ib(factory=dict)
    body: bytes = attr.ib(default=b"")
    keep: bool = attr.ib(default=False)
    early: bool = attr.ib(default=False)
    chunked: bool = attr.ib(default=False)
    silent: bool = attr.ib(default=False)
    deaf: bool = attr.ib(default=False)


#: Never answer: the client has to give up.
HANG = Answer(0)
#: Close the connection instead of answering.
DROP = Answer(-1)


@attr.s
class Seen:
    """
    One request the fake received (its headers, at least).  C{gone} fires
    once it is answered or its connection is lost.
    """

    method: str = attr.ib()
    uri: str = attr.ib()
    gone: Deferred = attr.ib()


class Collect:
    """
    A consumer that keeps what a download writes.
    """

    def __init__(self) -> None:
        self.received: List[bytes] = []

    def write(self, data: bytes) -> None:
        self.received.append(data)


class _FakeSwiftRequest(Request):
    """
    Picks each request's answer as soon as its headers arrive, so that an
    early answer can go out before the body.
    """

    answer: Optional[Answer] = None

    def gotLength(self, length) -> None:
        super().gotLength(length)
        method, uri, _ = pendingRequestLine(self.channel)
        fake = self.channel.site.resource
        self.answer = fake.arrived(self, method.decode("ascii"), uri.decode("ascii"))
        if self.answer is not None and self.answer.early:
            fake.answerEarly(self, self.answer)

    def process(self) -> None:
        if self.answer is not None and self.answer.early:
            # Answered already; what remains of the body has been read.
            self.channel.transport.loseConnection()
            return
        super().process()


class FakeSwift(Resource):
    """
    Just enough of Swift and of its v1 auth to store, read and delete
    objects, plus the answers the test scripted for the requests it names.

    @ivar objects: stored bytes by C{container/name}.
    @ivar seen: every request received, in order.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.address = ""
        self.objects: Dict[str, bytes] = {}
        self.containers = {"glance", "glance_segments"}
        self.seen: List[Seen] = []
        self._scripts: List[tuple] = []
        self._waiters: List[tuple] = []
        self._held: List[Request] = []

    def serve(self, test: TestCase, interface: str = "127.0.0.1") -> None:
        port = reactor.listenTCP(0, Site(self, requestFactory=_FakeSwiftRequest),
                                 interface=interface)
        test.addCleanup(port.stopListening)
        test.addCleanup(self._hangUp)
        host = "[%s]" % (interface,) if ":" in interface else interface
        self.address = "http://%s:%d" % (host, port.getHost().port)

    def _hangUp(self) -> None:
        for request in self._held:
            request.transport.abortConnection()

    def release(self) -> None:
        """
        Answer the requests that L{HANG} held, now, as the fake answers.
        """
        held, self._held = self._held, []
        for request in held:
            answer = self._default(request)
            request.setResponseCode(answer.code)
            for name, value in answer.headers.items():
                request.setHeader(name, value)
            request.write(answer.body)
            request.finish()

    @property
    def authAddress(self) -> str:
        return self.address + "/auth/v1.0"

    def script(self, method: str, pattern: str, *answers: Answer) -> None:
        """
        Answer the next requests of C{method} whose URI (query included)
        matches the glob C{pattern} with C{answers}, one each, in order;
        later ones get the fake Swift's own answer.
        """
        for answer in answers:
            self._scripts.append((method, pattern, answer))

    def waitFor(self, method: str, pattern: str) -> Deferred:
        """
        Fire with the L{Seen} of the next such request.
        """
        d: Deferred = Deferred()
        self._waiters.append((method, pattern, d))
        return d

    def uris(self, method: str, pattern: str = "*") -> List[str]:
        return [s.uri for s in self.seen
                if s.method == method and fnmatch.fnmatchcase(s.uri, pattern)]

    def arrived(self, request: Request, method: str, uri: str) -> Optional[Answer]:
        gone = request.notifyFinish()
        gone.addErrback(lambda _: None)
        seen = Seen(method, uri, gone)
        self.seen.append(seen)
        for i, (m, pattern, d) in enumerate(self._waiters):
            if m == method and fnmatch.fnmatchcase(uri, pattern):
                del self._waiters[i]
                d.callback(seen)
                break
        for i, (m, pattern, answer) in enumerate(self._scripts):
            if m == method and fnmatch.fnmatchcase(uri, pattern):
                del self._scripts[i]
                return answer
        return None

    def answerEarly(self, request: Request, answer: Answer) -> None:
        if answer.code == DROP.code:
            request.transport.abortConnection()
            return
        head = [b"HTTP/1.1 %d Early" % (answer.code,),
                b"Content-Length: %d" % (len(answer.body),)]
        head += [("%s: %s" % item).encode("ascii") for item in answer.headers.items()]
        request.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + answer.body)
        if answer.deaf:
            request.transport.pauseProducing()
            self._held.append(request)

    def render(self, request: Request):
        answer = request.answer or self._default(request)
        if answer.keep:
            self._keep(request)
        if answer.code == HANG.code:
            self._held.append(request)
            return NOT_DONE_YET
        if answer.code == DROP.code:
            request.transport.abortConnection()
            return NOT_DONE_YET
        request.setResponseCode(answer.code)
        for name, value in answer.headers.items():
            request.setHeader(name, value)
        if answer.chunked:
            request.write(answer.body)
            request.finish()
            return NOT_DONE_YET
        if answer.silent:
            request.setHeader(b"content-length", b"100")
            request.write(b"")
            self._held.append(request)
            return NOT_DONE_YET
        return answer.body

    def _name(self, request: Request) -> str:
        return unquote(request.path.decode("ascii"))[len(ACCOUNT) + 1:]

    def _keep(self, request: Request) -> bytes:
        data = request.content.read()
        self.objects[self._name(request)] = data
        return data

    def _default(self, request: Request) -> Answer:
        method = request.method.decode("ascii")
        path = request.path.decode("ascii")
        if path == "/auth/v1.0":
            return Answer(200, {"X-Storage-Url": self.address + ACCOUNT, "X-Auth-Token": TOKEN})
        if not path.startswith(ACCOUNT + "/"):
            return Answer(404)
        name = self._name(request)
        container, _, obj = name.partition("/")
        if not obj:
            if method == "PUT":
                self.containers.add(container)
                return Answer(201)
            return Answer(204 if container in self.containers else 404)
        if method == "PUT":
            return Answer(201, {"Etag": hashlib.md5(self._keep(request)).hexdigest()})
        if name not in self.objects:
            return Answer(404)
        if method == "DELETE":
            del self.objects[name]
            return Answer(204)
        if method == "HEAD":
            return Answer(200, {"Content-Length": str(len(self.objects[name]))})
        return Answer(200, body=self.objects[name])


class SwiftFailureTests(TestCase):
    """
    Each test scripts the fake's answers, runs one store call, and checks
    the error it gets and what the fake holds afterwards.
    """

    timeout = 30

    def setUp(self) -> None:
        self.fake = FakeSwift()
        self.fake.serve(self)
        self.clock = Clock()
        self.logged: List[str] = []
        globalLogPublisher.addObserver(self._logged)
        self.addCleanup(globalLogPublisher.removeObserver, self._logged)
        self.addCleanup(self._noSecretLogged)

    def _logged(self, event) -> None:
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += " " + str(failure.value)
        self.logged.append(text)

    def _noSecretLogged(self) -> None:
        for line in self.logged:
            self.assertNotIn(KEY, line)
            self.assertNotIn(TOKEN, line)

    def makeStore(self, **overrides) -> SwiftStore:
        kwargs = dict(
            authAddress=self.fake.authAddress,
            user=USER,
            key=KEY,
            container="glance",
            createContainer=True,
            largeObjectSize=CHUNK,
            chunkSize=CHUNK,
            requestTimeout=TIMEOUT,
        )
        kwargs.update(overrides)
        return SwiftStore(self.clock, _client(self), **kwargs)

    def location(self, authAddress: Optional[str] = None) -> str:
        """
        The location of image C{img}, naming the test's key as every
        location the store writes does.
        """
        return makeLocation(authAddress or self.fake.authAddress, USER, KEY, "glance", "img")

    async def assertFails(self, d: Deferred, kind: type, message: str) -> None:
        """
        C{d} fails with C{kind} itself (a StoreUnavailable where a plain
        StoreError is expected is a wrong answer: the client would be told
        to retry) and the plain C{message}, which never shows a secret.
        """
        try:
            await d
        except Exception as e:
            caught = e
        else:
            self.fail("no %s" % (kind.__name__,))
        self.assertIs(type(caught), kind, repr(caught))
        self.assertEqual(str(caught), message)
        self.assertNotIn(KEY, str(caught))
        self.assertNotIn(TOKEN, str(caught))

    def assertNothingLeft(self, kept=()) -> None:
        """
        The fake holds no object and no segment but those of the images
        C{kept}, and every segment it received for another was deleted by
        the store.
        """
        def image(name):
            container, _, rest = name.partition("/")
            return rest.split("/", 1)[0]
        self.assertEqual(sorted(n for n in self.fake.objects if image(n) not in kept), [])
        segments = {uri for uri in self.fake.uris("PUT", segmentsOf("*"))
                    if image(uri[len(ACCOUNT) + 1:]) not in kept}
        self.assertLessEqual(segments, set(self.fake.uris("DELETE")))

    # --- One PUT: an image up to the large-object size -------------------

    def test_putRefusedAfterCommitDeletesObject(self):
        """
        A 5xx to the PUT may come from a proxy after the object servers
        stored the bytes: the store deletes the object and reports Swift as
        unavailable.
        """
        async def go():
            store = self.makeStore()
            self.fake.script("PUT", IMAGE, Answer(503, keep=True))
            await self.assertFails(store.add("img", BytesBody(reactor, b"x" * 500)),
                                   StoreUnavailable, "Swift answered 503 to an image upload")
            self.assertEqual(self.fake.uris("DELETE"), [IMAGE])
            self.assertNothingLeft()
        return ensureDeferred(go())

    def test_answersGoSilent(self):
        """
        Swift (or a proxy) that sends an answer's head and then nothing:
        the auth answer's token, an upload's 201, a download's body.  Each
        is given up on once its body has been silent for the request
        timeout: the token and the 201 stand (their head said what was
        needed), the download fails.  Nothing waits for good, and no later
        request waits behind a stalled authentication.
        """
        async def go():
            store = self.makeStore()
            self.fake.script("GET", "/auth/v1.0", Answer(
                200, {"X-Storage-Url": self.fake.address + ACCOUNT, "X-Auth-Token": TOKEN},
                silent=True))
            self.fake.script("PUT", IMAGE, Answer(201, keep=True, silent=True))
            authAsked = self.fake.waitFor("GET", "/auth/v1.0")
            putAsked = self.fake.waitFor("PUT", IMAGE)
            added = store.add("img", BytesBody(reactor, b"x" * 500))
            for asked in (authAsked, putAsked):
                await asked
                await deferLater(reactor, 0.3, lambda: None)
                self.assertNoResult(added)
                self.clock.advance(TIMEOUT)
            await added
            self.assertEqual(self.fake.objects["glance/img"], b"x" * 500)
            self.assertEqual(len(self.fake.uris("GET", "/auth/v1.0")), 1)

            self.fake.script("GET", IMAGE, Answer(200, silent=True))
            getAsked = self.fake.waitFor("GET", IMAGE)
            reader = await store.get(self.location())
            done = reader.startProducing(Collect())
            await getAsked
            await deferLater(reactor, 0.3, lambda: None)
            self.clock.advance(TIMEOUT - 1)
            self.assertNoResult(done)
            self.clock.advance(1)
            with self.assertRaises(StoreError):
                await done
        return ensureDeferred(go())

    def test_putRefusedIsStoreError(self):
        """
        A 4xx to the PUT is the store's (or its configuration's) fault, not
        Swift being down: a plain StoreError.
        """
        async def go():
            store = self.makeStore()
            self.fake.script("PUT", IMAGE, Answer(413))
            await self.assertFails(store.add("img", BytesBody(reactor, b"x" * 500)),
                                   StoreError, "Swift answered 413 to an image upload")
            self.assertEqual(self.fake.uris("DELETE"), [IMAGE])
            self.assertNothingLeft()
        return ensureDeferred(go())

    def test_tokenRefusedBeforeTheBody(self):
        """
        Swift refuses a token as soon as the headers arrive.  The PUT cannot
        be replayed (its body streams), so the upload fails at once: the body
        is stopped, the object name deleted, and the message names neither
        the token nor the key.
        """
        async def go():
            store = self.makeStore()
            body = PushBody()
            body.length = 500
            self.fake.script("PUT", IMAGE, Answer(401, early=True))
            await self.assertFails(store.add("img", body),
                                   StoreError, "Swift refused the token during an upload")
            self.assertTrue(body.stopped)
            self.assertEqual(self.fake.uris("DELETE"), [IMAGE])
            self.assertNothingLeft()
        return ensureDeferred(go())

    def test_connectionDroppedAfterCommitDeletesObject(self):
        """
        Swift stored the bytes, then the connection broke before its answer:
        the store cannot know, so it deletes the object anyway.
        """
        async def go():
            store = self.makeStore()
            self.fake.script("PUT", IMAGE, attr.evolve(DROP, keep=True))
            await self.assertFails(
                store.add("img", BytesBody(reactor, b"x" * 500)),
                StoreUnavailable, "cannot reach Swift (ResponseNeverReceived)")
            self.assertEqual(self.fake.uris("DELETE"), [IMAGE])
            self.assertNothingLeft()
        return ensureDeferred(go())

    def test_bodyFailsMidUpload(self):
        """
        The client goes away half way: the client's error, not a store
        error, and the partial object's name is deleted.
        """
        async def go():
            store = self.makeStore()
            body = BytesBody(reactor, b"x" * 900, chunk=100, failAfter=400)
            with self.assertRaises(UploadFailed):
                await store.add("img", body)
            self.assertEqual(self.fake.uris("DELETE"), [IMAGE])
            self.assertNothingLeft()
        return ensureDeferred(go())

    def test_createdBeforeTheBody(self):
        """
        A server that answers 201 before it has the body.  Swift does not,
        but the store does not rely on that.  twisted's Agent hangs up on an
        answer that comes while it is still sending, and stops the body,
        which then never vouches for its bytes: the upload fails at once and
        the object is deleted (it once waited for that verdict for ever).
        """
        async def go():
            store = self.makeStore()
            body = PushBody()
            body.length = 10
            self.fake.script("PUT", IMAGE, Answer(201, early=True))
            arriving = self.fake.waitFor("PUT", IMAGE)
            added = store.add("img", body)
            await (await arriving).gone
            self.assertTrue(body.stopped)
            deleted = self.fake.waitFor("DELETE", IMAGE)
            giveUp = reactor.callLater(2, deleted.cancel)
            self.addCleanup(lambda: giveUp.active() and giveUp.cancel())
            await deleted
            with self.assertRaises(StoreError):
                await added
            self.assertNothingLeft()
        return ensureDeferred(go())

    # --- Segments: an image above the large-object size ------------------

    async def failSegment(self, store: SwiftStore, image: str, answer: Answer,
                          kind: type, message: str, kept=()) -> None:
        """
        Upload C{LARGE} as C{image} with C{answer} to its second segment,
        which must fail the upload with C{kind} and C{message} and leave no
        segment and no manifest.
        """
        self.fake.script("PUT", segmentsOf(image, "00000002"), answer)
        body = BytesBody(reactor, LARGE, chunk=300)
        await self.assertFails(store.add(image, body), kind, message)
        self.assertNothingLeft(kept)
        self.assertNotIn(ACCOUNT + "/glance/" + image, self.fake.uris("PUT"))
        # A segment answered before its body ended is no critical error
        # with a traceback in twisted.web's log.
        self.assertNoCriticalWriteError()

    async def silentAfterTheBytes(self, uri: str, data: bytes) -> None:
        """
        Swift keeps every byte of the PUT of C{uri} and never answers: the
        upload fails once the answer is the request timeout late, not
        before, and leaves nothing.
        """
        store = self.makeStore()
        self.fake.script("PUT", uri, attr.evolve(HANG, keep=True))
        added = store.add("img", BytesBody(reactor, data, chunk=300))
        while not self.fake._held:  # until Swift has had the whole body
            await deferLater(reactor, 0.01, lambda: None)
        self.clock.advance(TIMEOUT - 1)
        self.assertNoResult(added)
        self.clock.advance(1)
        await self.assertFails(added, StoreUnavailable, "Swift did not answer PUT in time")
        self.assertNothingLeft()

    def test_putNeverAnswered(self):
        return ensureDeferred(self.silentAfterTheBytes(IMAGE, b"x" * 500))

    def test_segmentNeverAnswered(self):
        return ensureDeferred(self.silentAfterTheBytes(segmentsOf("img", "00000002"), LARGE))

    def test_segmentWithoutEtag(self):
        """
        A segment Swift stored but gave no etag for cannot be listed in the
        manifest: the upload fails and the stored segments are deleted.
        """
        return ensureDeferred(self.failSegment(
            self.makeStore(), "img", Answer(201, keep=True),
            StoreError, "Swift stored a segment without an etag"))

    def test_segmentTokenRefused(self):
        return ensureDeferred(self.failSegment(
            self.makeStore(), "img", Answer(401),
            StoreError, "Swift refused the token during an upload"))

    def test_segmentTokenRefusedBeforeItsBody(self):
        """
        Swift refuses the token of a segment's PUT before its body.
        """
        return ensureDeferred(self.failSegment(
            self.makeStore(), "img", Answer(401, early=True),
            StoreError, "Swift refused the token during an upload"))

    async def refusedWhileSending(self, uri: str, largeObjectSize: int, size: int) -> None:
        """
        Upload C{size} bytes; Swift refuses the token of the PUT of C{uri}
        and reads no more of it, its body still being sent.  The upload
        fails as a refused token, leaves nothing, and twisted.web logs no
        critical error with a traceback (a body that fails after its
        answer was one).
        """
        store = self.makeStore(largeObjectSize=largeObjectSize, chunkSize=largeObjectSize)
        self.fake.script("PUT", uri, Answer(401, early=True, deaf=True))
        body = BytesBody(reactor, b"x" * size, chunk=256 * 1024)
        await self.assertFails(store.add("img", body), StoreError,
                               "Swift refused the token during an upload")
        self.assertNothingLeft()
        self.assertNoCriticalWriteError()

    def assertNoCriticalWriteError(self) -> None:
        self.assertEqual([line for line in self.logged if "not in valid state" in line], [])

    def test_segmentAnsweredWhileItsBodyIsSent(self):
        size = 8 * 1024 * 1024
        return ensureDeferred(self.refusedWhileSending(
            segmentsOf("img", "00000002"), size, 3 * size))

    def test_wholeAnsweredWhileItsBodyIsSent(self):
        size = 8 * 1024 * 1024
        return ensureDeferred(self.refusedWhileSending(IMAGE, 4 * size, size))

    def test_segmentUnavailable(self):
        return ensureDeferred(self.failSegment(
            self.makeStore(), "img", Answer(503, keep=True),
            StoreUnavailable, "Swift answered 503 to a segment upload"))

    def test_segmentsContainerGone(self):
        """
        A 404 to a segment means the segments container went away since the
        store last checked it: the next large upload checks (and creates) it
        again instead of failing the same way.
        """
        async def go():
            store = self.makeStore()
            container = ACCOUNT + "/glance_segments"
            await store.add("first", BytesBody(reactor, LARGE, chunk=300))
            self.assertEqual(len(self.fake.uris("HEAD", container)), 1)
            await self.failSegment(store, "second", Answer(404), StoreError,
                                   "Swift answered 404 to a segment upload", kept=["first"])
            self.assertEqual(len(self.fake.uris("HEAD", container)), 1)
            await store.add("third", BytesBody(reactor, LARGE, chunk=300))
            self.assertEqual(len(self.fake.uris("HEAD", container)), 2)
        return ensureDeferred(go())

    def test_tooManySegmentsDeclared(self):
        """
        A declared size that needs more segments than Swift allows in a
        manifest is refused before a byte is sent.
        """
        async def go():
            store = self.makeStore(maxSegments=2)
            body = BytesBody(reactor, LARGE)
            await self.assertFails(
                store.add("img", body), UploadFailed,
                "image needs more than 2 Swift segments; "
                "raise swift_store_large_object_chunk_size")
            self.assertEqual(self.fake.uris("PUT"), [])
            self.assertEqual(body.pauses, 0)
        return ensureDeferred(go())

    def test_tooManySegmentsUnknownLength(self):
        """
        A body of unknown length that outgrows the segment limit fails the
        upload once it does, and the segments already sent are deleted.
        """
        async def go():
            store = self.makeStore(maxSegments=2)
            body = BytesBody(reactor, LARGE, chunk=300, knownLength=False)
            await self.assertFails(
                store.add("img", body), UploadFailed,
                "image needs more than 2 Swift segments; "
                "raise swift_store_large_object_chunk_size")
            # Both segments started are deleted, stored or cut off.
            self.assertEqual(len(self.fake.uris("DELETE", segmentsOf("img"))), 2)
            self.assertNothingLeft()
        return ensureDeferred(go())

    def test_manifestRefused(self):
        """
        A manifest Swift refuses (a segment it finds wrong, say) fails the
        upload with a StoreError; the manifest's name and every segment are
        deleted.
        """
        async def go():
            store = self.makeStore()
            self.fake.script("PUT", IMAGE + "?multipart-manifest=put", Answer(400))
            await self.assertFails(store.add("img", BytesBody(reactor, LARGE, chunk=300)),
                                   StoreError, "Swift answered 400 to a large-object manifest")
            deleted = self.fake.uris("DELETE")
            self.assertIn(IMAGE, deleted)
            self.assertEqual(len(deleted), 4)
            self.assertNothingLeft()
        return ensureDeferred(go())

    def test_manifestStoredButUnavailable(self):
        """
        A 5xx to the manifest after Swift wrote it: the manifest is deleted
        too, not only the segments.
        """
        async def go():
            store = self.makeStore()
            self.fake.script("PUT", IMAGE + "?multipart-manifest=put", Answer(503, keep=True))
            await self.assertFails(store.add("img", BytesBody(reactor, LARGE, chunk=300)),
                                   StoreUnavailable, "Swift answered 503 to a large-object manifest")
            self.assertIn(IMAGE, self.fake.uris("DELETE"))
            self.assertNothingLeft()
        return ensureDeferred(go())

    def test_emptyUnknownLengthRefused(self):
        """
        An empty body of unknown length is one empty PUT sent as the
        manifest would be; refused, its name is deleted.
        """
        async def go():
            store = self.makeStore()
            self.fake.script("PUT", IMAGE, Answer(503, keep=True))
            await self.assertFails(store.add("img", BytesBody(reactor, b"", knownLength=False)),
                                   StoreUnavailable, "Swift answered 503 to a large-object manifest")
            self.assertEqual(self.fake.uris("DELETE"), [IMAGE])
            self.assertNothingLeft()
        return ensureDeferred(go())

    def test_emptyRefusedAfterCommit(self):
        """
        An empty image of declared size 0 is one empty PUT (swift.py
        C{_putEmpty}); a 5xx to it, which Swift may send after keeping the
        object, leaves no empty object behind.
        """
        async def go():
            store = self.makeStore()
            self.fake.script("PUT", IMAGE, Answer(503, keep=True))
            await self.assertFails(store.add("img", BytesBody(reactor, b"")),
                                   StoreUnavailable, "Swift answered 503 to an image upload")
            self.assertEqual(self.fake.uris("DELETE"), [IMAGE])
            self.assertNothingLeft()
        return ensureDeferred(go())

    # --- Clean-up that fails ----------------------------------------------

    def test_cleanupRetriedWhileSwiftIsDown(self):
        """
        The DELETE after a failed upload meets Swift still down: the upload
        reports its own error, not the DELETE's, and the DELETE is retried in
        the background until the object is gone.  The log says so without a
        secret (checked for every test in the clean-up).
        """
        async def go():
            store = self.makeStore()
            self.fake.script("PUT", IMAGE, Answer(502, keep=True))
            self.fake.script("DELETE", IMAGE, Answer(503))
            await self.assertFails(store.add("img", BytesBody(reactor, b"x" * 500)),
                                   StoreUnavailable, "Swift answered 502 to an image upload")
            self.assertEqual(sorted(self.fake.objects), ["glance/img"])
            self.assertEqual(store.pendingCleanups(), 1)
            self.assertIn("Swift store: could not remove /glance/img after a failed upload: "
                          "Swift answered 503 to a clean-up DELETE", self.logged)
            self.clock.advance(1)
            await store.whenCleanedUp()
            self.assertEqual(self.fake.uris("DELETE"), [IMAGE, IMAGE])
            self.assertNothingLeft()
        return ensureDeferred(go())

    def test_cleanupRefusedIsNotRetried(self):
        """
        A clean-up DELETE Swift refuses (4xx) will not get better by
        waiting: it is logged, not retried.
        """
        async def go():
            store = self.makeStore()
            self.fake.script("PUT", IMAGE, Answer(500, keep=True))
            self.fake.script("DELETE", IMAGE, Answer(403))
            await self.assertFails(store.add("img", BytesBody(reactor, b"x" * 500)),
                                   StoreUnavailable, "Swift answered 500 to an image upload")
            self.assertEqual(store.pendingCleanups(), 0)
            self.assertIn("Swift store: could not remove /glance/img after a failed upload: "
                          "Swift answered 403 to a clean-up DELETE", self.logged)
        return ensureDeferred(go())

    # --- The container, checked before an upload --------------------------

    def test_containerCheckFails(self):
        """
        The container check fails before the body is started: nothing is
        sent, nothing is left.
        """
        async def go():
            store = self.makeStore()
            self.fake.script("HEAD", ACCOUNT + "/glance", Answer(503))
            body = BytesBody(reactor, b"x" * 500)
            await self.assertFails(store.add("img", body),
                                   StoreUnavailable, "Swift answered 503 to checking the container")
            self.assertEqual(self.fake.uris("PUT"), [])
        return ensureDeferred(go())

    def test_containerCreateRefused(self):
        async def go():
            store = self.makeStore()
            self.fake.containers.clear()
            self.fake.script("PUT", ACCOUNT + "/glance", Answer(403))
            await self.assertFails(store.add("img", BytesBody(reactor, b"x" * 500)),
                                   StoreError, "Swift answered 403 to creating the container")
            self.assertEqual(self.fake.uris("PUT"), [ACCOUNT + "/glance"])
        return ensureDeferred(go())

    # --- Reads and deletes: how Swift's answers map to errors -------------

    def test_downloadErrors(self):
        """
        A 5xx to a download is Swift unavailable, a 404 nothing there, any
        other refusal a plain store error.
        """
        async def go():
            store = self.makeStore()
            self.fake.script("GET", IMAGE, Answer(503), Answer(404), Answer(403))
            await self.assertFails(store.get(self.location()),
                                   StoreUnavailable, "Swift answered 503 to a download")
            await self.assertFails(store.get(self.location()),
                                   LocationNotFound, "no Swift object at the location")
            await self.assertFails(store.get(self.location()),
                                   StoreError, "Swift answered 403 to a download")
        return ensureDeferred(go())

    def test_downloadWithoutLength(self):
        """
        A download must know its size up front (the web layer promises it to
        the client): an answer without Content-Length is refused.
        """
        async def go():
            store = self.makeStore()
            self.fake.script("GET", IMAGE, Answer(200, body=b"bytes", chunked=True))
            await self.assertFails(store.get(self.location()),
                                   StoreError, "Swift's download answer has no Content-Length")
        return ensureDeferred(go())

    def test_sizeErrors(self):
        async def go():
            store = self.makeStore()
            self.fake.script("HEAD", IMAGE, Answer(500), Answer(404), Answer(400), Answer(200))
            await self.assertFails(store.get_size(self.location()),
                                   StoreUnavailable, "Swift answered 500 to a HEAD")
            await self.assertFails(store.get_size(self.location()),
                                   LocationNotFound, "no Swift object at the location")
            await self.assertFails(store.get_size(self.location()),
                                   StoreError, "Swift answered 400 to a HEAD")
            await self.assertFails(store.get_size(self.location()),
                                   StoreError, "Swift's answer has no Content-Length")
        return ensureDeferred(go())

    def test_deleteErrors(self):
        """
        The HEAD that finds what kind of object to delete, then the DELETE
        itself: 5xx is Swift unavailable (the caller retries later), 4xx a
        store error; a 404 to the DELETE is success (already gone).
        """
        async def go():
            store = self.makeStore()
            self.fake.objects["glance/img"] = b"abc"
            self.fake.script("HEAD", IMAGE, Answer(502))
            await self.assertFails(store.delete(self.location()),
                                   StoreUnavailable, "Swift answered 502 to a HEAD")
            self.fake.script("DELETE", IMAGE, Answer(503), Answer(409), Answer(404))
            await self.assertFails(store.delete(self.location()),
                                   StoreUnavailable, "Swift answered 503 to a DELETE")
            await self.assertFails(store.delete(self.location()),
                                   StoreError, "Swift answered 409 to a DELETE")
            await store.delete(self.location())
            self.assertEqual(self.fake.uris("DELETE"), [IMAGE] * 3)
        return ensureDeferred(go())

    def test_deleteStaticLargeObjectErrors(self):
        """
        An SLO is deleted in one request whose answer lists what Swift could
        not remove; a failure there, or in the request, is reported like
        any other DELETE.
        """
        async def go():
            store = self.makeStore()
            slo = Answer(200, {"Content-Length": "10", "X-Static-Large-Object": "True"})
            bulk = IMAGE + "?multipart-manifest=delete"

            def answer(status, errors=()):
                return Answer(200, {"Content-Type": "application/json"}, json.dumps(
                    {"Response Status": status, "Errors": list(errors)}).encode())

            cases = [
                (Answer(503), StoreUnavailable, "Swift answered 503 to a large-object DELETE"),
                (Answer(403), StoreError, "Swift answered 403 to a large-object DELETE"),
                (answer("400 Bad Request", [["/glance_segments/s1", "403 Forbidden"]]),
                 StoreError, "Swift answered 400 to deleting 1 large-object part(s)"),
                (answer("503 Service Unavailable"), StoreUnavailable,
                 "Swift answered 503 to deleting 1 large-object part(s)"),
                (Answer(200, body=b"<html>"), StoreError,
                 "Swift's large-object DELETE answer is not the JSON expected"),
            ]
            for refusal, kind, message in cases:
                self.fake.script("HEAD", IMAGE, slo)
                self.fake.script("DELETE", bulk, refusal)
                await self.assertFails(store.delete(self.location()), kind, message)
            # Gone by the time of the DELETE: done.
            self.fake.script("HEAD", IMAGE, slo)
            self.fake.script("DELETE", bulk, Answer(404))
            await store.delete(self.location())
            self.assertEqual(self.fake.uris("DELETE"), [bulk] * 6)
        return ensureDeferred(go())

    def test_deleteDynamicLargeObjectListingFails(self):
        """
        A DLO's segments are found by listing their container; a listing
        that fails fails the delete before the manifest is removed, so a
        later retry can still find the segments through it; so does one
        that is not the JSON listing expected.  A listing with no content
        (204) means no segments: the manifest goes.
        """
        async def go():
            store = self.makeStore()
            dlo = Answer(200, {"Content-Length": "10", "X-Object-Manifest": "glance_segments/img-"})
            listing = ACCOUNT + "/glance_segments?*"
            self.fake.script("HEAD", IMAGE, dlo, dlo, dlo, dlo)
            self.fake.script("GET", listing, Answer(503), Answer(200, body=b"<html>"),
                             Answer(200, body=b'[{"nom": "x"}]'), Answer(204))
            await self.assertFails(store.delete(self.location()),
                                   StoreUnavailable, "Swift answered 503 to listing a container")
            for _ in range(2):
                await self.assertFails(store.delete(self.location()), StoreError,
                                       "Swift's container listing is not the JSON expected")
            self.assertEqual(self.fake.uris("DELETE"), [])
            await store.delete(self.location())
            self.assertEqual(self.fake.uris("DELETE"), [IMAGE])
        return ensureDeferred(go())

    # --- Authentication and time ------------------------------------------

    def test_v1AuthFailures(self):
        """
        tempauth refusing the key is a store error, its being down is Swift
        unavailable, and an answer without a storage URL or a token cannot
        be used.  None is remembered: each call authenticates again.
        """
        async def go():
            store = self.makeStore()
            auth = "/auth/v1.0"
            self.fake.script("GET", auth, Answer(401), Answer(403), Answer(500),
                             Answer(200, {"X-Auth-Token": TOKEN}),
                             Answer(200, {"X-Storage-Url": self.fake.address + ACCOUNT}))
            for kind, message in [
                (StoreError, "Swift auth refused the credentials (401)"),
                (StoreError, "Swift auth refused the credentials (403)"),
                (StoreUnavailable, "Swift's auth answered 500 to authentication"),
                (StoreError, "Swift auth answer has no storage URL or token"),
                (StoreError, "Swift auth answer has no storage URL or token"),
            ]:
                await self.assertFails(store.get_size(self.location()), kind, message)
            self.assertEqual(len(self.fake.uris("GET", auth)), 5)
            self.assertEqual(self.fake.uris("HEAD"), [])
        return ensureDeferred(go())

    def test_keystoneFailures(self):
        """
        Keystone v3 refusing the password, being down, or answering what is
        not a usable token.
        """
        async def go():
            keystone = self.fake.address + "/v3"
            store = self.makeStore(authAddress=keystone, authVersion=3)
            tokens = "/v3/auth/tokens"
            token = {"X-Subject-Token": TOKEN, "Content-Type": "application/json"}
            self.fake.script(
                "POST", tokens,
                Answer(401), Answer(403), Answer(503),
                Answer(201, token, b"<html>not json</html>"),
                Answer(201, token, b'{"no": "token"}'),
                Answer(201, {}, json.dumps({"token": {"catalog": []}}).encode()),
                Answer(201, token, json.dumps({"token": {"catalog": []}}).encode()))
            for kind, message in [
                (StoreError, "Keystone refused the credentials (401)"),
                (StoreError, "Keystone refused the credentials (403)"),
                (StoreUnavailable, "Keystone answered 503 to authentication"),
                (StoreError, "Keystone's token answer is not the JSON expected"),
                (StoreError, "Keystone's token answer is not the JSON expected"),
                (StoreError, "Keystone's token answer has no X-Subject-Token"),
                (StoreError, "Keystone's catalog has no public endpoint of type object-store"),
            ]:
                await self.assertFails(store.get_size(self.location(keystone)), kind, message)
            self.assertEqual(len(self.fake.uris("POST", tokens)), 7)
            self.assertEqual(self.fake.uris("HEAD"), [])
        return ensureDeferred(go())

    def test_keystoneNotNamedSwift(self):
        """
        Keystone down, or silent, is said to be Keystone: an operator read
        "cannot reach Swift" while Swift was well.
        """
        async def go():
            store = self.makeStore(authAddress="http://127.0.0.1:1/v3", authVersion=3)
            await self.assertFails(store.get_size(self.location("http://127.0.0.1:1/v3")),
                                   StoreUnavailable, "cannot reach Keystone (ConnectionRefusedError)")
            keystone = self.fake.address + "/v3"
            store = self.makeStore(authAddress=keystone, authVersion=3)
            self.fake.script("POST", "/v3/auth/tokens", HANG)
            arriving = self.fake.waitFor("POST", "/v3/auth/tokens")
            size = store.get_size(self.location(keystone))
            await arriving
            self.clock.advance(TIMEOUT)
            await self.assertFails(size, StoreUnavailable, "Keystone did not answer POST in time")
        return ensureDeferred(go())

    def test_tokenRenewedBeforeItEnds(self):
        """
        A token that will end within a minute is renewed before the next
        request, as glance_store's swift_store_expire_soon_interval: Swift
        checks a token as a request begins, and each segment of an upload
        that outlived its token was refused.  Both auth versions say when
        their tokens end.
        """
        async def go():
            keystone = self.fake.address + "/v3"
            ends = (datetime.datetime.now(datetime.timezone.utc)
                    + datetime.timedelta(seconds=90)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            catalog = {"token": {"expires_at": ends, "catalog": [{
                "type": "object-store", "endpoints": [
                    {"interface": "public", "url": self.fake.address + ACCOUNT}]}]}}
            self.fake.script("POST", "/v3/auth/tokens", *[Answer(
                201, {"X-Subject-Token": TOKEN, "Content-Type": "application/json"},
                json.dumps(catalog).encode())] * 2)
            self.fake.script("GET", "/auth/v1.0", *[Answer(
                200, {"X-Storage-Url": self.fake.address + ACCOUNT, "X-Auth-Token": TOKEN,
                      "X-Auth-Token-Expires": "90"})] * 2)
            self.fake.objects["glance/img"] = b"abc"
            for store, location, method, path in (
                    (self.makeStore(), self.location(), "GET", "/auth/v1.0"),
                    (self.makeStore(authAddress=keystone, authVersion=3),
                     self.location(keystone), "POST", "/v3/auth/tokens")):
                self.assertEqual(await store.get_size(location), 3)
                self.clock.advance(20)
                self.assertEqual(await store.get_size(location), 3)
                self.assertEqual(len(self.fake.uris(method, path)), 1)
                self.clock.advance(20)
                self.assertEqual(await store.get_size(location), 3)
                self.assertEqual(len(self.fake.uris(method, path)), 2)
        return ensureDeferred(go())

    async def sizeNeverAnswered(self) -> Deferred:
        """
        A HEAD Swift never answers, once the store's request timeout has
        passed: the Deferred of its C{get_size}.
        """
        store = self.makeStore()
        self.fake.script("HEAD", IMAGE, HANG)
        arriving = self.fake.waitFor("HEAD", IMAGE)
        size = store.get_size(self.location())
        await arriving
        self.clock.advance(TIMEOUT)
        return size

    def test_aClientLeavingDuringAuthLeavesTheOthers(self):
        """
        Two downloads wait on one authentication, and the client of the one
        that started it goes away: the other still gets its token and its
        bytes.  Before, the cancellation failed every download waiting on
        the token, each with a 503 saying that Swift's auth "did not answer
        in time".
        """
        async def go():
            store = self.makeStore()
            self.fake.objects["glance/img"] = b"abc"
            self.fake.script("GET", "/auth/v1.0", HANG)
            arriving = self.fake.waitFor("GET", "/auth/v1.0")
            first = store.get(self.location())
            await arriving
            second = store.get(self.location())
            first.cancel()
            with self.assertRaises(CancelledError):
                await first
            # The fake holds the request once it has read all of it.
            await deferLater(reactor, 0, lambda: None)
            self.fake.release()
            reader = await second
            collected = Collect()
            await reader.startProducing(collected)
            self.assertEqual(b"".join(collected.received), b"abc")
            self.assertEqual(len(self.fake.uris("GET", "/auth/v1.0")), 1)
        return ensureDeferred(go())

    def test_aClientLeavingIsNoStoreFailure(self):
        """
        A download whose client goes away while Swift has yet to answer is
        cancelled, not a Swift that "did not answer in time": that was
        logged as the store failing, with a traceback, for every client
        that hung up early.
        """
        async def go():
            store = self.makeStore()
            self.fake.objects["glance/img"] = b"abc"
            self.fake.script("GET", IMAGE, HANG)
            arriving = self.fake.waitFor("GET", IMAGE)
            reading = store.get(self.location())
            await arriving
            reading.cancel()
            with self.assertRaises(CancelledError):
                await reading
        return ensureDeferred(go())

    def test_noAnswerInTime(self):
        """
        A request Swift never answers ends after the store's request timeout
        as Swift unavailable.
        """
        async def go():
            with self.assertRaises(StoreUnavailable) as caught:
                await (await self.sizeNeverAnswered())
            self.assertNotIn(TOKEN, str(caught.exception))
        return ensureDeferred(go())

    def test_noAnswerInTimeSaysSo(self):
        """
        A timeout says Swift did not answer in time, not that it cannot be
        reached: twisted's Agent reports a request cancelled while waiting
        for its answer as C{ResponseNeverReceived([CancelledError])}, and an
        operator told "cannot reach Swift" looks at the network when Swift
        was reached and is slow.
        """
        async def go():
            await self.assertFails(await self.sizeNeverAnswered(),
                                   StoreUnavailable, "Swift did not answer HEAD in time")
        return ensureDeferred(go())


class SwiftOnIPv6Tests(TestCase):
    """
    A Swift whose auth address, and the storage URL it hands out, name an
    IPv6 address: every request failed before it was sent, as treq put the
    address through IDNA ("cannot reach Swift's auth (InvalidCodepoint)").
    """

    def test_roundTrip(self):
        fake = FakeSwift()
        fake.serve(self, "::1")
        store = SwiftStore(reactor, _client(self), authAddress=fake.authAddress, user=USER,
                           key=KEY, container="glance", createContainer=True,
                           largeObjectSize=CHUNK, chunkSize=CHUNK, requestTimeout=TIMEOUT)

        async def go():
            data = b"v6" * 250
            stored = await store.add("img", BytesBody(reactor, data))
            self.assertIn("@[::1]:", stored.location)
            self.assertEqual(await store.get_size(stored.location), len(data))
            reader = await store.get(stored.location)
            collected = Collect()
            await reader.startProducing(collected)
            self.assertEqual(b"".join(collected.received), data)
            await store.delete(stored.location)
            self.assertNotIn("glance/img", fake.objects)
        return ensureDeferred(go())
