"""
The streaming request, driven byte by byte through a real HTTPChannel on a
StringTransport: bodies reach the store while they are still arriving, and
the socket stops being read when the store pushes back.
"""

import datetime

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import UNKNOWN_LENGTH

from glancetx.config import Config
from glancetx.registry.registry import ImageRecord
from glancetx.service import GlanceSite
from glancetx.store.interface import UploadFailed
from glancetx.web import streaming
from glancetx.web.app import GlanceAPI
from glancetx.web.streaming import VerifyingBody
from tests.bodies import PushBody
from tests.test_drain import FakeReactor, recordJobs, runJob


def record(**kw):
    now = datetime.datetime(2020, 1, 1)
    fields = dict(id="00000000-0000-0000-0000-000000000001", name="x", disk_format="raw",
                  container_format="bare", size=None, virtual_size=None, status="active",
                  is_public=False, checksum=None, min_disk=0, min_ram=0, owner="admin",
                  protected=False, created_at=now, updated_at=now, deleted_at=None,
                  deleted=False)
    fields.update(kw)
    return ImageRecord(**fields)


class RecordingConsumer:
    """
    Stands in for a store's consumer; pauses its producer on request.
    """

    def __init__(self, pauseAfter=None):
        self.chunks = []
        self.producer = None
        self.pauseAfter = pauseAfter

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        self.chunks.append(data)
        if self.pauseAfter is not None and sum(map(len, self.chunks)) >= self.pauseAfter:
            self.pauseAfter = None
            self.producer.pauseProducing()

    def received(self):
        return b"".join(self.chunks)


class StoreLikeService:
    """
    The image service's create, reduced to starting the body into a
    consumer and answering when it ends.
    """

    def __init__(self, consumer):
        self.consumer = consumer
        self.calls = []
        self.failures = []
        self.started = Deferred()

    def create(self, ctx, changes, body):
        self.calls.append(changes)
        self.consumer.registerProducer(body, True)
        done = body.startProducing(self.consumer)
        done.addErrback(lambda f: (self.failures.append(f), f)[1])
        self.started.callback(body)
        return done.addCallback(lambda _: record(size=len(self.consumer.received())))

    def sent(self, ctx, image, sent, destination=None):
        pass


HEAD = (b"POST /v1/images HTTP/1.1\r\nHost: example\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"x-image-meta-name: x\r\n")


class StreamingRequestTests(SynchronousTestCase):
    def connect(self, consumer, transport=None):
        self.clock = Clock()
        self.service = StoreLikeService(consumer)
        api = GlanceAPI(self.service, Config())
        site = GlanceSite(api, self.clock)
        self.channel = site.buildProtocol(None)
        self.transport = transport or StringTransport()
        self.channel.makeConnection(self.transport)
        return self.channel

    def test_pendingRequestLine(self):
        """
        The private names streaming.py reads at gotLength time still hold
        the request line on the installed Twisted.
        """
        channel = self.connect(RecordingConsumer())
        seen = []

        class Probe(streaming.StreamingRequest):
            def gotLength(self, length):
                seen.append(streaming.pendingRequestLine(self.channel))
                super().gotLength(length)

        channel.requestFactory = Probe
        channel.dataReceived(b"PUT /v1/images/abc?x=1 HTTP/1.1\r\nHost: h\r\n"
                             b"Content-Length: 1\r\n\r\n")
        self.assertEqual(seen, [(b"PUT", b"/v1/images/abc?x=1", b"HTTP/1.1")])

    def test_queryThatIsNotUTF8(self):
        """
        An upload whose query string escapes bytes that are not UTF-8 is
        dispatched with its arguments as bytes, as twisted.web parses them
        for every other request, and answered: the parse once raised in a
        timed call and the client waited forever.
        """
        consumer = RecordingConsumer()
        channel = self.connect(consumer)
        seen = []
        original = channel.requestFactory

        class Probe(original):
            def process(self):
                seen.append(self.args)
                super().process()

        channel.requestFactory = Probe
        channel.dataReceived(b"POST /v1/images?x=%ff%fe&y=%e9;z=1 HTTP/1.1\r\nHost: h\r\n"
                             b"x-image-meta-name: x\r\nContent-Length: 3\r\n\r\nabc")
        self.clock.advance(0)
        self.assertEqual(seen, [{b"x": [b"\xff\xfe"], b"y": [b"\xe9"], b"z": [b"1"]}])
        self.assertEqual(consumer.received(), b"abc")
        self.assertIn(b"HTTP/1.1 201 Created", self.transport.value())

    def test_bytesReachStoreBeforeBodyEnds(self):
        consumer = RecordingConsumer()
        channel = self.connect(consumer)
        channel.dataReceived(HEAD + b"Content-Length: 10000\r\n\r\n" + b"a" * 3000)
        self.clock.advance(0)
        self.assertTrue(self.service.started.called)
        self.assertEqual(consumer.received(), b"a" * 3000)
        channel.dataReceived(b"b" * 3000)
        self.assertEqual(consumer.received(), b"a" * 3000 + b"b" * 3000)
        # No response yet: the body has not ended.
        self.assertNotIn(b"HTTP/1.1 201", self.transport.value())
        channel.dataReceived(b"c" * 4000)
        self.clock.advance(0)
        self.assertEqual(len(consumer.received()), 10000)
        self.assertIn(b"HTTP/1.1 201 Created", self.transport.value())

    def test_uploadsOverTLSReadInLargePieces(self):
        """
        An upload's reads grow to UPLOAD_READ_SIZE on the TCP transport,
        beneath TLS too: set on the TLS protocol, the size changed nothing,
        and TLS uploads read 64 KiB at a time (about 50 against 60-75 MB/s
        for 256 MiB over TLS with curl, on one machine).
        """
        from glancetx.web.streaming import UPLOAD_READ_SIZE

        class TCP:
            def __init__(self):
                self._tempDataBuffer = []
                self.bufferSize = 65536

        class TLS(StringTransport):
            def __init__(self):
                super().__init__()
                self.transport = TCP()

        for transport, tcp in ((StringTransport(), None), (TLS(), "beneath")):
            transport.bufferSize = 65536
            channel = self.connect(RecordingConsumer(), transport)
            channel.dataReceived(HEAD + b"Content-Length: 10000\r\n\r\n")
            reads = transport.transport if tcp else transport
            self.assertEqual(reads.bufferSize, UPLOAD_READ_SIZE)

    def test_chunkedBodyStreams(self):
        consumer = RecordingConsumer()
        channel = self.connect(consumer)
        channel.dataReceived(HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        self.clock.advance(0)
        body = self.successResultOf(self.service.started)
        self.assertIs(body.length, UNKNOWN_LENGTH)
        self.assertEqual(consumer.received(), b"hello")
        channel.dataReceived(b"6\r\n world\r\n0\r\n\r\n")
        self.clock.advance(0)
        self.assertEqual(consumer.received(), b"hello world")
        self.assertIn(b"201 Created", self.transport.value())

    def pushedBack(self):
        """
        An upload whose store paused it after its first 1000 bytes.
        """
        consumer = RecordingConsumer(pauseAfter=1)
        channel = self.connect(consumer)
        channel.dataReceived(HEAD + b"Content-Length: 20000000\r\n\r\n" + b"x" * 1000)
        self.clock.advance(0)
        body = self.successResultOf(self.service.started)
        self.assertEqual(self.transport.producerState, "paused")
        return consumer, channel, body

    def test_storePushBackPausesSocket(self):
        consumer, channel, body = self.pushedBack()
        # The channel may resume its transport by itself (its send buffer
        # drained); bytes past the high mark pause it again.
        self.transport.producerState = "producing"
        channel.dataReceived(b"y" * (streaming.HIGH_WATER + 1))
        self.assertEqual(self.transport.producerState, "paused")
        self.assertEqual(len(consumer.received()), 1000)
        body.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(len(consumer.received()), 1000 + streaming.HIGH_WATER + 1)

    def test_storePushBackIsNotIdleness(self):
        """
        While the store holds the socket paused the client cannot send, so
        the connection's idle timeout waits; it runs again from the resume,
        and still closes a client that stops sending by itself.
        """
        consumer, channel, body = self.pushedBack()
        self.clock.advance(channel.timeOut * 10)
        self.assertFalse(self.transport.disconnecting)
        body.resumeProducing()
        self.clock.advance(channel.timeOut - 1)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)

    def test_expectContinueOnlyOnceAccepted(self):
        consumer = RecordingConsumer()
        channel = self.connect(consumer)
        channel.dataReceived(HEAD + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        self.assertNotIn(b"100 Continue", self.transport.value())
        self.clock.advance(0)
        self.assertIn(b"HTTP/1.1 100 Continue", self.transport.value())

    def test_refusedUploadNeverContinues(self):
        channel = self.connect(RecordingConsumer())
        channel.dataReceived(
            b"POST /v1/images HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n"
            b"Expect: 100-continue\r\nContent-Length: 3000000\r\n\r\n")
        self.clock.advance(0)
        out = self.transport.value()
        self.assertNotIn(b"100 Continue", out)
        self.assertIn(b"400 Bad Request", out)
        self.assertIn(b"\r\nconnection: close", out.split(b"\r\n\r\n")[0].lower())
        self.assertEqual(self.service.calls, [])

    def test_clientGoneFailsBody(self):
        consumer = RecordingConsumer()
        channel = self.connect(consumer)
        channel.dataReceived(HEAD + b"Content-Length: 100\r\n\r\n" + b"a" * 10)
        self.clock.advance(0)
        self.successResultOf(self.service.started)
        from twisted.python.failure import Failure
        from twisted.internet.error import ConnectionLost
        channel.connectionLost(Failure(ConnectionLost()))
        [failure] = self.service.failures
        self.assertIsInstance(failure.value, UploadFailed)

    def test_abortDropsTheClient(self):
        """
        The server ending an upload (it is shutting down) drops the
        client's connection, and the body fails saying why.
        """
        consumer = RecordingConsumer()
        channel = self.connect(consumer)
        channel.dataReceived(HEAD + b"Content-Length: 100\r\n\r\n" + b"a" * 10)
        self.clock.advance(0)
        body = self.successResultOf(self.service.started)
        body.abort()
        self.assertTrue(self.transport.disconnecting)
        from twisted.internet.error import ConnectionAborted
        from twisted.python.failure import Failure
        channel.connectionLost(Failure(ConnectionAborted()))
        [failure] = self.service.failures
        self.assertEqual(failure.value.message, "the server is shutting down")

    def refuseAtOnce(self):
        """
        A service that answers an upload with a 413 as soon as it starts,
        while the body is still arriving.
        """
        from glancetx import errors
        channel = self.connect(RecordingConsumer())
        self.service.create = lambda ctx, changes, body: fail(errors.TooLarge("too big"))
        channel.dataReceived(HEAD + b"Content-Length: %d\r\n\r\n" % (10 * streaming.DRAIN_MAX,)
                             + b"a" * 10)
        self.clock.advance(0)
        return channel

    def test_earlyAnswerWaitsForTheClientToStop(self):
        """
        An upload answered before its body has arrived is answered at once,
        but the rest of the body is read and dropped for a while before the
        connection closes, so the client reads the answer rather than a
        reset.
        """
        channel = self.refuseAtOnce()
        self.assertIn(b"413", self.transport.value())
        # It says it will close, so the client does not reuse the connection.
        head = self.transport.value().split(b"\r\n\r\n")[0].lower()
        self.assertIn(b"\r\nconnection: close", head)
        channel.dataReceived(b"b" * 1024)
        self.clock.advance(streaming.DRAIN_SECONDS - 1)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.clock.advance(0)
        self.assertTrue(self.transport.disconnecting)

    def test_earlyAnswerDrainsBoundedBytes(self):
        """
        A client that goes on sending after the answer has the connection
        closed once DRAIN_MAX bytes have been dropped, before the time is up.
        """
        channel = self.refuseAtOnce()
        piece = b"c" * (1024 * 1024)
        for _ in range(streaming.DRAIN_MAX // len(piece)):
            channel.dataReceived(piece)
        self.clock.advance(0)
        self.assertFalse(self.transport.disconnecting)
        channel.dataReceived(b"d")
        self.clock.advance(0)
        self.assertTrue(self.transport.disconnecting)
        # The drain's timer went with it (the channel's idle timeout stays).
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()],
                         [self.channel.timeOut])

    def test_smallBodyPastTheCapStaysDropped(self):
        """
        The parts of a small body after the one that passed the cap are
        not kept either.
        """
        channel = self.connect(RecordingConsumer())
        part = b"x" * (streaming.SMALL_BODY_MAX // 2 + 1000)
        channel.dataReceived(
            b"PUT /v1/images/abc/members HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n"
            % (4 * len(part),))
        [request] = channel.requests
        channel.dataReceived(part + part)  # past the cap
        kept = request._smallSize
        channel.dataReceived(part)
        self.assertEqual((bytes(request._small), request._smallSize), (b"", kept))
        channel.dataReceived(part)
        self.assertIn(b"413", self.transport.value())

    def test_smallBodiesAreCapped(self):
        channel = self.connect(RecordingConsumer())
        channel.dataReceived(
            b"PUT /v1/images/abc/members HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n"
            % (streaming.SMALL_BODY_MAX + 10,) + b"x" * (streaming.SMALL_BODY_MAX + 10))
        self.assertIn(b"413", self.transport.value())


class IsUploadTests(SynchronousTestCase):
    def test_uploadRoutes(self):
        api = GlanceAPI(StoreLikeService(RecordingConsumer()), Config())
        for method, path, upload in [
                (b"POST", b"/v1/images", True), (b"PUT", b"/v1/images/abc", True),
                (b"GET", b"/v1/images", False), (b"HEAD", b"/v1/images/abc", False),
                (b"PUT", b"/v1/images/abc/members", False),
                (b"POST", b"/v1/images/abc", False), (b"DELETE", b"/v1/images/abc", False),
                (b"PUT", b"/v1/images/\xff", False)]:
            self.assertIs(api.isUpload(method, path), upload, (method, path))


class VerifyingBodyTests(SynchronousTestCase):
    def run_(self, chunks, **kw):
        source = PushBody()
        body = VerifyingBody(source, **kw)
        consumer = RecordingConsumer()
        d = body.startProducing(consumer)
        for c in chunks:
            source.consumer.write(c)
        if not d.called:
            source.done.callback(None)
        return body, source, consumer, d

    def test_countsAndHashes(self):
        body, _, consumer, d = self.run_([b"ab", b"c"], cap=10)
        self.successResultOf(d)
        self.assertEqual((body.size, body.checksum), (3, "900150983cd24fb0d6963f7d28e17f72"))
        self.assertEqual(consumer.received(), b"abc")

    def test_capFailsAtOnce(self):
        body, source, consumer, d = self.run_([b"12345", b"67890", b"x"], cap=8)
        self.assertEqual(self.failureResultOf(d, UploadFailed).value.code, 413)
        self.assertTrue(source.stopped)
        self.assertEqual(consumer.received(), b"12345")

    def test_declaredSizePassed(self):
        body, source, _, d = self.run_([b"12345", b"6"], cap=100, expectedSize=5)
        self.assertEqual(self.failureResultOf(d, UploadFailed).value.code, 400)
        self.assertTrue(source.stopped)

    def test_declaredSizeShort(self):
        _, _, _, d = self.run_([b"123"], cap=100, expectedSize=5)
        self.assertEqual(self.failureResultOf(d, UploadFailed).value.code, 400)

    def test_checksumMismatch(self):
        _, _, _, d = self.run_([b"abc"], cap=100, expectedChecksum="0" * 32)
        self.assertIn("checksum", self.failureResultOf(d, UploadFailed).value.message)

    def test_checksumMatch(self):
        _, _, _, d = self.run_([b"abc"], cap=100,
                               expectedChecksum="900150983cd24fb0d6963f7d28e17f72")
        self.successResultOf(d)

    def test_hashFailureFailsTheBody(self):
        """
        If the hash cannot be finished, the body fails rather than hangs.
        """
        class BrokenHasher:
            backlog = 0
            onDrained = None

            def update(self, data):
                pass

            def hexdigest(self):
                return fail(MemoryError())
        _, _, _, d = self.run_([b"abc"], cap=100, hasher=BrokenHasher())
        self.failureResultOf(d, MemoryError)


class ThreadedMD5Tests(SynchronousTestCase):
    """
    Hashing on a pool: in order, and the body is held back while the hash
    lags behind.
    """

    def test_orderAndBacklog(self):
        import hashlib

        jobs = recordJobs(self)
        hasher = streaming.ThreadedMD5(FakeReactor(), None)
        source = PushBody()
        body = VerifyingBody(source, cap=10 ** 9, hasher=hasher)
        paused = []
        source.pauseProducing = lambda: paused.append(True)
        resumed = []
        source.resumeProducing = lambda: resumed.append(True)
        consumer = RecordingConsumer()
        d = body.startProducing(consumer)
        chunk = b"a" * (1024 * 1024)
        for _ in range(4):
            source.consumer.write(chunk)
        # One job started with the first chunk; the backlog passed the high
        # mark (a 1 MiB share), so the body is paused.
        self.assertEqual(len(jobs), 1)
        self.assertEqual(paused, [True])
        self.assertEqual(hasher.backlog, 4 * len(chunk))
        source.done.callback(None)
        self.assertNoResult(d)  # the checksum waits for the hash to finish
        # The job hashes all four, and the body resumes once it is back
        # at the low mark.
        runJob(jobs)
        self.assertEqual(resumed, [True])
        self.assertEqual(jobs, [])
        self.successResultOf(d)
        self.assertEqual(body.checksum, hashlib.md5(chunk * 4).hexdigest())

    def test_backlogFollowsShare(self):
        """
        The hasher may fall as far behind as the body's share of the upload
        budget allows: with a 4 MiB share, four 1 MiB chunks do not pause.
        """
        from glancetx.budget import SharedBudget

        recordJobs(self)
        hasher = streaming.ThreadedMD5(FakeReactor(), None)
        source = PushBody()
        share = SharedBudget(total=4 * 1024 * 1024).join()
        body = VerifyingBody(source, cap=10 ** 9, hasher=hasher, share=share)
        paused = []
        source.pauseProducing = lambda: paused.append(True)
        body.startProducing(RecordingConsumer())
        for _ in range(4):
            source.consumer.write(b"a" * (1024 * 1024))
        self.assertEqual(paused, [])
        source.consumer.write(b"a")
        self.assertEqual(paused, [True])

    def test_shortReadsWaitForTheLowMark(self):
        """
        Short reads are hashed once they reach the share's low mark (a
        megabyte of 4 MiB); the digest takes the short rest.
        """
        import hashlib

        from glancetx.budget import SharedBudget

        jobs = recordJobs(self)
        hasher = streaming.ThreadedMD5(FakeReactor(), None, SharedBudget(4 << 20).join())
        piece = b"q" * (256 * 1024)
        for _ in range(3):
            hasher.update(piece)
        self.assertEqual(jobs, [])
        hasher.update(piece)
        runJob(jobs)
        hasher.update(b"end")
        self.assertEqual(jobs, [])
        digest = hasher.hexdigest()
        runJob(jobs)
        self.assertEqual(self.successResultOf(digest),
                         hashlib.md5(piece * 4 + b"end").hexdigest())


class UnreachableRegistryTests(SynchronousTestCase):
    def test_503WithTheCodeOnlyInTheLog(self):
        """
        A database that cannot be reached is the client's 503, and the log
        says only its error code: no 500, no traceback.
        """
        from twisted.internet.defer import fail
        from twisted.logger import globalLogPublisher

        from glancetx.registry.registry import Unreachable

        class Down(StoreLikeService):
            def list(self, ctx, query):
                return fail(Unreachable(2003))

        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        site = GlanceSite(GlanceAPI(Down(RecordingConsumer()), Config()), Clock())
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /v1/images HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertIn(b"HTTP/1.1 503 ", transport.value())
        self.assertIn(b"The image registry is unavailable", transport.value())
        self.assertEqual([e.get("code") for e in logged if "log_failure" in e], [])
        self.assertIn(2003, [e.get("code") for e in logged])


class ClientGoneDuringDownloadTests(SynchronousTestCase):
    def test_noTracebackWhenTheClientHangsUp(self):
        """
        A client that hangs up while its download streams through a
        producer (no sendfile: TLS, or the sendfile threads all busy) ends
        the download quietly: the request has no channel any more, and
        nothing may reach for it.
        """
        from twisted.logger import globalLogPublisher
        from twisted.python.failure import Failure

        class Stalled:
            length = 10
            done = None

            def startProducing(self, consumer):
                consumer.write(b"abc")
                self.done = Deferred()
                return self.done

            def stopProducing(self):
                if self.done is not None and not self.done.called:
                    self.done.errback(ConnectionError("the consumer went away"))

            def pauseProducing(self):
                pass

            def resumeProducing(self):
                pass

        producer = Stalled()

        class Download(StoreLikeService):
            def download(self, ctx, imageId):
                return succeed((record(size=10), producer))

        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        channel = GlanceSite(GlanceAPI(Download(RecordingConsumer()), Config()),
                             Clock()).buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /v1/images/00000000-0000-0000-0000-000000000001 HTTP/1.1"
                             b"\r\nHost: h\r\n\r\n")
        self.assertIn(b"abc", transport.value())
        channel.connectionLost(Failure(ConnectionError("reset")))
        producer.stopProducing()
        self.assertEqual([e for e in logged if "log_failure" in e], [])
        self.assertEqual(self.flushLoggedErrors(), [])


class PeriodicTaskTests(SynchronousTestCase):
    def test_databaseDownIsAWarning(self):
        """
        A periodic task (lease renewal, the reaper, the scrubber) that finds
        the database down logs a warning with its code, not a critical
        traceback each round; any other failure is still a failure.
        """
        from twisted.logger import globalLogPublisher

        from glancetx.registry.registry import Unreachable
        from glancetx.service import _logFailure

        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.successResultOf(_logFailure(lambda: fail(Unreachable(2013)))())
        self.assertEqual([(e["log_level"].name, e.get("code")) for e in logged
                          if "code" in e], [("warn", 2013)])
        self.assertEqual([e for e in logged if "log_failure" in e], [])
        self.successResultOf(_logFailure(lambda: fail(ValueError("a bug")))())
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class SmallBodiesTests(SynchronousTestCase):
    """
    Bodies of requests that are not uploads (member lists) are held whole
    until they end, each up to 1 MiB, and all of them together up to
    L{streaming.SMALL_BODIES_MAX}.
    """

    def connect(self):
        channel = GlanceSite(GlanceAPI(StoreLikeService(RecordingConsumer()), Config()),
                             Clock()).buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def put(self, channel, length, data):
        channel.dataReceived(
            b"PUT /v1/images/00000000-0000-0000-0000-000000000001/members HTTP/1.1\r\n"
            b"Host: h\r\nContent-Length: %d\r\n\r\n%s" % (length, data))

    def test_boundedInAll(self):
        """
        Slow clients each holding part of a body, together past the bound:
        the next body is refused (503, to try again) instead of held, and
        what a client held is let go when it leaves.  Two hundred such
        clients held 200 MiB.
        """
        self.patch(streaming, "SMALL_BODIES_MAX", 100)
        slow, _ = self.connect()
        self.put(slow, 90, b"[" + b" " * 59)
        self.assertEqual(streaming.StreamingRequest.smallBodiesHeld, 60)
        channel, transport = self.connect()
        self.put(channel, 50, b'{"memberships": []}' + b" " * 31)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "), transport.value())
        self.assertIn(b"Too many request bodies are arriving at once; try again.",
                      transport.value())
        self.assertEqual(streaming.StreamingRequest.smallBodiesHeld, 60)
        slow.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(streaming.StreamingRequest.smallBodiesHeld, 0)

    def test_trickledBodyCostsItsBytes(self):
        """
        A body that arrives a byte per read costs about its bytes, not a
        Python object per read (52 bytes of memory per byte), so the bound
        on all small bodies bounds their memory.
        """
        import tracemalloc
        channel, transport = self.connect()
        already = streaming.StreamingRequest.smallBodiesHeld
        self.put(channel, 200001, b"[")
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(100000):
                channel.dataReceived(b" ")
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        self.assertEqual(streaming.StreamingRequest.smallBodiesHeld - already, 100001)
        self.assertLess(held, 400000)
        channel.connectionLost(Failure(ConnectionDone()))

    def test_slowBodyIsCutOff(self):
        """
        A member list's body must arrive with its head within one idle
        timeout (60 seconds) of their first byte, however often bytes
        come: trickled bodies held the process's share of small bodies,
        and every other member list got 503s, for as long as their
        clients liked.  The client is told why (408).
        """
        clock = Clock()
        channel = GlanceSite(GlanceAPI(StoreLikeService(RecordingConsumer()), Config()),
                             clock).buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        already = streaming.StreamingRequest.smallBodiesHeld
        self.put(channel, 100, b"[")
        for _ in range(59):
            clock.advance(1)
            channel.dataReceived(b" ")
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"408 Request Timeout", transport.value())
        self.assertIn(b"The request body did not arrive within 60 seconds.", transport.value())
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(streaming.StreamingRequest.smallBodiesHeld, already)
