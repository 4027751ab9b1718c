"""
The v1 API end to end on the remote stores: the real twistd glance with
C{default_store = s3} (on moto and on Swift's S3 API) and C{= swift}, checked
with each store's own client (boto3; Swift's HTTP API through treq), plus
copy-from and locations for http, s3 and swift sources, and a store that
dies in the middle of an upload (through L{tests.tcpproxy.TCPProxy}).

The servers come from the environment, as for the store tests:
C{GLANCETX_MOTO_URL}, C{GLANCETX_SWIFT_S3_URL} (access C{test:tester},
secret C{testing}) and C{GLANCETX_SWIFT_AUTH_URL} (user C{test:tester}, key
C{testing}).  A test whose server is not named is skipped, or fails when
C{CI=true}.
"""

import hashlib
import json
import os
import uuid
from io import BytesIO
from typing import Any, Dict, List, Optional
from unittest import SkipTest
from urllib.parse import quote, urlsplit

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.static import File
from treq.client import HTTPClient
from zope.interface import implementer

from glancetx.store.interface import StoreError, StoreUnavailable
from tests.test_api import RAW, APITestsMixin, async_test
from tests.tcpproxy import TCPProxy
from tests.tlscerts import makeCertificates

MiB = 1024 * 1024
USER = "test:tester"
KEY = "testing"
#: Bigger than the 5 MB large-object threshold the servers are given, so
#: it becomes three S3 parts / Swift segments, the last one short.
BIG = 12 * MiB + 17


def _serverURL(testCase, var: str) -> str:
    url = os.environ.get(var)
    if not url:
        if os.environ.get("CI") == "true":
            testCase.fail("%s is not set, and CI=true" % (var,))
        raise SkipTest("%s is not set: no server to test against" % (var,))
    return url.rstrip("/")


def sleep(seconds: float) -> Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


async def eventually(check, timeout: float = 60.0, interval: float = 0.25):
    """
    Call the async C{check} until it returns something true; return that, or
    the last (false) result after C{timeout} seconds.
    """
    deadline = reactor.seconds() + timeout
    while True:
        result = await check()
        if result or reactor.seconds() > deadline:
            return result
        await sleep(interval)


def _client(testCase) -> HTTPClient:
    pool = HTTPConnectionPool(reactor, persistent=False)
    return HTTPClient(Agent(reactor, pool=pool))


def _chunked(data: bytes) -> FileBodyProducer:
    body = FileBodyProducer(BytesIO(data))
    body.length = UNKNOWN_LENGTH  # the Agent sends it chunked
    return body


# --- A raw upload that can be left hanging -------------------------------


@implementer(IPushProducer)
class _RawUpload(Protocol):
    """
    A chunked POST /v1/images written by hand, pushing a block of bytes per
    reactor turn (paced by the socket) until stopped, and collecting
    whatever the server answers.
    """

    def __init__(self, headers: Dict[str, str], limit: int) -> None:
        self._headers = headers
        self._limit = limit
        self._block = os.urandom(MiB)
        self.sent = 0
        self.answer = b""
        #: Fires with the answer's head, or with whatever came before the
        #: connection ended.
        self.ended: Deferred = Deferred()
        self._paused = False
        self._stopped = False
        self._call = None

    def connectionMade(self) -> None:
        lines = ["POST /v1/images HTTP/1.1", "Host: 127.0.0.1",
                 "Transfer-Encoding: chunked", "Content-Type: application/octet-stream"]
        lines += ["%s: %s" % kv for kv in self._headers.items()]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.transport.registerProducer(self, True)
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None and not self._paused and not self._stopped:
            self._call = reactor.callLater(0, self._step)

    def _step(self) -> None:
        self._call = None
        if self._paused or self._stopped:
            return
        if self.sent >= self._limit:
            self.transport.write(b"0\r\n\r\n")
            self._stopped = True
            return
        self.transport.write(b"%x\r\n%s\r\n" % (len(self._block), self._block))
        self.sent += len(self._block)
        self._schedule()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self._stopped = True

    def stopSending(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def dataReceived(self, data: bytes) -> None:
        self.answer += data
        if b"\r\n\r\n" in self.answer:
            # The answer is in: a client would stop sending now.  (The
            # server reads and drops the rest of a refused body for a while
            # before it closes the connection; no need to wait for that.)
            self.stopSending()
            if not self.ended.called:
                self.ended.callback(self.answer)

    def connectionLost(self, reason=None) -> None:
        self.stopSending()
        if not self.ended.called:
            self.ended.callback(self.answer)


# --- The stores' own clients ----------------------------------------------


class _Swift:
    """
    Just enough of Swift's API (tempauth v1) for the tests to look behind
    glancetx's back.
    """

    def __init__(self, testCase, authUrl: str) -> None:
        self.authUrl = authUrl
        self.http = _client(testCase)
        self.storageUrl: Optional[str] = None
        self.token: Optional[str] = None

    async def _auth(self) -> None:
        if self.token is None:
            r = await self.http.get(self.authUrl, headers={"X-Auth-User": USER,
                                                           "X-Auth-Key": KEY})
            await r.content()
            assert r.code == 200, r.code
            self.storageUrl = r.headers.getRawHeaders("X-Storage-Url")[0]
            self.token = r.headers.getRawHeaders("X-Auth-Token")[0]

    async def request(self, method: str, path: str, **kwargs):
        await self._auth()
        headers = dict(kwargs.pop("headers", {}) or {})
        headers["X-Auth-Token"] = self.token
        r = await self.http.request(method, self.storageUrl + path, headers=headers, **kwargs)
        body = await r.content()
        return r, body

    async def list(self, container: str) -> List[str]:
        r, body = await self.request("GET", "/%s?format=json" % (quote(container),))
        if r.code in (404, 204):
            return []
        assert r.code == 200, (r.code, body)
        return [o["name"] for o in json.loads(body)]

    async def put(self, container: str, name: str, data: bytes) -> None:
        r, _ = await self.request("PUT", "/" + quote(container))
        assert r.code in (201, 202), r.code
        r, body = await self.request("PUT", "/%s/%s" % (quote(container), quote(name)),
                                     data=data)
        assert r.code == 201, (r.code, body)

    async def get(self, container: str, name: str):
        return await self.request("GET", "/%s/%s" % (quote(container), quote(name)))

    async def removeContainer(self, container: str) -> None:
        for name in await self.list(container):
            await self.request("DELETE", "/%s/%s" % (quote(container), quote(name, safe="/")))
        await self.request("DELETE", "/" + quote(container))


def _boto3(url: str, access: str, secret: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id=access, aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def _removeBucket(s3, bucket: str) -> None:
    try:
        uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    except s3.exceptions.NoSuchBucket:
        return
    for u in uploads:
        s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=o["Key"])
    s3.delete_bucket(Bucket=bucket)


# --- The same API tests on every remote store --------------------------------


class _RemoteStoreMixin(APITestsMixin):
    """
    Servers on one remote store, and checks of what the store holds.

    Each store mixin provides:

      - C{setUpStore()}: a fresh bucket or container; C{self.storeAddress}
        is the store's C{host:port};
      - C{storeOptions(address)}: the server options for the store at
        C{address} (the store's own, or a proxy's);
      - C{storedBytes(imageId)}, C{storedNames()}, C{leftovers()} (open
        multipart uploads, or segments), C{partsStarted()};
      - C{putSource(name, data)}, C{sourceLocation(name, host)} and
        C{credentiallessLocation(name, host)}.
    """

    timeout = 300
    storeName: str

    def setUp(self):
        self.setUpStore()

    async def storeServer(self, address: Optional[str] = None, dataDir: Optional[str] = None,
                          **options):
        opts = self.storeOptions(address or self.storeAddress)
        opts.update(default_store=self.storeName, stores="file,http," + self.storeName)
        opts.update(options)
        return await self.server(dataDir=dataDir, **opts)

    async def status(self, imageId: str) -> Optional[str]:
        resp, _ = await self.request("HEAD", "/v1/images/" + imageId)
        return self.header(resp, "x-image-meta-status") if resp.code == 200 else None

    async def checkRoundTrip(self, image: Dict[str, Any], data: bytes) -> None:
        self.assertEqual(image["status"], "active")
        self.assertEqual(image["size"], len(data))
        self.assertEqual(image["checksum"], hashlib.md5(data).hexdigest())
        path = "/v1/images/" + image["id"]
        resp, _ = await self.request("HEAD", path, expect=200)
        self.assertEqual(self.header(resp, "x-image-meta-size"), str(len(data)))
        self.assertEqual(self.header(resp, "x-image-meta-status"), "active")
        self.assertEqual(self.header(resp, "etag"), image["checksum"])
        resp, body = await self.request("GET", path, expect=200)
        self.assertEqual(len(body), len(data))
        self.assertTrue(body == data, "the bytes served differ from those uploaded")
        self.assertTrue(await self.storedBytes(image["id"]) == data,
                        "the bytes in the store differ from those uploaded")

    async def checkDeleted(self, imageId: str) -> None:
        await self.request("DELETE", "/v1/images/" + imageId, expect=200)
        self.assertEqual(await self.status(imageId), None)
        self.assertEqual(await self.storedNames(), [])
        self.assertEqual(await self.leftovers(), [])

    async def checkOnlyActiveStored(self) -> None:
        """
        Only active images have objects, and no open multipart upload or
        segment belongs to anything else.
        """
        active = set()
        for name in await self.storedNames():
            self.assertEqual(await self.status(name), "active", name)
            active.add(name)

        async def stale():
            # Open multipart uploads, or segments of no active image.
            return [left for left in await self.leftovers()
                    if not any(imageId in left for imageId in active)]

        for _ in range(100):  # uploads the client broke off end a moment later
            if not await stale():
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(await stale(), [])

    async def noLeftovers(self) -> bool:
        return await self.leftovers() == []

    async def storeIsEmpty(self) -> bool:
        return await self.storedNames() == []

    async def statusIs(self, imageId: str, status: str) -> bool:
        return await self.status(imageId) == status


class _RemoteStoreAPIMixin(_RemoteStoreMixin):
    """
    The API tests each store passes.
    """

    @async_test
    async def test_randomRequests(self):
        """
        L{tests.randomrequests} against a server on this store: one answer
        each, no 5xx, no traceback (a body that failed before its PUT began
        was once logged as an unhandled error here), and afterwards only
        active images have objects, with no open upload left.
        """
        from tests import randomrequests
        await self.storeServer()
        counts, found = await deferToThread(randomrequests.run, self.glance.port, 5, 300)
        self.assertEqual(found, [])
        self.assertNotIn("Traceback", self.glance.log())
        await self.checkOnlyActiveStored()

    @async_test
    async def test_uploadWithContentLength(self):
        """
        A big upload (several parts or segments) and a small one, with
        Content-Length: stored, served, in the store, and gone once deleted.
        """
        await self.storeServer()
        for size in (BIG, 1000):
            data = os.urandom(size)
            image = await self.create(data)
            await self.checkRoundTrip(image, data)
            await self.checkLargeObject(image["id"], size > 5 * MiB)
            await self.checkDeleted(image["id"])
        # No location, not even without its credentials, reaches the log.
        log = self.glance.log()
        self.assertNotIn("://" + self.storeAddress, log)
        self.assertNotIn(KEY, log)

    @async_test
    async def test_replacedObjectIsNotServed(self):
        """
        An image's object replaced in the store by other bytes of the same
        size (a stray PUT, a restore from the wrong backup): the store's
        ETag, its MD5, is not the image's checksum, so the download is a
        503 before any byte goes out, and the log says why.  It was served
        whole, as a 200 under the old checksum.
        """
        await self.storeServer()
        data = os.urandom(1000)
        image = await self.create(data)
        await self.checkRoundTrip(image, data)
        await self.putSource(image["id"], os.urandom(1000))
        await self.request("GET", "/v1/images/" + image["id"], expect=503)
        self.assertIn("it was replaced in the store", self.glance.log())
        # The image itself can still be deleted.
        await self.checkDeleted(image["id"])

    @async_test
    async def test_uploadChunked(self):
        """
        The same with chunked bodies (unknown length), and the reserve-then-
        PUT way in.
        """
        await self.storeServer()
        data = os.urandom(BIG)
        image = await self.create(_chunked(data))
        await self.checkRoundTrip(image, data)
        await self.checkLargeObject(image["id"], True)
        await self.checkDeleted(image["id"])

        small = os.urandom(12345)
        image = await self.create(headers=RAW)
        resp, body = await self.request("PUT", "/v1/images/" + image["id"], {},
                                        _chunked(small), expect=200)
        image = json.loads(body)["image"]
        await self.checkRoundTrip(image, small)
        await self.checkDeleted(image["id"])

    @async_test
    async def test_sizeMismatchKills(self):
        """
        A body longer or shorter than x-image-meta-size is a 400; the image
        is killed and nothing is left in the store (no object, no open
        multipart upload, no segment).
        """
        await self.storeServer()
        cases = [
            (BIG, BIG - 1, True),     # too long, multipart/segmented
            (BIG, BIG + 1, True),     # too short
            (1000, 999, False),       # too long, one PUT
            (1000, 1001, True),       # too short, chunked
        ]
        for size, declared, chunked in cases:
            data = os.urandom(size)
            body = _chunked(data) if chunked else data
            resp, text = await self.create(body, {"x-image-meta-size": str(declared)},
                                           expect=400)
            self.assertIn(b"size", text.lower())
            r, listing = await self.request("GET", "/v1/images/detail?status=killed",
                                            expect=200)
            self.assertIn("killed", [i["status"] for i in json.loads(listing)["images"]])
            self.assertEqual(await self.storedNames(), [], (size, declared))
            self.assertEqual(await eventually(self.noLeftovers, 10), True, (size, declared))
        r, listing = await self.request("GET", "/v1/images/detail", expect=200)
        self.assertEqual([i for i in json.loads(listing)["images"] if i["status"] == "active"],
                         [])

    @async_test
    async def test_storeDiesMidUpload(self):
        """
        The store goes away (every connection cut, new ones refused) during a
        big chunked upload: the client gets a 503 (or the connection ends),
        the image is killed, and once the store is back the driver's
        background clean-up leaves no open multipart upload and no segment.
        """
        host, port = self.storeAddress.rsplit(":", 1)
        proxy = TCPProxy(reactor, host, int(port))
        await proxy.start()
        self.addCleanup(proxy.stop)
        await self.storeServer(proxy.address)
        imageId = str(uuid.uuid4())
        upload = _RawUpload({"x-image-meta-id": imageId, "x-image-meta-name": "cut",
                             "x-image-meta-disk_format": "raw",
                             "x-image-meta-container_format": "bare",
                             "Connection": "close"}, limit=2048 * MiB)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.glance.port)
        await endpoint.connect(Factory.forProtocol(lambda: upload))
        self.addCleanup(lambda: upload.transport.abortConnection())
        started = await eventually(self.partsStarted, 60, 0.1)
        self.assertTrue(started, "no part or segment reached the store")
        self.assertEqual(await self.status(imageId), "saving")

        await proxy.cut()
        timeout = reactor.callLater(60, upload.transport.abortConnection)
        answer = await upload.ended
        if timeout.active():
            timeout.cancel()
        self.assertTrue(answer == b"" or answer.startswith(b"HTTP/1.1 503 "), answer[:200])
        self.assertEqual(await eventually(
            lambda: self.statusIs(imageId, "killed"), 30), True)
        # The store could not be reached: the first clean-up failed...
        self.assertNotEqual(await self.leftovers(), [])
        # ...and is retried in the background once the store is back.
        await sleep(1.5)
        await proxy.restore()
        self.assertEqual(await eventually(self.noLeftovers, 60, 0.5), True,
                         await self.leftovers())
        self.assertEqual(await self.storedNames(), [])
        self.assertIn("will retry", self.glance.log())
        self.assertNotIn(KEY + "@", self.glance.log())

    @async_test
    async def test_deleteWhileStoreIsDown(self):
        """
        Deleting an image while the store cannot be reached still deletes
        the image, and its object goes once the store is back.
        """
        host, port = self.storeAddress.rsplit(":", 1)
        proxy = TCPProxy(reactor, host, int(port))
        await proxy.start()
        self.addCleanup(proxy.stop)
        await self.storeServer(proxy.address)
        image = await self.create(os.urandom(1024 * 1024), RAW)
        self.assertEqual(await self.storedNames(), [image["id"]])
        await proxy.cut()
        await self.request("DELETE", "/v1/images/" + image["id"], expect=200)
        await self.request("HEAD", "/v1/images/" + image["id"], expect=404)
        self.assertEqual(await self.storedNames(), [image["id"]])
        await sleep(1.5)
        await proxy.restore()
        self.assertEqual(await eventually(self.storeIsEmpty, 60, 0.5), True,
                         self.glance.log()[-3000:])
        self.assertNotIn(KEY + "@", self.glance.log())

    @async_test
    async def test_deleteWhileStoreIsDownSurvivesARestart(self):
        """
        The bytes of an image deleted while the store is down are removed
        once it is back even if the server that deleted it stopped first
        (its background retries end with it): the image waits in
        pending_delete for a scrubber, which runs without delayed_delete
        too.
        """
        host, port = self.storeAddress.rsplit(":", 1)
        proxy = TCPProxy(reactor, host, int(port))
        await proxy.start()
        self.addCleanup(proxy.stop)
        first = await self.storeServer(proxy.address, wakeup_time=1)
        image = await self.create(os.urandom(4096), RAW)
        await proxy.cut()
        await self.request("DELETE", "/v1/images/" + image["id"], expect=200)
        await self.request("HEAD", "/v1/images/" + image["id"], expect=404)
        await first.stop()
        self.assertEqual(await self.storedNames(), [image["id"]])
        await proxy.restore()
        await self.storeServer(proxy.address, dataDir=first.dataDir, wakeup_time=1)
        self.assertEqual(await eventually(self.storeIsEmpty, 60, 0.5), True,
                         self.glance.log()[-3000:])
        self.assertNotIn(KEY + "@", first.log() + self.glance.log())

    @async_test
    async def test_copyFromAndLocation(self):
        """
        An object put in the store with the store's own client can be
        copied into the file store (x-glance-api-copy-from) and registered
        as a location; a source naming another host is refused.
        """
        await self.storeServer(default_store="file")
        data = os.urandom(2 * MiB + 3)
        await self.putSource("source-object", data)
        source = self.sourceLocation("source-object", self.storeAddress)

        image = await self.create(headers=dict(RAW, **{"x-glance-api-copy-from": source}))
        self.assertEqual(image["status"], "saving")
        self.assertEqual(await eventually(
            lambda: self.statusIs(image["id"], "active"), 60), True)
        resp, body = await self.request("GET", "/v1/images/" + image["id"], expect=200)
        self.assertTrue(body == data)
        self.assertEqual(self.header(resp, "etag"), hashlib.md5(data).hexdigest())
        self.assertEqual(len(os.listdir(os.path.join(self.glance.dataDir, "images"))), 1)

        image = await self.create(headers=dict(RAW, **{"x-image-meta-location": source}))
        self.assertEqual(image["status"], "active")
        self.assertEqual(image["size"], len(data))
        self.assertNotIn("location", image)
        resp, body = await self.request("GET", "/v1/images/" + image["id"], expect=200)
        self.assertTrue(body == data)
        resp, _ = await self.request("HEAD", "/v1/images/" + image["id"], expect=200)
        self.assertIsNone(self.header(resp, "x-image-meta-location"))

        host, port = self.storeAddress.rsplit(":", 1)
        for other in ("127.0.0.2:" + port, "localhost:" + port):
            elsewhere = self.sourceLocation("source-object", other)
            for header in ("x-glance-api-copy-from", "x-image-meta-location"):
                resp, body = await self.create(headers=dict(RAW, **{header: elsewhere}),
                                               expect=400)
                self.assertNotIn(KEY.encode("ascii") + b"@", body)
        resp, body = await self.create(
            headers=dict(RAW, **{"x-image-meta-location":
                                 self.sourceLocation("no-such-object", self.storeAddress)}),
            expect=400)


    @async_test
    async def test_locationWithoutCredentialsRefused(self):
        """
        A location a user names without credentials would be read (and
        deleted with the image) with the operator's own account: naming
        another image's object so read that image's bytes, and deleting
        the new image removed them (the swift store did both).  Refused,
        as copy-from and as a location, and the image it named is intact.
        """
        await self.storeServer()
        data = os.urandom(1000)
        victim = await self.create(data)
        self.assertEqual(victim["status"], "active")
        borrowed = self.credentiallessLocation(victim["id"], self.storeAddress)
        for header in ("x-image-meta-location", "x-glance-api-copy-from"):
            resp, body = await self.create(headers=dict(RAW, **{header: borrowed}),
                                           expect=400)
            self.assertIn(b"location", body)
        resp, body = await self.request("GET", "/v1/images/detail", expect=200)
        self.assertEqual([i["id"] for i in json.loads(body)["images"]], [victim["id"]])
        await self.checkRoundTrip(victim, data)


class _S3Mixin(_RemoteStoreMixin):
    storeName = "s3"
    urlVariable: str
    access = USER
    secret = KEY

    def setUpStore(self):
        self.s3url = _serverURL(self, self.urlVariable)
        self.storeAddress = urlsplit(self.s3url).netloc
        self.s3 = _boto3(self.s3url, self.access, self.secret)
        self.bucket = "glancetx-api-" + uuid.uuid4().hex[:16]
        self.s3.create_bucket(Bucket=self.bucket)
        self.addCleanup(_removeBucket, self.s3, self.bucket)

    def storeOptions(self, address: str) -> Dict[str, Any]:
        return {
            "s3_store_host": "http://" + address,
            "s3_store_access_key": self.access,
            "s3_store_secret_key": self.secret,
            "s3_store_bucket": self.bucket,
            "s3_store_large_object_size": 5,
            "s3_store_large_object_chunk_size": 5,
        }

    def _s3(self, method, **kwargs):
        return deferToThread(getattr(self.s3, method), Bucket=self.bucket, **kwargs)

    async def storedBytes(self, imageId: str) -> bytes:
        def read():
            return self.s3.get_object(Bucket=self.bucket, Key=imageId)["Body"].read()
        return await deferToThread(read)

    async def storedNames(self) -> List[str]:
        listing = await self._s3("list_objects_v2")
        return sorted(o["Key"] for o in listing.get("Contents", []))

    async def leftovers(self) -> List[str]:
        listing = await self._s3("list_multipart_uploads")
        return ["upload %s of %s" % (u["UploadId"], u["Key"]) for u in listing.get("Uploads", [])]

    async def partsStarted(self) -> bool:
        for u in (await self._s3("list_multipart_uploads")).get("Uploads", []):
            parts = await self._s3("list_parts", Key=u["Key"], UploadId=u["UploadId"])
            if parts.get("Parts"):
                return True
        return False

    async def checkLargeObject(self, imageId: str, large: bool) -> None:
        head = await self._s3("head_object", Key=imageId)
        etag = head["ETag"].strip('"')
        if large:
            self.assertRegex(etag, r"-3$", "not a 3-part multipart upload")
        else:
            self.assertNotIn("-", etag)
        self.assertEqual(await self.leftovers(), [])

    async def putSource(self, name: str, data: bytes) -> None:
        await self._s3("put_object", Key=name, Body=data)

    def sourceLocation(self, name: str, address: str) -> str:
        return "s3+http://%s:%s@%s/%s/%s" % (
            quote(self.access, safe=""), quote(self.secret, safe=""), address, self.bucket, name)

    def credentiallessLocation(self, name: str, address: str) -> str:
        return "s3+http://%s/%s/%s" % (address, self.bucket, name)


class _SwiftMixin(_RemoteStoreMixin):
    storeName = "swift"

    def setUpStore(self):
        self.authUrl = _serverURL(self, "GLANCETX_SWIFT_AUTH_URL")
        parts = urlsplit(self.authUrl)
        self.storeAddress = parts.netloc
        self.authPath = parts.path
        self.swift = _Swift(self, self.authUrl)
        self.container = "glancetx-api-" + uuid.uuid4().hex[:16]
        self.addCleanup(lambda: ensureDeferred(self.swift.removeContainer(self.container)))
        self.addCleanup(lambda: ensureDeferred(
            self.swift.removeContainer(self.container + "_segments")))

    def storeOptions(self, address: str) -> Dict[str, Any]:
        return {
            "swift_store_auth_address": "http://%s%s" % (address, self.authPath),
            "swift_store_user": USER,
            "swift_store_key": KEY,
            "swift_store_container": self.container,
            "swift_store_create_container_on_put": "true",
            "swift_store_large_object_size": 5,
            "swift_store_large_object_chunk_size": 5,
        }

    async def storedBytes(self, imageId: str) -> bytes:
        r, body = await self.swift.get(self.container, imageId)
        self.assertEqual(r.code, 200)
        return body

    async def storedNames(self) -> List[str]:
        return sorted(await self.swift.list(self.container))

    async def leftovers(self) -> List[str]:
        return sorted(await self.swift.list(self.container + "_segments"))

    async def partsStarted(self) -> bool:
        return bool(await self.leftovers())

    async def checkLargeObject(self, imageId: str, large: bool) -> None:
        r, _ = await self.swift.request("HEAD", "/%s/%s" % (self.container, imageId))
        self.assertEqual(r.code, 200)
        slo = (r.headers.getRawHeaders("X-Static-Large-Object") or [""])[0].lower()
        segments = await self.leftovers()
        if large:
            self.assertEqual(slo, "true")
            self.assertEqual(len(segments), 3, segments)
            self.assertTrue(all(s.startswith(imageId + "/") for s in segments), segments)
        else:
            self.assertEqual(slo, "")
            self.assertEqual(segments, [])

    async def putSource(self, name: str, data: bytes) -> None:
        await self.swift.put(self.container, name, data)

    def sourceLocation(self, name: str, address: str) -> str:
        return "swift+http://%s:%s@%s%s/%s/%s" % (
            quote(USER, safe=""), quote(KEY, safe=""), address, self.authPath,
            self.container, name)

    def credentiallessLocation(self, name: str, address: str) -> str:
        return "swift+http://%s%s/%s/%s" % (address, self.authPath, self.container, name)


class MotoS3APITests(_S3Mixin, _RemoteStoreAPIMixin, TestCase):
    urlVariable = "GLANCETX_MOTO_URL"


class SwiftS3APITests(_S3Mixin, _RemoteStoreAPIMixin, TestCase):
    urlVariable = "GLANCETX_SWIFT_S3_URL"


class SwiftAPITests(_SwiftMixin, _RemoteStoreAPIMixin, TestCase):
    @async_test
    async def test_ownAccountWithAnotherKeyRefused(self):
        """
        A location that names the store's own account (its auth address and
        user) is read with the key as configured now, so that images
        written before a key rotation still read.  A user's location naming
        that account with any other key was therefore read, and deleted
        with its image, with the operator's key: anyone allowed to set a
        location could read or destroy every image in the store.  Refused,
        as copy-from and as a location, and the image it named is intact;
        with the right key it is accepted.
        """
        await self.storeServer()
        data = os.urandom(1000)
        victim = await self.create(data)
        borrowed = "swift+http://%s:%s@%s%s/%s/%s" % (
            quote(USER, safe=""), "not-the-key", self.storeAddress, self.authPath,
            self.container, victim["id"])
        for header in ("x-image-meta-location", "x-glance-api-copy-from"):
            resp, body = await self.create(headers=dict(RAW, **{header: borrowed}),
                                           expect=400)
            self.assertIn(b"key", body)
            self.assertNotIn(KEY.encode("ascii"), body)
            self.assertNotIn(b"not-the-key", body)
        resp, body = await self.request("GET", "/v1/images/detail", expect=200)
        self.assertEqual([i["id"] for i in json.loads(body)["images"]], [victim["id"]])
        await self.checkRoundTrip(victim, data)
        image = await self.create(headers=dict(RAW, **{
            "x-image-meta-location": self.sourceLocation(victim["id"], self.storeAddress)}))
        self.assertEqual(image["status"], "active")


# --- http sources ----------------------------------------------------------


class HTTPSourceTests(APITestsMixin, TestCase):
    """
    copy-from and locations with an http origin on 127.0.0.1 (in this
    process): refused unless copy_from_allowed_networks lets it in.
    """

    timeout = 120

    async def origin(self, data: bytes) -> str:
        path = self.mktemp()
        os.makedirs(path)
        with open(os.path.join(path, "img"), "wb") as f:
            f.write(data)
        root = Resource()
        root.putChild(b"img", File(os.path.join(path, "img"),
                                   defaultType="application/octet-stream"))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(root))
        self.addCleanup(port.stopListening)
        return "http://127.0.0.1:%d/img" % (port.getHost().port,)

    @async_test
    async def test_loopbackRefusedByDefault(self):
        url = await self.origin(b"x" * 1000)
        await self.server()
        for header in ("x-glance-api-copy-from", "x-image-meta-location"):
            await self.create(headers=dict(RAW, **{header: url}), expect=400)
        resp, body = await self.request("GET", "/v1/images/detail", expect=200)
        self.assertEqual([i["status"] for i in json.loads(body)["images"]
                          if i["status"] not in ("queued", "killed")], [])

    @async_test
    async def test_allowedCopyFromAndLocation(self):
        data = os.urandom(3 * MiB + 11)
        url = await self.origin(data)
        await self.server(copy_from_allowed_networks="127.0.0.0/8")

        image = await self.create(headers=dict(RAW, **{"x-glance-api-copy-from": url}))
        self.assertEqual(image["status"], "saving")
        for _ in range(200):
            resp, _ = await self.request("HEAD", "/v1/images/" + image["id"], expect=200)
            if self.header(resp, "x-image-meta-status") != "queued" and \
                    self.header(resp, "x-image-meta-status") != "saving":
                break
            await sleep(0.1)
        self.assertEqual(self.header(resp, "x-image-meta-status"), "active")
        self.assertEqual(self.header(resp, "x-image-meta-checksum"),
                         hashlib.md5(data).hexdigest())
        self.assertEqual(self.header(resp, "x-image-meta-size"), str(len(data)))
        resp, body = await self.request("GET", "/v1/images/" + image["id"], expect=200)
        self.assertTrue(body == data)

        image = await self.create(headers=dict(RAW, **{"x-image-meta-location": url}))
        self.assertEqual(image["status"], "active")
        self.assertEqual(image["size"], len(data))
        resp, body = await self.request("GET", "/v1/images/" + image["id"], expect=200)
        self.assertTrue(body == data)
        self.assertEqual(resp.length, len(data))
        # A location's origin is missing: a 400 now, not an image later.
        await self.create(headers=dict(RAW, **{"x-image-meta-location": url + "-missing"}),
                          expect=400)
        # A declared size the location does not have is refused, not recorded.
        resp, body = await self.create(headers=dict(RAW, **{
            "x-image-meta-location": url, "x-image-meta-size": str(len(data) + 1)}), expect=400)
        self.assertIn(b"does not match the size at the location", body)


    @async_test
    async def test_failingOriginNamedNowhere(self):
        """
        An image's origin that cannot be reached is told of, in the log
        and to the client, without its host, port or path: a location
        without its credentials still named them.
        """
        path = self.mktemp()
        os.makedirs(path)
        with open(os.path.join(path, "img"), "wb") as f:
            f.write(os.urandom(1000))
        served = File(os.path.join(path, "img"), defaultType="application/octet-stream")

        class Origin(Resource):
            isLeaf = True
            broken = False

            def render(self, request):
                if self.broken:
                    request.transport.abortConnection()
                    return NOT_DONE_YET
                return served.render(request)

        origin = Origin()
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(origin))
        self.addCleanup(port.stopListening)
        url = "http://127.0.0.1:%d/private/img" % (port.getHost().port,)
        await self.server(copy_from_allowed_networks="127.0.0.0/8")
        image = await self.create(headers=dict(RAW, **{"x-image-meta-location": url}))
        origin.broken = True
        resp, body = await self.request("GET", "/v1/images/" + image["id"], expect=503)
        resp, body = await self.create(headers=dict(RAW, **{"x-glance-api-copy-from": url}),
                                       expect=400)
        self.assertIn(b"<http location>: the origin could not be reached", body)
        self.assertNotIn(b"/private/img", body)
        log = self.glance.log()
        self.assertIn("failed to serve %s: <http location>: the origin could not be reached"
                      % (image["id"],), log)
        # (Debug lines may name it.)
        told = "\n".join(line for line in log.splitlines() if "#debug]" not in line)
        self.assertNotIn("/private/img", told)
        self.assertNotIn("127.0.0.1:%d" % (port.getHost().port,), told)

    @async_test
    async def test_copyCutByShutdownKills(self):
        """
        A server told to stop while a copy-from streams in ends the copy,
        kills the image and removes its partial bytes before it exits.
        """
        from twisted.web.server import NOT_DONE_YET

        class Stalling(Resource):
            # Promises 10 MiB, sends 100 KB, then nothing more.
            isLeaf = True

            def render_HEAD(self, request):
                request.setHeader(b"content-length", b"%d" % (10 * MiB,))
                return b""

            def render_GET(self, request):
                request.setHeader(b"content-length", b"%d" % (10 * MiB,))
                request.write(b"s" * 100000)
                return NOT_DONE_YET

        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(Stalling()))
        self.addCleanup(port.stopListening)
        url = "http://127.0.0.1:%d/img" % (port.getHost().port,)
        await self.server(copy_from_allowed_networks="127.0.0.0/8")
        image = await self.create(headers=dict(RAW, **{"x-glance-api-copy-from": url}))
        for _ in range(200):
            resp, _ = await self.request("HEAD", "/v1/images/" + image["id"], expect=200)
            if self.header(resp, "x-image-meta-status") == "saving":
                break
            await sleep(0.05)
        self.assertEqual(self.header(resp, "x-image-meta-status"), "saving")
        await self.glance.stop()
        self.assertIn("the server is shutting down", self.glance.log())
        await self.server(dataDir=self.glance.dataDir,
                          copy_from_allowed_networks="127.0.0.0/8")
        resp, _ = await self.request("HEAD", "/v1/images/" + image["id"], expect=200)
        self.assertEqual(self.header(resp, "x-image-meta-status"), "killed")
        self.assertEqual(os.listdir(os.path.join(self.glance.dataDir, "images")), [])


class HTTPSSourceTests(APITestsMixin, TestCase):
    """
    copy-from an https origin whose certificate a test CA signed: the
    server, started without pyOpenSSL loaded (L{glancetx.lazytls}), loads
    it for this first TLS connection and verifies the origin with it.
    """

    timeout = 120

    def _mapped(self) -> str:
        with open("/proc/%d/maps" % (self.glance.pid(),)) as f:
            return f.read()

    async def origin(self, data: bytes) -> str:
        from twisted.internet.ssl import PrivateCertificate

        path = os.path.abspath(self.mktemp())
        caPath, serverPEM = makeCertificates(path)
        with open(os.path.join(path, "img"), "wb") as f:
            f.write(data)
        root = Resource()
        root.putChild(b"img", File(os.path.join(path, "img"),
                                   defaultType="application/octet-stream"))
        options = PrivateCertificate.loadPEM(serverPEM).options()
        port = reactor.listenSSL(0, Site(root), options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return caPath, "https://localhost:%d/img" % (port.getHost().port,)

    async def settled(self, imageId: str):
        for _ in range(200):
            resp, _ = await self.request("HEAD", "/v1/images/" + imageId, expect=200)
            if self.header(resp, "x-image-meta-status") not in ("queued", "saving"):
                break
            await sleep(0.1)
        return resp

    @async_test
    async def test_copyFromHTTPSLoadsTLSOnFirstUse(self):
        data = os.urandom(MiB + 7)
        caPath, url = await self.origin(data)
        await self.server(env={"SSL_CERT_FILE": caPath},
                          copy_from_allowed_networks="127.0.0.0/8")
        self.assertNotIn("/cryptography/", self._mapped())

        image = await self.create(headers=dict(RAW, **{"x-glance-api-copy-from": url}))
        resp = await self.settled(image["id"])
        self.assertEqual(self.header(resp, "x-image-meta-status"), "active", self.glance.log())
        self.assertEqual(self.header(resp, "x-image-meta-checksum"),
                         hashlib.md5(data).hexdigest())
        self.assertIn("/cryptography/", self._mapped())

    @async_test
    async def test_untrustedOriginRefused(self):
        """
        Without the test CA in the trust store, the origin's certificate
        fails verification and the location is refused.
        """
        _, url = await self.origin(b"x" * 1000)
        await self.server(copy_from_allowed_networks="127.0.0.0/8")
        await self.create(headers=dict(RAW, **{"x-image-meta-location": url}), expect=400)


# --- The drivers' background clean-up ------------------------------------------


class _FakeStep:
    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self):
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome


class CleanupRetriesTests(SynchronousTestCase):
    """
    L{glancetx.store.cleanup.CleanupRetries} on a fake clock.
    """

    def retries(self):
        from glancetx.store.cleanup import CleanupRetries as _CleanupRetries

        self.clock = task.Clock()
        self.logged: List[dict] = []
        log = Logger(observer=self.logged.append)
        return _CleanupRetries(self.clock, log, firstDelay=1, maxDelay=8, deadline=30)

    def test_retriesWithBackoffUntilDone(self):
        r = self.retries()
        step = _FakeStep([StoreUnavailable("down"), StoreUnavailable("down"), None])
        r.add("abort upload x", step)
        idle = r.whenIdle()
        self.assertEqual(r.pending(), 1)
        self.clock.advance(1)
        self.assertEqual(step.calls, 1)
        self.clock.advance(1.9)
        self.assertEqual(step.calls, 1)
        self.clock.advance(0.1)   # 2 s later
        self.assertEqual(step.calls, 2)
        self.clock.advance(4)
        self.assertEqual(step.calls, 3)
        self.assertEqual(r.pending(), 0)
        self.successResultOf(idle)

    def test_givesUpAtDeadline(self):
        r = self.retries()
        step = _FakeStep([StoreUnavailable("down")] * 100)
        r.add("abort upload x", step)
        self.clock.pump([1] * 100)
        # 1, 2, 4, 8, 8 (=23 s), and the next would pass 30 s.
        self.assertEqual(step.calls, 5)
        self.assertEqual(r.pending(), 0)
        self.assertTrue(any("gave up" in e["log_format"] for e in self.logged))

    def test_refusalNotRetried(self):
        r = self.retries()
        step = _FakeStep([StoreError("403"), None])
        r.add("abort upload x", step)
        self.clock.advance(1)
        self.clock.pump([1] * 40)
        self.assertEqual(step.calls, 1)
        self.assertEqual(r.pending(), 0)

    def test_cancelAll(self):
        r = self.retries()
        step = _FakeStep([StoreUnavailable("down")] * 100)
        r.add("abort upload x", step)
        r.add("abort upload y", step)
        idle = r.whenIdle()
        r.cancelAll()
        self.successResultOf(idle)
        self.clock.pump([1] * 40)
        self.assertEqual(step.calls, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DriverCleanupRetryTests(TestCase):
    """
    The drivers retry a clean-up that found the store unreachable, through
    a proxy that is cut and restored.
    """

    timeout = 120

    async def proxyTo(self, url: str) -> TCPProxy:
        parts = urlsplit(url)
        proxy = TCPProxy(reactor, parts.hostname, parts.port)
        await proxy.start()
        self.addCleanup(proxy.stop)
        return proxy

    def client(self) -> HTTPClient:
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        return HTTPClient(Agent(reactor, pool=pool))

    async def s3Store(self, variable: str):
        from glancetx.store.s3 import S3Location, S3Store

        url = _serverURL(self, variable)
        s3 = _boto3(url, USER, KEY)
        bucket = "glancetx-retry-" + uuid.uuid4().hex[:12]
        s3.create_bucket(Bucket=bucket)
        self.addCleanup(_removeBucket, s3, bucket)
        proxy = await self.proxyTo(url)
        store = S3Store.fromConfig({
            "s3_store_host": "http://" + proxy.address, "s3_store_access_key": USER,
            "s3_store_secret_key": KEY, "s3_store_bucket": bucket}, reactor, self.client())
        self.addCleanup(store.cancelCleanups)
        loc = S3Location(False, proxy.address, USER, KEY, bucket, "img")
        return s3, bucket, proxy, store, loc

    async def abortRetried(self, variable: str):
        s3, bucket, proxy, store, loc = await self.s3Store(variable)
        upload = s3.create_multipart_upload(Bucket=bucket, Key="img")["UploadId"]
        await proxy.cut()
        await store._abort(loc, upload)
        self.assertEqual(store.pendingCleanups(), 1)
        self.assertEqual(len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])), 1)
        await proxy.restore()
        await store.whenCleanedUp()
        self.assertEqual(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []), [])

    async def unknownUploadAborted(self, variable: str):
        """
        A multipart start whose answer was lost: every upload open for the
        image's key is aborted (once the store is back), and no other.
        """
        s3, bucket, proxy, store, loc = await self.s3Store(variable)
        for key in ("img", "img", "img-other"):
            s3.create_multipart_upload(Bucket=bucket, Key=key)
        await proxy.cut()
        await store._abortUnknown(loc)
        self.assertEqual(store.pendingCleanups(), 1)
        await proxy.restore()
        await store.whenCleanedUp()
        left = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        self.assertEqual([u["Key"] for u in left], ["img-other"])

    @async_test
    async def test_s3LostMultipartStartAnswer(self):
        """
        S3 began a multipart upload but its answer was lost: the failed add
        leaves no upload open.
        """
        from tests.bodies import BytesBody

        s3, bucket, proxy, store, loc = await self.s3Store("GLANCETX_MOTO_URL")
        store.largeObjectSize = store.chunkSize = 5 * MiB
        realInitiate = store._initiate

        async def initiate(loc):
            await realInitiate(loc)
            raise StoreUnavailable("S3 multipart start failed: cannot reach the store")

        store._initiate = initiate
        with self.assertRaises(StoreUnavailable):
            await store.add("img", BytesBody(reactor, b"x" * (12 * MiB)))
        await store.whenCleanedUp()
        self.assertEqual(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []), [])

    @async_test
    async def test_s3AbandonedUploadRemovalRetried(self):
        """
        What a dead upload left (an open multipart upload, a whole object)
        is removed once S3 is back, if it could not be reached at first;
        another image's upload stays.
        """
        s3, bucket, proxy, store, loc = await self.s3Store("GLANCETX_MOTO_URL")
        for key in ("img", "img-other"):
            s3.create_multipart_upload(Bucket=bucket, Key=key)
        s3.put_object(Bucket=bucket, Key="img", Body=b"whole")
        await proxy.cut()
        await store.removeAbandoned("img")
        self.assertEqual(store.pendingCleanups(), 2)
        await proxy.restore()
        await store.whenCleanedUp()
        left = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        self.assertEqual([u["Key"] for u in left], ["img-other"])
        self.assertEqual(s3.list_objects_v2(Bucket=bucket).get("Contents", []), [])

    @async_test
    async def test_s3AbortRetriedMoto(self):
        await self.abortRetried("GLANCETX_MOTO_URL")

    @async_test
    async def test_s3AbortRetriedSwiftS3(self):
        await self.abortRetried("GLANCETX_SWIFT_S3_URL")

    @async_test
    async def test_s3UnknownUploadAbortedMoto(self):
        await self.unknownUploadAborted("GLANCETX_MOTO_URL")

    @async_test
    async def test_s3UnknownUploadAbortedSwiftS3(self):
        await self.unknownUploadAborted("GLANCETX_SWIFT_S3_URL")

    async def swiftStore(self):
        """
        A direct Swift client, a container name of the test's own (it and
        its segments container are removed afterwards), a proxy to Swift,
        and a store for that container through the proxy.
        """
        from glancetx.store.swift import SwiftStore

        authUrl = _serverURL(self, "GLANCETX_SWIFT_AUTH_URL")
        swift = _Swift(self, authUrl)
        container = "glancetx-retry-" + uuid.uuid4().hex[:12]
        for c in (container, container + "_segments"):
            self.addCleanup(lambda c=c: ensureDeferred(swift.removeContainer(c)))
        proxy = await self.proxyTo(authUrl)
        parts = urlsplit(authUrl)
        store = SwiftStore(reactor, self.client(),
                           authAddress="http://%s%s" % (proxy.address, parts.path),
                           user=USER, key=KEY, container=container)
        self.addCleanup(store.cancelCleanups)
        return swift, container, proxy, store

    @async_test
    async def test_swiftDeleteRetried(self):
        swift, container, proxy, store = await self.swiftStore()
        await swift.put(container, "seg/1", b"x" * 100)
        self.assertEqual(await store.listObjects(container), ["seg/1"])
        await proxy.cut()
        await store._deleteQuietly(store._configuredCredentials(), "/%s/seg/1" % (container,))
        self.assertEqual(store.pendingCleanups(), 1)
        self.assertEqual(await swift.list(container), ["seg/1"])
        await proxy.restore()
        await store.whenCleanedUp()
        self.assertEqual(await swift.list(container), [])

    @async_test
    async def test_swiftAbandonedUploadRemovalRetried(self):
        """
        A dead upload's segments and object are removed once Swift is back,
        if it could not be reached (not even to list them) at first; another
        image's segments stay.
        """
        swift, container, proxy, store = await self.swiftStore()
        segments = container + "_segments"
        for name in ("img/up/00000001", "img/up/00000002", "other/up/00000001"):
            await swift.put(segments, name, b"x" * 100)
        await swift.put(container, "img", b"whole")
        await proxy.cut()
        await store.removeAbandoned("img")
        self.assertEqual(store.pendingCleanups(), 1)
        self.assertEqual(len(await swift.list(segments)), 3)
        await proxy.restore()
        await store.whenCleanedUp()
        self.assertEqual(await swift.list(segments), ["other/up/00000001"])
        self.assertEqual(await swift.list(container), [])
