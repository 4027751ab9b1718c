"""
The S3 store: unit tests that need no server, and the store contract run
against two real S3 servers on loopback: moto (fast, checks little) and
Swift's S3 API (checks signatures and payload hashes).

The servers' addresses come from the environment:

  - C{GLANCETX_MOTO_URL}, e.g. C{http://127.0.0.1:5055} (C{scripts/moto-s3.sh})
  - C{GLANCETX_SWIFT_S3_URL}, e.g. C{http://127.0.0.1:8080} (a Swift all in
    one with s3api and tempauth user C{test:tester} / C{testing})

A test whose server is not named is skipped, or fails when C{CI=true}.
"""

import hashlib
import os
import uuid
from unittest import SkipTest

import attr
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, ResponseFailed
from treq.client import HTTPClient

from glancetx.errors import ConfigError
from glancetx.store.interface import (
    BadLocation,
    LocationNotFound,
    StoreError,
    StoreUnavailable,
    UploadFailed,
    redact,
)
from glancetx.store.s3 import (
    MiB,
    S3Location,
    S3Store,
    _ChunksBody,
    _ObservedBody,
    _PartWriter,
    _S3Reader,
    _signedHeaders,
    parseLocation,
)
from tests.bodies import BytesBody, CollectingConsumer, FailedBody, RecordingProducer, readAll
from tests.store_contract import StoreContractMixin

SECRET = "se/cr+et:with@odd=chars"


def _conf(**extra):
    conf = {
        "s3_store_host": "http://127.0.0.1:5055",
        "s3_store_access_key": "AKIDEXAMPLE",
        "s3_store_secret_key": SECRET,
        "s3_store_bucket": "images",
    }
    conf.update(extra)
    return conf


def _store(**extra):
    return S3Store.fromConfig(_conf(**extra), reactor, None)


class LocationTests(SynchronousTestCase):
    def test_roundTrip(self):
        loc = S3Location(True, "s3.example.com", "test:tester", SECRET, "images", "a/b/c")
        uri = loc.uri()
        self.assertTrue(uri.startswith("s3+https://test%3Atester:"))
        self.assertEqual(parseLocation(uri), loc)

    def test_schemesAsGlanceReadThem(self):
        """
        Glance's s3 store connected securely only for C{s3+https}; it wrote
        C{s3} for a host configured without a scheme or with http://.  So
        C{s3://} is plain HTTP, and an image in a database Glance wrote is
        read as Glance read it (C{s3://} was read over HTTPS, which an
        HTTP-only endpoint, such as a Ceph gateway on :7480, refused).
        """
        loc = S3Location(False, "127.0.0.1:5055", "ak", "sk", "images", "id")
        self.assertEqual(loc.uri(), "s3://ak:sk@127.0.0.1:5055/images/id")
        self.assertFalse(parseLocation(loc.uri()).secure)
        self.assertTrue(parseLocation("s3+https://ak:sk@h/b/k").secure)
        self.assertFalse(parseLocation("s3://ak:sk@h/b/k").secure)
        self.assertFalse(parseLocation("s3+http://ak:sk@h/b/k").secure)

    def test_keyWithSlashes(self):
        loc = parseLocation("s3://ak:sk@host:9000/bucket/dir/sub/obj")
        self.assertEqual((loc.host, loc.bucket, loc.key), ("host:9000", "bucket", "dir/sub/obj"))

    def test_legacyRawSecret(self):
        """
        Glance wrote secrets unquoted; an AWS secret may hold a C{/}.
        """
        loc = parseLocation("s3://AKID:abc/def+ghi@s3.amazonaws.com/bucket/image-1")
        self.assertEqual(loc.accessKey, "AKID")
        self.assertEqual(loc.secretKey, "abc/def+ghi")
        self.assertEqual((loc.host, loc.bucket, loc.key), ("s3.amazonaws.com", "bucket", "image-1"))

    def test_keyWithAt(self):
        loc = parseLocation("s3://ak:sk@host/bucket/a@b")
        self.assertEqual((loc.secretKey, loc.key), ("sk", "a@b"))

    def test_bad(self):
        for bad in [
            "http://ak:sk@host/bucket/key",
            "s3://host/bucket/key",
            "s3://ak:sk@host/bucket",
            "s3://ak:sk@host/bucket/",
            "s3://ak:sk@/bucket/key",
            "s3://ak:sk@host:notaport/bucket/key",
            "s3://nocolon@host/bucket/key",
            "s3:ak:sk@host/bucket/key",
        ]:
            self.assertRaises(BadLocation, parseLocation, bad)

    def test_noSecretsInReprOrLog(self):
        loc = S3Location(True, "h", "ak", SECRET, "b", "k")
        self.assertNotIn("se/cr", repr(loc))
        self.assertNotIn("se%2Fcr", loc.forLog())
        self.assertNotIn("ak", redact(loc.uri()).replace("s3://", ""))
        self.assertNotIn("se/cr", repr(_store()))


class ConfigTests(SynchronousTestCase):
    def assertConfigError(self, option, **extra):
        e = self.assertRaises(ConfigError, _store, **extra)
        self.assertTrue(str(e).startswith(option + ": "), str(e))
        self.assertNotIn("se/cr", str(e))

    def test_defaults(self):
        store = S3Store.fromConfig(
            {
                "s3_store_host": "s3.amazonaws.com",
                "s3_store_access_key": "a",
                "s3_store_secret_key": "b",
                "s3_store_bucket": "images",
            },
            reactor,
            None,
        )
        # As Glance's store: a host without a scheme is plain HTTP.
        self.assertFalse(store.secure)
        self.assertEqual(store.host, "s3.amazonaws.com")
        self.assertEqual(store.region, "us-east-1")
        self.assertEqual(store.largeObjectSize, 100 * MiB)
        self.assertEqual(store.chunkSize, 10 * MiB)
        self.assertEqual(store.maxPartsInFlight, 2)
        self.assertFalse(store.createBucket)
        self.assertEqual(store.urlFormat, "auto")
        self.assertEqual(store.name, "s3")
        self.assertEqual(store.schemes, ("s3", "s3+http", "s3+https"))

    def test_requestTimeout(self):
        """
        C{s3_store_request_timeout} sets the seconds a request without
        image bytes may take: 60 unless set.
        """
        self.assertEqual(_store().requestTimeout, 60.0)
        self.assertEqual(_store(s3_store_request_timeout="300").requestTimeout, 300.0)
        for bad in ("0", "1.5", "ten"):
            self.assertConfigError("s3_store_request_timeout", s3_store_request_timeout=bad)

    def test_values(self):
        store = _store(
            s3_store_create_bucket_on_put="True",
            s3_store_bucket_url_format="virtual",
            s3_store_large_object_size="50",
            s3_store_large_object_chunk_size="5",
            s3_store_max_parts_in_flight="4",
            s3_store_region="eu-west-1",
        )
        self.assertFalse(store.secure)
        self.assertEqual(store.host, "127.0.0.1:5055")
        self.assertTrue(store.createBucket)
        self.assertEqual(store.urlFormat, "virtual")
        self.assertEqual(store.largeObjectSize, 50 * MiB)
        self.assertEqual(store.chunkSize, 5 * MiB)
        self.assertEqual(store.maxPartsInFlight, 4)
        self.assertEqual(store.region, "eu-west-1")

    def test_glanceRegionName(self):
        self.assertEqual(_store(s3_store_region_name="ap-south-1").region, "ap-south-1")

    def test_missing(self):
        for option in ("s3_store_host", "s3_store_access_key", "s3_store_secret_key",
                       "s3_store_bucket"):
            self.assertConfigError(option, **{option: ""})

    def test_bad(self):
        self.assertConfigError("s3_store_host", s3_store_host="ftp://h")
        self.assertConfigError("s3_store_host", s3_store_host="http://h:port")
        # urlsplit read it as [::1]:9000.
        self.assertConfigError("s3_store_host", s3_store_host="http://[::1]x:9000")
        self.assertConfigError("s3_store_host", s3_store_host="http://h/some/path")
        self.assertConfigError("s3_store_host", s3_store_host="http://u:p@h")
        self.assertConfigError("s3_store_bucket", s3_store_bucket="a/b")
        self.assertConfigError("s3_store_create_bucket_on_put", s3_store_create_bucket_on_put="maybe")
        self.assertConfigError("s3_store_bucket_url_format", s3_store_bucket_url_format="subdomain")
        self.assertConfigError("s3_store_large_object_size", s3_store_large_object_size="big")
        self.assertConfigError("s3_store_large_object_size", s3_store_large_object_size="0")
        self.assertConfigError("s3_store_large_object_chunk_size", s3_store_large_object_chunk_size="4")
        self.assertConfigError("s3_store_large_object_chunk_size",
                               s3_store_large_object_chunk_size="6000")
        self.assertConfigError("s3_store_max_parts_in_flight", s3_store_max_parts_in_flight="0")

    def test_urlFormat(self):
        loc = parseLocation("s3+https://a:b@s3.amazonaws.com/images/id-1")
        self.assertEqual(_store()._url(loc), "https://images.s3.amazonaws.com/id-1")
        self.assertEqual(_store(s3_store_bucket_url_format="path")._url(loc),
                         "https://s3.amazonaws.com/images/id-1")
        odd = parseLocation("s3+https://a:b@s3.amazonaws.com/my.images/id-1")
        self.assertEqual(_store()._url(odd), "https://s3.amazonaws.com/my.images/id-1")
        local = parseLocation("s3+http://a:b@127.0.0.1:5055/images/x y")
        self.assertEqual(_store()._url(local), "http://127.0.0.1:5055/images/x%20y")
        self.assertEqual(_store()._url(local, "uploads"), "http://127.0.0.1:5055/images/x%20y?uploads")
        self.assertEqual(_store()._url(local, bucketOnly=True), "http://127.0.0.1:5055/images")

    def test_unsignedPayload(self):
        loc = parseLocation("s3+http://a:b@127.0.0.1:5055/images/id")
        headers = _signedHeaders("PUT", "http://127.0.0.1:5055/images/id", loc, "us-east-1", {})
        self.assertEqual(headers[b"X-Amz-Content-SHA256"], [b"UNSIGNED-PAYLOAD"])
        self.assertIn(b"Credential=a/", headers[b"Authorization"][0])


class UnreachableTests(TestCase):
    def test_storeDown(self):
        """
        A store that cannot be reached is StoreUnavailable, with no secret in
        the message, and the body is left alone.
        """
        pool = HTTPConnectionPool(reactor, persistent=False)
        store = S3Store.fromConfig(
            _conf(s3_store_host="http://127.0.0.1:1"), reactor, HTTPClient(Agent(reactor, pool=pool))
        )

        async def go():
            for length in (10, 20 * MiB):
                body = BytesBody(reactor, b"x" * length)
                with self.assertRaises(StoreUnavailable) as caught:
                    await store.add("image-1", body)
                self.assertNotIn("se/cr", str(caught.exception))
                self.assertNotIn("se%2F", str(caught.exception))
            with self.assertRaises(StoreUnavailable):
                await store.get("s3+http://a:b@127.0.0.1:1/images/x")

        return ensureDeferred(go())


class FakeResponse:
    def __init__(self, length):
        self.length = length
        self.transport = RecordingProducer()
        self.protocol = None

    def deliverBody(self, protocol):
        self.protocol = protocol
        protocol.makeConnection(self.transport)


class ReaderTests(SynchronousTestCase):
    def test_whole(self):
        response = FakeResponse(6)
        reader = _S3Reader(response, 6)
        consumer = CollectingConsumer()
        d = reader.startProducing(consumer)
        response.protocol.dataReceived(b"abc")
        reader.pauseProducing()
        reader.resumeProducing()
        response.protocol.dataReceived(b"def")
        response.protocol.connectionLost(Failure(ResponseDone()))
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(consumer.value(), b"abcdef")
        self.assertEqual(response.transport.calls, ["pause", "resume"])

    def test_short(self):
        for reason in (ResponseDone(), ResponseFailed([Failure(Exception())])):
            response = FakeResponse(6)
            reader = _S3Reader(response, 6)
            d = reader.startProducing(CollectingConsumer())
            response.protocol.dataReceived(b"abc")
            response.protocol.connectionLost(Failure(reason))
            self.failureResultOf(d, StoreError)

    def test_stopBeforeStart(self):
        response = FakeResponse(6)
        _S3Reader(response, 6).stopProducing()
        self.assertEqual(response.transport.calls, ["stop"])

    def test_stop(self):
        response = FakeResponse(6)
        reader = _S3Reader(response, 6)
        d = reader.startProducing(CollectingConsumer())
        reader.stopProducing()
        response.protocol.connectionLost(Failure(ResponseFailed([])))
        self.assertNoResult(d)
        self.assertEqual(response.transport.calls, ["stop"])


    def test_abort(self):
        """
        A copy-from the server ends at shutdown closes S3's connection and
        fails, started or not.
        """
        response = FakeResponse(6)
        reader = _S3Reader(response, 6)
        d = reader.startProducing(CollectingConsumer())
        response.protocol.dataReceived(b"abc")
        reader.abort()
        self.failureResultOf(d, StoreUnavailable)
        self.assertEqual(response.transport.calls, ["stop"])
        unstarted = _S3Reader(FakeResponse(6), 6)
        unstarted.abort()
        self.failureResultOf(unstarted.startProducing(CollectingConsumer()), StoreUnavailable)


class FakeMultipartStore:
    """
    Stands in for the S3 calls a L{_PartWriter} makes; each part waits for
    the test to finish it.
    """

    def __init__(self):
        self.parts = {}

    async def _initiate(self, loc):
        return "upload-1"

    async def _uploadPart(self, loc, uploadId, number, chunks, size):
        d = self.parts[number] = Deferred()
        self.parts[number].data = b"".join(chunks)
        await d
        return '"etag-%d"' % (number,)


class PartWriterTests(SynchronousTestCase):
    def test_backpressure(self):
        """
        At most maxInFlight parts are held: the body is paused while they
        are on their way and resumed as each completes.
        """
        store = FakeMultipartStore()
        writer = _PartWriter(store, None, partSize=10, maxInFlight=2)
        body = RecordingProducer()
        writer.registerProducer(body, True)
        writer.write(b"a" * 7)
        self.assertEqual(store.parts, {})
        writer.write(b"b" * 7)
        self.assertEqual(sorted(store.parts), [1])
        self.assertEqual(store.parts[1].data, b"a" * 7 + b"bbb")
        self.assertEqual(body.calls, [])
        writer.write(b"c" * 7)
        self.assertEqual(sorted(store.parts), [1, 2])
        self.assertEqual(body.calls, ["pause"])
        store.parts[1].callback(None)
        self.assertEqual(body.calls, ["pause", "resume"])
        writer.write(b"d" * 5)
        writer.unregisterProducer()
        writer.close()
        self.assertEqual(sorted(store.parts), [1, 2, 3])
        idle = writer.whenIdle()
        store.parts[2].callback(None)
        self.assertNoResult(idle)
        store.parts[3].callback(None)
        self.successResultOf(idle)
        self.assertEqual(b"".join(store.parts[n].data for n in (1, 2, 3)),
                         b"a" * 7 + b"b" * 7 + b"c" * 7 + b"d" * 5)
        self.assertEqual(writer.etags, {1: '"etag-1"', 2: '"etag-2"', 3: '"etag-3"'})
        self.assertLessEqual(writer.peakBytes, 2 * 10 + 7)
        self.assertEqual(writer.total, 26)

    def test_partFailure(self):
        store = FakeMultipartStore()
        writer = _PartWriter(store, None, partSize=10, maxInFlight=2)
        writer.registerProducer(RecordingProducer(), True)
        writer.write(b"x" * 25)
        store.parts[1].errback(StoreUnavailable("down"))
        self.failureResultOf(writer.failed, StoreUnavailable)
        idle = writer.whenIdle()
        self.assertNoResult(idle)
        store.parts[2].callback(None)
        self.successResultOf(idle)
        writer.write(b"more")
        self.assertEqual(sorted(store.parts), [1, 2])


class ObservedBodyTests(SynchronousTestCase):
    def test_lateFailure(self):
        """
        A body that fails after sending every declared byte lets the request
        finish (the caller deletes the object), and records the failure.
        """
        inner = Deferred()

        class Body:
            length = 3

            def startProducing(self, consumer):
                consumer.write(b"abc")
                return inner

        observed = _ObservedBody(Body())
        consumer = CollectingConsumer()
        forClient = observed.startProducing(consumer)
        inner.errback(UploadFailed(400, "bad checksum"))
        self.successResultOf(forClient)
        self.failureResultOf(observed.whenFinished(), UploadFailed)

    def test_stoppedAfterEveryByte(self):
        """
        S3 may answer before the body has vouched for its bytes (the MD5 is
        still running); the HTTP client then drops the connection and
        stops its producer.  The body is not stopped with it: it still
        settles, and C{whenFinished} fires.  It once never did, and the
        upload hung.
        """
        inner = Deferred()
        stopped = []

        class Body:
            length = 3

            def startProducing(self, consumer):
                consumer.write(b"abc")
                return inner

            def stopProducing(self):
                stopped.append(True)

        observed = _ObservedBody(Body())
        observed.startProducing(CollectingConsumer())
        observed.stopProducing()
        self.assertEqual(stopped, [])
        finished = observed.whenFinished()
        self.assertNoResult(finished)
        inner.callback(None)
        self.successResultOf(finished)

    def test_stoppedShort(self):
        stopped = []

        class Body:
            length = 10

            def startProducing(self, consumer):
                consumer.write(b"abc")
                return Deferred()

            def stopProducing(self):
                stopped.append(True)

        observed = _ObservedBody(Body())
        observed.startProducing(CollectingConsumer())
        observed.stopProducing()
        self.assertEqual(stopped, [True])

    def test_earlyFailure(self):
        inner = Deferred()

        class Body:
            length = 10

            def startProducing(self, consumer):
                consumer.write(b"abc")
                return inner

        observed = _ObservedBody(Body())
        forClient = observed.startProducing(CollectingConsumer())
        inner.errback(UploadFailed(400, "went away"))
        self.failureResultOf(forClient, UploadFailed)
        self.assertEqual(observed.written, 3)

    def test_failedBeforeStart(self):
        """
        A body that failed before the HTTP client started it (the client
        went away while the connection to S3 was being made) fails the
        Deferred the HTTP client gets: it once got None, and the failure
        was logged as unhandled.
        """
        observed = _ObservedBody(FailedBody())
        forClient = observed.startProducing(CollectingConsumer())
        self.assertIsInstance(forClient, Deferred)
        self.failureResultOf(forClient, UploadFailed)
        self.failureResultOf(observed.whenFinished(), UploadFailed)


class ChunksBodyTests(SynchronousTestCase):
    def test_pauses(self):
        body = _ChunksBody([b"a" * 300000, b"b"], 300001)

        class Consumer(CollectingConsumer):
            def write(self, data):
                CollectingConsumer.write(self, data)
                body.pauseProducing()

        consumer = Consumer()
        d = body.startProducing(consumer)
        self.assertEqual(len(consumer.chunks), 1)
        while not d.called:
            body.resumeProducing()
        self.assertEqual(consumer.value(), b"a" * 300000 + b"b")


def _serverURL(testCase, var):
    url = os.environ.get(var)
    if not url:
        if os.environ.get("CI") == "true":
            testCase.fail("%s is not set, and CI=true" % (var,))
        raise SkipTest("%s is not set: no S3 server to test against" % (var,))
    return url.rstrip("/")


class _RealS3Mixin(StoreContractMixin):
    """
    The contract and more, against a real S3 server.  Parts are 5 MiB (S3's
    minimum) and objects over 8 MiB go multipart, so the contract's large
    body (12 MiB) is three parts.
    """

    urlVariable: str
    accessKey: str
    secretKey: str
    largeSize = 12 * MiB + 17

    def setUp(self):
        import boto3
        from botocore.config import Config

        self.url = _serverURL(self, self.urlVariable)
        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.accessKey,
            aws_secret_access_key=self.secretKey,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        self.bucket = self.newBucketName()
        self.s3.create_bucket(Bucket=self.bucket)
        self.addCleanup(self.removeBucket, self.bucket)
        self.expectedKeys = set()
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        self.client = HTTPClient(Agent(reactor, pool=pool))

    def newBucketName(self):
        return "glancetx-test-" + uuid.uuid4().hex[:16]

    def removeBucket(self, bucket):
        try:
            uploads = self.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        except self.s3.exceptions.NoSuchBucket:
            return
        for u in uploads:
            self.s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
        for o in self.s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            self.s3.delete_object(Bucket=bucket, Key=o["Key"])
        self.s3.delete_bucket(Bucket=bucket)

    def makeStore(self, **overrides):
        store = S3Store.fromConfig(
            {
                "s3_store_host": self.url,
                "s3_store_access_key": self.accessKey,
                "s3_store_secret_key": self.secretKey,
                "s3_store_bucket": self.bucket,
                "s3_store_large_object_chunk_size": "5",
            },
            reactor,
            self.client,
        )
        return attr.evolve(store, **dict({"largeObjectSize": 8 * MiB}, **overrides))

    def leaveAbandonedUpload(self, store, imageId):
        upload = self.s3.create_multipart_upload(Bucket=self.bucket, Key=imageId)
        self.s3.upload_part(Bucket=self.bucket, Key=imageId, PartNumber=1,
                            UploadId=upload["UploadId"], Body=b"x" * 1000)
        self.s3.put_object(Bucket=self.bucket, Key=imageId, Body=b"whole")

    def holds(self, store, imageId):
        objects = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return imageId in [o["Key"] for o in objects]

    def leftovers(self):
        uploads = self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        objects = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return (["upload %s" % (u["Key"],) for u in uploads]
                + ["object %s" % (o["Key"],) for o in objects
                   if o["Key"] not in self.expectedKeys])

    def test_independentlyReadable(self):
        """
        What the store writes, single and multipart, is the same object
        another S3 client reads, named as Glance named it.
        """
        async def go():
            store = self.makeStore()
            for data in (os.urandom(100000), os.urandom(self.largeSize)):
                image = self.imageId()
                stored = await store.add(image, BytesBody(reactor, data))
                # Glance's name for an object on an http:// endpoint.
                self.assertTrue(stored.location.startswith("s3://"))
                self.assertTrue(stored.location.endswith("/%s/%s" % (self.bucket, image)))
                got = self.s3.get_object(Bucket=self.bucket, Key=image)["Body"].read()
                self.assertEqual(hashlib.md5(got).digest(), hashlib.md5(data).digest())
        return ensureDeferred(go())

    def test_missing(self):
        async def go():
            store = self.makeStore()
            loc = S3Location(False, self.url.partition("://")[2], self.accessKey,
                             self.secretKey, self.bucket, "no-such-image").uri()
            with self.assertRaises(LocationNotFound):
                await store.get(loc)
            with self.assertRaises(LocationNotFound):
                await store.get_size(loc)
            await store.delete(loc)
        return ensureDeferred(go())

    def test_locationCarriesCredentials(self):
        """
        A location written with other credentials and bucket than the
        store's configuration is still read, deleted and sized with its own.
        """
        async def go():
            stored = await self.makeStore().add(self.imageId(), BytesBody(reactor, b"abc" * 1000))
            other = attr.evolve(self.makeStore(), accessKey="other:user",
                                secretKey="wrong", bucket="elsewhere")
            self.assertEqual(await other.get_size(stored.location), 3000)
            self.assertEqual(await readAll(reactor, await other.get(stored.location)), b"abc" * 1000)
            await other.delete(stored.location)
            with self.assertRaises(LocationNotFound):
                await other.get_size(stored.location)
        return ensureDeferred(go())

    def test_abortMidway(self):
        """
        A body that fails after two parts are sent leaves no multipart
        upload behind; one was open when it failed.
        """
        async def go():
            store = self.makeStore(maxPartsInFlight=1)
            seen = []

            class CheckingBody(BytesBody):
                def _step(inner):
                    if (not seen and inner._failAfter is not None
                            and inner._offset >= inner._failAfter):
                        seen.append(self.s3.list_multipart_uploads(
                            Bucket=self.bucket).get("Uploads", []))
                    BytesBody._step(inner)

            data = os.urandom(self.largeSize)
            body = CheckingBody(reactor, data, failAfter=11 * MiB)
            with self.assertRaises(UploadFailed):
                await store.add(self.imageId(), body)
            self.assertEqual(len(seen[0]), 1)
            self.assertGreater(body.pauses, 0)
            self.assertEqual(self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []), [])
            self.assertEqual(list(self.leftovers()), [])
        return ensureDeferred(go())

    def test_checksumFailureAtEnd(self):
        """
        A body that fails after its last byte (a bad checksum) leaves no
        object, on the single-PUT path too.
        """
        async def go():
            store = self.makeStore()

            class LateFailBody(BytesBody):
                def _step(inner):
                    if inner._offset >= len(inner._data) and not inner._stopped:
                        inner._stopped = True
                        inner._done.errback(UploadFailed(400, "checksum mismatch"))
                        return
                    BytesBody._step(inner)

            for size in (100000, self.largeSize):
                body = LateFailBody(reactor, os.urandom(size))
                with self.assertRaises(UploadFailed):
                    await store.add(self.imageId(), body)
                self.assertEqual(list(self.leftovers()), [])
        return ensureDeferred(go())

    def test_smallUnknownLength(self):
        """
        A body of unknown length that ends within one part is one PUT.
        """
        async def go():
            for data in (b"", b"tiny" * 1000):
                await self._roundTrip(data, knownLength=False)
        return ensureDeferred(go())

    def test_failedSmallBodyLeavesNothing(self):
        async def go():
            store = self.makeStore()
            for knownLength in (True, False):
                data = os.urandom(300000)
                body = BytesBody(reactor, data, knownLength=knownLength, failAfter=150000)
                with self.assertRaises(UploadFailed):
                    await store.add(self.imageId(), body)
                self.assertEqual(list(self.leftovers()), [])
        return ensureDeferred(go())

    def test_createBucketOnPut(self):
        async def go():
            bucket = self.newBucketName()
            self.addCleanup(self.removeBucket, bucket)
            store = attr.evolve(self.makeStore(), bucket=bucket, createBucket=True)
            image = self.imageId()
            await store.add(image, BytesBody(reactor, b"hello"))
            self.assertEqual(self.s3.get_object(Bucket=bucket, Key=image)["Body"].read(), b"hello")
        return ensureDeferred(go())

    def test_noBucket(self):
        async def go():
            store = attr.evolve(self.makeStore(), bucket=self.newBucketName())
            for data in (b"x", os.urandom(self.largeSize)):
                with self.assertRaises(StoreError) as caught:
                    await store.add(self.imageId(), BytesBody(reactor, data))
                self.assertNotIsInstance(caught.exception, LocationNotFound)
                self.assertNotIn(self.secretKey, str(caught.exception))
        return ensureDeferred(go())


class MotoS3StoreTests(_RealS3Mixin, TestCase):
    urlVariable = "GLANCETX_MOTO_URL"
    accessKey = "testing-access"
    secretKey = "testing/secret"


class SwiftS3StoreTests(_RealS3Mixin, TestCase):
    urlVariable = "GLANCETX_SWIFT_S3_URL"
    accessKey = "test:tester"
    secretKey = "testing"

    def test_signaturesChecked(self):
        """
        This server checks signatures (moto does not), so the passing tests
        above mean the driver's are right: a wrong secret is refused, and
        the refusal does not show the secret.
        """
        async def go():
            store = attr.evolve(self.makeStore(), secretKey="not-the-secret")
            for data in (b"x" * 1000, os.urandom(self.largeSize)):
                with self.assertRaises(StoreError) as caught:
                    await store.add(self.imageId(), BytesBody(reactor, data))
                self.assertIn("403", str(caught.exception))
                self.assertNotIn("not-the-secret", str(caught.exception))
            self.assertEqual(list(self.leftovers()), [])
        return ensureDeferred(go())
