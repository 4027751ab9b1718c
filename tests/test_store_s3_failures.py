"""
The S3 store when S3 misbehaves: error answers, documents that are cut off,
not XML or missing a field, answers without an ETag or a Content-Length,
answers that never come, and multipart uploads whose parts, completion or
abort fail.

S3 is L{FakeS3}, a small twisted.web resource served on loopback and reached
through a real treq client, so every request the driver sends (its clean-up
included) crosses a real HTTP connection and is seen by the fake; no moto,
Swift or other server is needed.  What matters most: a failed upload leaves
neither an object nor an open multipart upload behind, the caller gets a
L{StoreError} or L{UploadFailed} that says plainly what failed, and no
message or log line shows the secret key or a request's signature.
"""

import re
from itertools import count
from urllib.parse import parse_qs, quote, urlsplit

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, DeferredList, ensureDeferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from glancetx.store import s3
from glancetx.store.cleanup import CLEANUP_FIRST_DELAY
from glancetx.store.interface import (
    BadLocation,
    LocationNotFound,
    StoreError,
    StoreUnavailable,
    UploadFailed,
)
from glancetx.store.s3 import CONTROL_TIMEOUT, S3Location, S3Store
from tests.bodies import BytesBody, readAll
from tests.test_store_s3 import SECRET

ACCESS = "AKIDFAILURES"
KiB = 1024
IMAGE = "image-1"


def serveOnLoopback(testCase, resource) -> int:
    """
    Serve C{resource} on an ephemeral loopback port until the test ends.

    @return: the port number.
    """
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    testCase.addCleanup(port.stopListening)
    return port.getHost().port


# Answers a test puts in place of the fake's own.  Each is a callable
# (request, key) that answers the request, or returns None to let the fake
# answer as S3 would.

def s3Error(status: int, code: str):
    """
    S3's error document with C{status}.  Like S3's own for a bad signature,
    it repeats the access key and the signature the request carried, so
    that a driver copying the document into a message would show them.
    """
    def answer(request, key):
        request.setResponseCode(status)
        signature = b"".join(_signatures(request))
        return (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>%s</Code>"
                b"<Message>refused</Message><AWSAccessKeyId>%s</AWSAccessKeyId>"
                b"<SignatureProvided>%s</SignatureProvided></Error>"
                % (code.encode("ascii"), ACCESS.encode("ascii"), signature))
    return answer


def success(document: bytes):
    """
    200 with C{document}, whatever was asked.
    """
    def answer(request, key):
        return document
    return answer


def cutShort(answer):
    """
    C{answer}'s status and document, but the connection drops ten bytes
    before the promised Content-Length is reached.
    """
    def cut(request, key):
        document = answer(request, key)
        request.setHeader(b"content-length", b"%d" % (len(document) + 10,))
        request.write(document)
        request.transport.loseConnection()
        return NOT_DONE_YET
    return cut


def once(answer):
    """
    C{answer} for the first request only.
    """
    used = []

    def first(request, key):
        if used:
            return None
        used.append(True)
        return answer(request, key)
    return first


def forPart(number: int, answer):
    """
    C{answer} for part C{number} only.
    """
    def part(request, key):
        if int(request.query["partNumber"][0]) != number:
            return None
        return answer(request, key)
    return part


def _signatures(request):
    return re.findall(rb"Signature=([0-9a-f]+)", request.getHeader(b"authorization") or b"")


def _xml(root: str, inner: str) -> bytes:
    return ("<?xml version='1.0' encoding='UTF-8'?>"
            "<%s xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>%s</%s>"
            % (root, inner, root)).encode("utf-8")


class FakeS3(Resource):
    """
    Just enough of S3, for bucket C{images}, to keep objects and multipart
    uploads and to list the open ones.  Every request is classed as one of
    C{start}, C{part}, C{complete}, C{abort}, C{listUploads}, C{put},
    C{get}, C{head}, C{delete}, C{bucketHead} or C{bucketPut}; a test
    replaces the fake's answer to a class through C{answers}.

    @ivar kinds: every request's class, in the order they came.
    @ivar signatures: every signature the requests carried.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.objects = {}
        #: upload id -> (key, {part number: bytes})
        self.uploads = {}
        self.kinds = []
        self.signatures = []
        self.answers = {}
        self._ids = count(1)
        self._unanswered = []

    def render(self, request):
        _, _, key = request.path.decode("ascii").lstrip("/").partition("/")
        # request.args drops a bare "?uploads".
        request.query = parse_qs(urlsplit(request.uri).query.decode("ascii"),
                                 keep_blank_values=True)
        kind = self._kind(request.method, request.query, key)
        self.kinds.append(kind)
        self.signatures.extend(s.decode("ascii") for s in _signatures(request))
        answer = self.answers.get(kind)
        if answer is not None:
            result = answer(request, key)
            if result is not None:
                return result
        return getattr(self, kind)(request, key)

    @staticmethod
    def _kind(method, query, key):
        if not key:
            return {b"HEAD": "bucketHead", b"PUT": "bucketPut", b"GET": "listUploads"}[method]
        if "uploads" in query:
            return "start"
        if "partNumber" in query:
            return "part"
        if "uploadId" in query:
            return {b"POST": "complete", b"DELETE": "abort"}[method]
        return method.decode("ascii").lower()

    def hold(self, kind: str, act: bool = False) -> Deferred:
        """
        Never answer the next request of C{kind} (after doing what S3 would
        with it, if C{act}: S3 did the work, its answer was lost).

        @return: a Deferred that fires once that request has arrived.
        """
        arrived = Deferred()

        def answer(request, key):
            del self.answers[kind]
            if act:
                getattr(self, kind)(request, key)
            self._unanswered.append(request.notifyFinish().addErrback(lambda _: None))
            arrived.callback(request)
            return NOT_DONE_YET
        self.answers[kind] = answer
        return arrived

    def holdBody(self, kind: str, status: int = 200, length: int = 100,
                 first: bytes = b"") -> Deferred:
        """
        Do what S3 would with the next request of C{kind}, then send the
        head of an answer of C{status} promising C{length} bytes, and of
        its body only C{first}.

        @return: a Deferred that fires once that head is sent.
        """
        arrived = Deferred()

        def answer(request, key):
            del self.answers[kind]
            getattr(self, kind)(request, key)
            request.setResponseCode(status)
            request.setHeader(b"content-length", b"%d" % (length,))
            request.write(first)
            self._unanswered.append(request.notifyFinish().addErrback(lambda _: None))
            arrived.callback(request)
            return NOT_DONE_YET
        self.answers[kind] = answer
        return arrived

    def whenUnansweredGone(self) -> Deferred:
        """
        Fire once every held request's connection has gone (the driver
        gave up on it), so that no socket outlives the test.
        """
        return DeferredList(self._unanswered)

    # What S3 would answer.

    def start(self, request, key):
        uploadId = "upload-%d" % (next(self._ids),)
        self.uploads[uploadId] = (key, {})
        return _xml("InitiateMultipartUploadResult",
                    "<Bucket>images</Bucket><Key>%s</Key><UploadId>%s</UploadId>"
                    % (key, uploadId))

    def _upload(self, request):
        return self.uploads.get(request.query["uploadId"][0])

    def part(self, request, key):
        upload = self._upload(request)
        if upload is None:
            return s3Error(404, "NoSuchUpload")(request, key)
        number = int(request.query["partNumber"][0])
        upload[1][number] = request.content.read()
        request.setHeader(b"etag", b'"etag-%d"' % (number,))
        return b""

    def complete(self, request, key):
        upload = self._upload(request)
        if upload is None:
            return s3Error(404, "NoSuchUpload")(request, key)
        del self.uploads[request.query["uploadId"][0]]
        parts = upload[1]
        self.objects[key] = b"".join(parts[n] for n in sorted(parts))
        return _xml("CompleteMultipartUploadResult", "<Key>%s</Key>" % (key,))

    def abort(self, request, key):
        self.uploads.pop(request.query["uploadId"][0], None)
        request.setResponseCode(204)
        return b""

    def listUploads(self, request, key):
        prefix = request.query.get("prefix", [""])[0]
        return _xml("ListMultipartUploadsResult", "".join(
            "<Upload><Key>%s</Key><UploadId>%s</UploadId></Upload>" % (k, uploadId)
            for uploadId, (k, _) in self.uploads.items() if k.startswith(prefix)))

    def put(self, request, key):
        self.objects[key] = request.content.read()
        request.setHeader(b"etag", b'"whole"')
        return b""

    def get(self, request, key):
        if key not in self.objects:
            return s3Error(404, "NoSuchKey")(request, key)
        return self.objects[key]

    def head(self, request, key):
        if key not in self.objects:
            return s3Error(404, "NoSuchKey")(request, key)
        request.setHeader(b"content-length", b"%d" % (len(self.objects[key]),))
        return b""

    def delete(self, request, key):
        self.objects.pop(key, None)
        request.setResponseCode(204)
        return b""

    def bucketHead(self, request, key):
        return b""

    def bucketPut(self, request, key):
        return b""


class _FakeS3Case(TestCase):
    """
    A L{FakeS3} on loopback and stores that talk to it, with parts of 1 KiB
    and anything over 1 KiB sent as a multipart upload.
    """

    def setUp(self):
        self.fake = FakeS3()
        self.port = serveOnLoopback(self, self.fake)
        self.addCleanup(self.fake.whenUnansweredGone)
        self.client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        self.events = []

    def makeStore(self, clock=reactor, **options):
        """
        A store whose log lines are kept in C{self.events}; C{clock} times
        its requests and background clean-up.
        """
        settings = dict(
            secure=False, host="127.0.0.1:%d" % (self.port,), accessKey=ACCESS,
            secretKey=SECRET, bucket="images", urlFormat="path",
            largeObjectSize=KiB, chunkSize=KiB,
        )
        settings.update(options)
        store = S3Store(clock, self.client, **settings)
        store.log = Logger(observer=self.events.append)
        return store

    def location(self, key=IMAGE) -> str:
        return S3Location(False, "127.0.0.1:%d" % (self.port,), ACCESS, SECRET,
                          "images", key).uri()

    async def failedUpload(self, store, size, error, key=IMAGE, exactly=True, **bodyOptions):
        """
        Upload C{size} bytes, expecting the upload to fail with C{error}
        (exactly that class, unless not C{exactly}) and to say nothing
        secret.

        @return: the exception.
        """
        body = BytesBody(reactor, b"x" * size, chunk=KiB // 2, **bodyOptions)
        with self.assertRaises(error) as caught:
            await store.add(key, body)
        if exactly:
            self.assertIs(type(caught.exception), error)
        self.assertPlain(caught.exception)
        return caught.exception

    def assertPlain(self, exception):
        """
        Neither C{exception}'s message nor any log line shows the secret
        key (raw or as a location quotes it), the access key or a signature.
        """
        texts = [str(exception)] + [formatEvent(e) for e in self.events]
        for text in texts:
            for secret in [SECRET, quote(SECRET, safe=""), ACCESS] + self.fake.signatures:
                self.assertNotIn(secret, text)

    async def failsAtControlTimeout(self, clock: Clock, arrived: Deferred,
                                    call: Deferred, settle: float = 0,
                                    timeout: float = CONTROL_TIMEOUT) -> Exception:
        """
        C{call}, whose request C{arrived} at S3 and is never answered, is
        still waiting just before the control time-out and fails at it as
        S3 unavailable, saying nothing secret.

        @param settle: real seconds to wait first (for what S3 sent to
            cross loopback; the time-out is the clock's).
        @return: its exception.
        """
        await arrived
        if settle:
            await deferLater(reactor, settle, lambda: None)
        clock.advance(timeout - 1)
        self.assertNoResult(call)
        clock.advance(1)
        with self.assertRaises(StoreUnavailable) as caught:
            await call
        self.assertPlain(caught.exception)
        return caught.exception

    def assertNothingLeft(self):
        self.assertEqual((self.fake.objects, self.fake.uploads), ({}, {}))

    def assertAborted(self):
        """
        The failed upload ended with its multipart upload aborted, and was
        never completed.
        """
        self.assertEqual(self.fake.kinds[-1], "abort")
        self.assertNotIn("complete", self.fake.kinds)
        self.assertNothingLeft()


class MultipartFailureTests(_FakeS3Case):
    def test_partRefused(self):
        """
        A part S3 refuses with 500 fails the upload as unavailable, naming
        the part and S3's code, and the multipart upload is aborted.
        """
        async def go():
            self.fake.answers["part"] = forPart(2, s3Error(500, "InternalError"))
            e = await self.failedUpload(self.makeStore(), 3 * KiB + 512, StoreUnavailable)
            self.assertEqual(str(e), "S3 part 2 upload failed: 500 InternalError")
            self.assertAborted()
        return ensureDeferred(go())

    def test_partWithoutETag(self):
        """
        A part stored without an ETag cannot be named in the completion:
        the upload fails and is aborted rather than completed without it.
        """
        async def go():
            self.fake.answers["part"] = forPart(1, success(b""))
            e = await self.failedUpload(self.makeStore(), 3 * KiB, StoreError)
            self.assertEqual(str(e), "S3 part 1 upload failed: no ETag in the answer")
            self.assertAborted()
        return ensureDeferred(go())

    def test_lastPartRefused(self):
        """
        The last part is sent only once the body has ended; its failure
        still fails the upload and aborts it, though the body succeeded.
        """
        async def go():
            self.fake.answers["part"] = forPart(3, s3Error(503, "SlowDown"))
            e = await self.failedUpload(self.makeStore(), 2 * KiB + 512, StoreUnavailable)
            self.assertEqual(str(e), "S3 part 3 upload failed: 503 SlowDown")
            self.assertAborted()
        return ensureDeferred(go())

    def test_completionFails(self):
        """
        S3 may refuse the completion with an error status, or answer 200
        and report the failure in the document (or send something that is
        not its result at all): every way, the upload fails and is aborted.
        """
        async def go():
            cases = [
                (s3Error(500, "InternalError"), StoreUnavailable, "500 InternalError"),
                (success(b"<Error><Code>InternalError</Code></Error>"), StoreError,
                 "InternalError"),
                (success(_xml("Something", "<Else/>")), StoreError, "unexpected answer"),
                (success(b"<CompleteMultipartUploadResult"), StoreError, "unexpected answer"),
            ]
            for n, (answer, error, why) in enumerate(cases):
                self.fake.answers["complete"] = answer
                e = await self.failedUpload(self.makeStore(), 2 * KiB, error, key="image-%d" % n)
                self.assertEqual(str(e), "S3 multipart completion failed: " + why)
                self.assertEqual(self.fake.kinds[-1], "abort")
                self.assertNothingLeft()
        return ensureDeferred(go())

    def test_tooManyParts(self):
        """
        A body of unknown length that needs more than S3's most parts fails
        and is aborted once it passes them; a declared length instead makes
        the parts larger, and fits.
        """
        async def go():
            self.patch(s3, "MAX_PARTS", 2)
            store = self.makeStore()
            e = await self.failedUpload(store, 3 * KiB + 512, UploadFailed, knownLength=False)
            self.assertEqual((e.code, str(e)), (413, "image needs more than 2 parts of 1024"
                                                     " bytes; raise s3_store_large_object_chunk_size"))
            self.assertAborted()
            partsBefore = self.fake.kinds.count("part")
            stored = await store.add(IMAGE, BytesBody(reactor, b"y" * (3 * KiB + 512)))
            self.assertEqual(stored.size, 3 * KiB + 512)
            self.assertEqual(self.fake.kinds.count("part") - partsBefore, 2)
            self.assertEqual(self.fake.objects, {IMAGE: b"y" * (3 * KiB + 512)})
        return ensureDeferred(go())

    def test_bodyEndsShort(self):
        """
        A body that ends, without failing, short of its declared length is
        the client's fault (400), and the parts already sent are given back.
        """
        async def go():
            body = BytesBody(reactor, b"x" * (2 * KiB + 512), chunk=KiB // 2)
            body.length = 3 * KiB
            with self.assertRaises(UploadFailed) as caught:
                await self.makeStore().add(IMAGE, body)
            self.assertEqual((caught.exception.code, caught.exception.message),
                             (400, "the body ended after 2560 of 3072 bytes"))
            self.assertAborted()
        return ensureDeferred(go())

    def test_abortRetriedWhileStoreDown(self):
        """
        An abort that meets a store answering 503 does not hide why the
        upload failed; it is retried in the background until it goes
        through, and then nothing is left.
        """
        async def go():
            clock = Clock()
            store = self.makeStore(clock)
            self.fake.answers["part"] = forPart(1, s3Error(500, "InternalError"))
            self.fake.answers["abort"] = once(s3Error(503, "SlowDown"))
            e = await self.failedUpload(store, 2 * KiB, StoreUnavailable)
            self.assertEqual(str(e), "S3 part 1 upload failed: 500 InternalError")
            self.assertEqual(store.pendingCleanups(), 1)
            self.assertEqual(len(self.fake.uploads), 1)
            clock.advance(CLEANUP_FIRST_DELAY)
            await store.whenCleanedUp()
            self.assertEqual(self.fake.kinds.count("abort"), 2)
            self.assertAborted()
            self.assertPlain(e)
        return ensureDeferred(go())


class SilenceAfterTheBytesTests(_FakeS3Case):
    """
    S3 that takes a request's every byte and never answers: the upload
    fails once the answer is L{CONTROL_TIMEOUT} late (not before, however
    slowly the bytes came), and leaves nothing.
    """

    async def silentUpload(self, kind: str, size: int) -> Exception:
        clock = Clock()
        arrived = self.fake.hold(kind, act=True)
        added = self.makeStore(clock).add(IMAGE, BytesBody(reactor, b"x" * size, chunk=KiB // 2))
        return await self.failsAtControlTimeout(clock, arrived, added)

    def test_partNeverAnswered(self):
        async def go():
            e = await self.silentUpload("part", 3 * KiB + 512)
            self.assertRegex(str(e), r"^S3 part \d upload timed out$")
            self.assertAborted()
        return ensureDeferred(go())

    def test_configuredTimeout(self):
        """
        The answer's time-out is C{requestTimeout} as configured, here 7
        seconds rather than 60.
        """
        async def go():
            clock = Clock()
            arrived = self.fake.hold("put", act=True)
            added = self.makeStore(clock, requestTimeout=7.0).add(
                IMAGE, BytesBody(reactor, b"x" * 512, chunk=KiB // 2))
            e = await self.failsAtControlTimeout(clock, arrived, added, timeout=7.0)
            self.assertEqual(str(e), "S3 upload timed out")
        return ensureDeferred(go())

    def test_putNeverAnswered(self):
        async def go():
            e = await self.silentUpload("put", 512)
            self.assertEqual(str(e), "S3 upload timed out")
            self.assertEqual(self.fake.kinds[-2:], ["put", "delete"])
            self.assertNothingLeft()
        return ensureDeferred(go())


class SilenceInTheAnswerTests(_FakeS3Case):
    """
    S3 that sends an answer's head and then nothing of its body: whatever
    waits on the body fails once it has been silent for L{CONTROL_TIMEOUT}
    (its request's own deadline ended with the head), rather than waiting
    for good.  An upload then leaves nothing behind.
    """

    async def failsWhenSilent(self, clock: Clock, arrived: Deferred,
                              call: Deferred) -> Exception:
        """
        C{call}, whose answer's head was sent when C{arrived} fired and
        whose body never comes, fails once it has been silent for the
        limit, not before.
        """
        return await self.failsAtControlTimeout(clock, arrived, call, settle=0.3)

    def test_completionAnswerSilent(self):
        async def go():
            clock = Clock()
            arrived = self.fake.holdBody("complete")
            added = self.makeStore(clock).add(
                IMAGE, BytesBody(reactor, b"x" * (3 * KiB), chunk=KiB // 2))
            e = await self.failsWhenSilent(clock, arrived, added)
            self.assertIn("sent nothing of its answer for 60 seconds", str(e))
            self.assertNothingLeft()
        return ensureDeferred(go())

    def test_refusalSilent(self):
        """
        A refusal whose error document never comes is still a failure, in
        time.
        """
        async def go():
            clock = Clock()
            arrived = self.fake.holdBody("put", status=500)
            added = self.makeStore(clock).add(IMAGE, BytesBody(reactor, b"x" * 512))
            e = await self.failsWhenSilent(clock, arrived, added)
            self.assertIn("500", str(e))
        return ensureDeferred(go())

    def test_deleteAnswerSilent(self):
        """
        A delete S3 answered with a success whose document never comes is
        done once the limit passes.
        """
        async def go():
            clock = Clock()
            self.fake.objects[IMAGE] = b"old"
            arrived = self.fake.holdBody("delete", status=200)
            deleted = self.makeStore(clock).delete(self.location())
            await arrived
            await deferLater(reactor, 0.3, lambda: None)
            self.assertNoResult(deleted)
            clock.advance(CONTROL_TIMEOUT)
            await deleted
            self.assertNothingLeft()
        return ensureDeferred(go())

    def test_downloadGoesSilent(self):
        """
        A download whose body stops is failed after the limit; one its
        client has paused (a slow client) is not.
        """
        async def go():
            clock = Clock()
            self.fake.objects[IMAGE] = b"y" * 1000
            arrived = self.fake.holdBody("get", length=1000, first=b"y" * 10)
            reader = await self.makeStore(clock).get(self.location())
            received = []

            class Consumer:
                def write(self, data):
                    received.append(data)
            done = reader.startProducing(Consumer())
            await arrived
            while not received:
                await deferLater(reactor, 0.01, lambda: None)
            reader.pauseProducing()
            clock.advance(10 * CONTROL_TIMEOUT)
            self.assertNoResult(done)
            reader.resumeProducing()
            clock.advance(CONTROL_TIMEOUT - 1)
            self.assertNoResult(done)
            clock.advance(1)
            with self.assertRaises(StoreError):
                await done
            self.assertEqual(b"".join(received), b"y" * 10)
        return ensureDeferred(go())


class StartFailureTests(_FakeS3Case):
    def test_startAnswerLost(self):
        """
        S3 began the multipart upload, but its answer was cut off or never
        came: the upload's id is unknown, so the store looks for uploads
        open at the image's key and aborts them.
        """
        async def go():
            self.fake.answers["start"] = cutShort(self.fake.start)
            e = await self.failedUpload(self.makeStore(), 2 * KiB, StoreUnavailable)
            self.assertTrue(str(e).startswith(
                "S3 multipart start failed: reading the answer (ResponseFailed"), str(e))
            self.assertEqual(self.fake.kinds[-2:], ["listUploads", "abort"])
            self.assertNothingLeft()

            clock = Clock()
            arrived = self.fake.hold("start", act=True)
            upload = ensureDeferred(self.failedUpload(
                self.makeStore(clock), 2 * KiB, StoreUnavailable))
            await arrived
            clock.advance(CONTROL_TIMEOUT)
            e = await upload
            self.assertTrue(str(e).startswith("S3 multipart start "), str(e))
            self.assertEqual(self.fake.kinds[-2:], ["listUploads", "abort"])
            self.assertNothingLeft()
        return ensureDeferred(go())

    def test_startAnswerWithoutUploadId(self):
        """
        S3 answered 200 to the multipart start, so it began an upload, but
        the answer names no upload id.  The upload fails, and the upload S3
        began is looked for and aborted, as when the answer is cut off.
        """
        async def go():
            def began(request, key):
                self.fake.start(request, key)
                return _xml("InitiateMultipartUploadResult", "<Key>%s</Key>" % (key,))
            self.fake.answers["start"] = began
            e = await self.failedUpload(self.makeStore(), 2 * KiB, StoreError, exactly=False)
            self.assertEqual(str(e), "S3 multipart start failed: no upload id in the answer")
            self.assertNothingLeft()
        return ensureDeferred(go())

    def test_listingNotXML(self):
        """
        A start that met a 503 may have begun an upload; a listing that is
        not XML is logged (not retried: waiting will not mend it), and the
        caller still learns why the upload failed, not why the search did.
        """
        async def go():
            self.fake.answers["start"] = s3Error(503, "SlowDown")
            self.fake.answers["listUploads"] = success(b"<<not xml")
            store = self.makeStore()
            e = await self.failedUpload(store, 2 * KiB, StoreUnavailable)
            self.assertEqual(str(e), "S3 multipart start failed: 503 SlowDown")
            self.assertEqual(self.fake.kinds[-1], "listUploads")
            self.assertIn("S3 multipart listing failed: the answer is not XML",
                          formatEvent(self.events[-1]))
            self.assertEqual(store.pendingCleanups(), 0)
        return ensureDeferred(go())


class SinglePutFailureTests(_FakeS3Case):
    def test_bodyFailsAfterEveryByte(self):
        """
        A body that fails once every byte is out (a bad checksum) is the
        failure the caller sees, whether S3 then stored the object or
        answered 500, and no object is left.
        """
        async def go():
            for answer in (None, s3Error(500, "InternalError")):
                self.fake.answers["put"] = answer
                e = await self.failedUpload(self.makeStore(), 512, UploadFailed, failAfter=512)
                self.assertEqual(e.message, "client went away")
                self.assertEqual(self.fake.kinds[-2:], ["put", "delete"])
                self.assertNothingLeft()
        return ensureDeferred(go())

    def test_badImageId(self):
        """
        An image id that would leave the bucket's root is refused before
        anything is sent.
        """
        async def go():
            for imageId in ("", "/abs", "../up", "a/../b"):
                with self.assertRaises(BadLocation):
                    await self.makeStore().add(imageId, BytesBody(reactor, b"x"))
            self.assertEqual(self.fake.kinds, [])
        return ensureDeferred(go())

    def test_bucketCreation(self):
        """
        With bucket creation on, the bucket check and the creation map S3's
        answers like any other request; a bucket already ours is fine, one
        that is someone else's is not, and outside us-east-1 the creation
        names the region.
        """
        async def go():
            cases = [
                ({"bucketHead": s3Error(503, "SlowDown")}, StoreUnavailable,
                 "S3 bucket check failed: 503"),
                ({"bucketHead": s3Error(403, "AccessDenied")}, StoreError,
                 "S3 bucket check failed: 403"),
                ({"bucketHead": s3Error(404, "NoSuchBucket"),
                  "bucketPut": s3Error(409, "BucketAlreadyExists")}, StoreError,
                 "S3 bucket creation failed: 409 BucketAlreadyExists"),
            ]
            for answers, error, message in cases:
                self.fake.answers = answers
                e = await self.failedUpload(self.makeStore(createBucket=True), 10, error)
                self.assertEqual(str(e), message)
            self.assertNotIn("put", self.fake.kinds)
            creations = []

            def alreadyOurs(request, key):
                creations.append(request.content.read())
                return s3Error(409, "BucketAlreadyOwnedByYou")(request, key)
            self.fake.answers = {"bucketHead": s3Error(404, "NoSuchBucket"),
                                 "bucketPut": alreadyOurs}
            store = self.makeStore(createBucket=True, region="eu-west-1")
            await store.add(IMAGE, BytesBody(reactor, b"hello"))
            self.assertEqual(self.fake.objects, {IMAGE: b"hello"})
            self.assertIn(b"<LocationConstraint>eu-west-1</LocationConstraint>", creations[0])
        return ensureDeferred(go())


class ReadFailureTests(_FakeS3Case):
    def test_errorStatuses(self):
        """
        GET, HEAD and DELETE map S3's answers the same way: 5xx is
        unavailable, 404 is not found (and a delete of nothing succeeds),
        anything else is a plain store error.  A message has S3's code
        (HEAD answers have no document), or only the status when the
        document is cut off, and never the signature S3 echoes.
        """
        async def go():
            store = self.makeStore()
            operations = [
                (store.get, "get", "download"),
                (store.get_size, "head", "size lookup"),
                (store.delete, "delete", "delete"),
            ]
            answers = [
                (500, "InternalError", StoreUnavailable),
                (503, "SlowDown", StoreUnavailable),
                (404, "NoSuchKey", LocationNotFound),
                (403, "SignatureDoesNotMatch", StoreError),
                (400, "InvalidRequest", StoreError),
            ]
            for operation, kind, what in operations:
                cases = [(s3Error(status, code), error, "%d %s" % (status, code))
                         for status, code, error in answers]
                if kind == "head":
                    cases = [(answer, error, why.split()[0]) for answer, error, why in cases]
                else:
                    cases.append((cutShort(s3Error(503, "SlowDown")), StoreUnavailable, "503"))
                for answer, error, why in cases:
                    self.fake.answers = {kind: answer}
                    if kind == "delete" and error is LocationNotFound:
                        await operation(self.location())
                        continue
                    with self.assertRaises(error) as caught:
                        await operation(self.location())
                    self.assertIs(type(caught.exception), error)
                    self.assertEqual(str(caught.exception), "S3 %s failed: %s" % (what, why))
                    self.assertPlain(caught.exception)
        return ensureDeferred(go())

    def test_answerWithoutLength(self):
        """
        A 200 without a Content-Length (chunked GET, bare HEAD) gives no size
        to promise the client: a store error, not a guess.
        """
        async def go():
            def chunked(request, key):
                request.write(b"some bytes")
                request.finish()
                return NOT_DONE_YET
            self.fake.answers = {"get": chunked, "head": success(b"")}
            store = self.makeStore()
            with self.assertRaises(StoreError) as caught:
                await store.get(self.location())
            self.assertEqual(str(caught.exception),
                             "S3 download failed: no Content-Length in the answer")
            with self.assertRaises(StoreError) as caught:
                await store.get_size(self.location())
            self.assertEqual(str(caught.exception),
                             "S3 size lookup failed: no Content-Length in the answer")
        return ensureDeferred(go())

    def test_successWithBrokenBody(self):
        """
        S3 did what was asked when it says so: a success whose document
        then breaks off is still a success (the document is read only so
        the connection can be reused).
        """
        async def go():
            def deleted(request, key):
                self.fake.delete(request, key)
                request.setResponseCode(200)
                return b"<DeleteResult/>"
            self.fake.objects[IMAGE] = b"old"
            self.fake.answers["delete"] = cutShort(deleted)
            await self.makeStore().delete(self.location())
            self.assertNothingLeft()
        return ensureDeferred(go())

    async def sizeLookupTimedOut(self):
        """
        Hold a HEAD unanswered; the size lookup must still be waiting just
        before the control time-out and fail at it.

        @return: its exception.
        """
        clock = Clock()
        arrived = self.fake.hold("head")
        size = self.makeStore(clock).get_size(self.location())
        return await self.failsAtControlTimeout(clock, arrived, size)

    def test_noAnswerInTime(self):
        """
        S3 that never answers a HEAD is unavailable after the control
        time-out, not a wait for ever.
        """
        async def go():
            e = await self.sizeLookupTimedOut()
            self.assertTrue(str(e).startswith("S3 size lookup "), str(e))
        return ensureDeferred(go())

    def test_timeoutSaysSo(self):
        """
        A time-out is reported as one.  The agent fails a request cancelled
        once it is sent with ResponseNeverReceived (wrapping the
        CancelledError), which was once reported as "cannot reach the store".
        """
        async def go():
            e = await self.sizeLookupTimedOut()
            self.assertEqual(str(e), "S3 size lookup timed out")
        return ensureDeferred(go())

    def test_callerGivesUp(self):
        """
        A request the caller cancels (its client went away) fails with
        CancelledError, not as a store that is down, although the agent
        wraps the CancelledError in ResponseNeverReceived.
        """
        async def go():
            arrived = self.fake.hold("get")
            download = self.makeStore(Clock()).get(self.location())
            await arrived
            download.cancel()
            with self.assertRaises(CancelledError):
                await download
        return ensureDeferred(go())


class S3OnIPv6Tests(_FakeS3Case):
    """
    An S3 endpoint named by an IPv6 address: every request failed before
    it was sent (treq put the address through IDNA), and the exception
    escaped the driver as an unexpected error, a 500.
    """

    def test_roundTrip(self):
        port = reactor.listenTCP(0, Site(self.fake), interface="::1")
        self.addCleanup(port.stopListening)
        host = "[::1]:%d" % (port.getHost().port,)
        store = self.makeStore(host=host)

        async def go():
            data = b"v6" * (3 * KiB)
            stored = await store.add(IMAGE, BytesBody(reactor, data, chunk=KiB // 2))
            self.assertEqual(self.fake.objects, {IMAGE: data})
            self.assertIn("@" + host + "/", stored.location)
            self.assertEqual(await store.get_size(stored.location), len(data))
            self.assertEqual(await readAll(reactor, await store.get(stored.location)), data)
            await store.delete(stored.location)
            self.assertEqual(self.fake.objects, {})
        return ensureDeferred(go())
