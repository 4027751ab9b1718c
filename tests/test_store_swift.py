"""
The Swift store against a real Swift on loopback (scripts/swift-saio.sh), and
its location and configuration handling without one.

The server tests read C{GLANCETX_SWIFT_AUTH_URL} (for example
C{http://127.0.0.1:8080/auth/v1.0}; user C{test:tester}, key C{testing}).
Without it they are skipped, or fail when C{CI=true}.
"""

import json
import os
from typing import Any, Dict
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
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
from glancetx.store.swift import (
    SwiftStore,
    _Download,
    _SegmentWriter,
    _WatchedBody,
    makeLocation,
    parseLocation,
)
from tests.bodies import BytesBody, FailedBody, readAll
from tests.store_contract import StoreContractMixin

USER = "test:tester"
KEY = "testing"
#: Segment sizes for the tests: small, so that the contract's "large" body
#: (3 MiB + 17 bytes) becomes several segments and a short last one.
LARGE_OBJECT_SIZE = 1024 * 1024
CHUNK_SIZE = 1024 * 1024


def swiftAuthUrl() -> str:
    url = os.environ.get("GLANCETX_SWIFT_AUTH_URL")
    if not url:
        reason = (
            "GLANCETX_SWIFT_AUTH_URL is not set; start a Swift with "
            "scripts/swift-saio.sh start and export "
            "GLANCETX_SWIFT_AUTH_URL=http://127.0.0.1:8080/auth/v1.0"
        )
        if os.environ.get("CI") == "true":
            raise AssertionError(reason)
        raise SkipTest(reason)
    return url


def _client(testCase: TestCase) -> HTTPClient:
    pool = HTTPConnectionPool(reactor, persistent=True)
    testCase.addCleanup(pool.closeCachedConnections)
    return HTTPClient(Agent(reactor, pool=pool))


class SwiftStoreTests(StoreContractMixin, TestCase):
    """
    The store contract, plus Swift specifics, against a real Swift.  Every
    test has a container of its own, removed afterwards.
    """

    #: The account's credentials, and how to authenticate them (a subclass
    #: runs the same tests with Keystone v3).
    user = USER
    key = KEY

    def authUrl(self) -> str:
        return swiftAuthUrl()

    def authOptions(self) -> Dict[str, Any]:
        return {}

    def location(self, container: str, obj: str) -> str:
        return makeLocation(self.authUrl(), self.user, self.key, container, obj)

    def makeStore(self, **overrides) -> SwiftStore:
        authUrl = self.authUrl()
        self.containerName = "glancetx-test-" + os.urandom(6).hex()
        kwargs = dict(
            authAddress=authUrl,
            user=self.user,
            key=self.key,
            container=self.containerName,
            createContainer=True,
            largeObjectSize=LARGE_OBJECT_SIZE,
            chunkSize=CHUNK_SIZE,
            **self.authOptions(),
        )
        kwargs.update(overrides)
        store = SwiftStore(reactor, _client(self), **kwargs)
        # Clean up with known-good credentials, whatever the test changed.
        cleaner = SwiftStore(reactor, _client(self), authAddress=authUrl, user=self.user,
                             key=self.key, container=self.containerName,
                             **self.authOptions())
        self.addCleanup(lambda: ensureDeferred(self._removeContainers(cleaner)))
        self.store = store
        return store

    async def _removeContainers(self, store: SwiftStore) -> None:
        creds = store._configuredCredentials()
        for container in (store.container, store.segmentsContainer):
            for name in await store.listObjects(container):
                await store._deleteObject(creds, "/%s/%s" % (container, name))
            await store._deleteObject(creds, "/" + container)

    async def _leftovers(self):
        store = await self._store()
        images = set(await store.listObjects(store.container))
        segments = await store.listObjects(store.segmentsContainer)
        # An object in the image container exists only once its PUT (or
        # manifest) completed; a segment belongs to a completed image if one
        # of that name exists.
        orphans = [
            "%s/%s" % (store.segmentsContainer, name)
            for name in segments
            if name.split("/", 1)[0] not in images
        ]
        return orphans

    def leftovers(self):
        return ensureDeferred(self._leftovers())

    def leaveAbandonedUpload(self, store, imageId):
        async def go():
            from glancetx.store.swift import _BytesBody, _objectPath
            creds = store._configuredCredentials()
            await store._ensureContainer(creds, store.container, True)
            await store._ensureContainer(creds, store.segmentsContainer, True)
            for container, name in ((store.segmentsContainer, imageId + "/up1/00000001"),
                                    (store.segmentsContainer, imageId + "/up1/00000002"),
                                    (store.container, imageId)):
                response = await store._authed(creds, "PUT", _objectPath(container, name),
                                               data=_BytesBody(b"x" * 1000))
                await response.content()
                self.assertEqual(response.code, 201)
        return ensureDeferred(go())

    def holds(self, store, imageId):
        async def go():
            return imageId in await store.listObjects(store.container)
        return ensureDeferred(go())

    async def _images(self):
        store = await self._store()
        return await store.listObjects(store.container)

    def test_largeIsStaticLargeObject(self):
        """
        A body above the threshold is stored as an SLO whose segments sit in
        the segments container, and deleting it removes them all.
        """
        async def go():
            store, stored = await self._roundTrip(os.urandom(self.largeSize))
            segments = await store.listObjects(store.segmentsContainer)
            self.assertEqual(len(segments), 4)
            creds, parsed = store._locate(stored.location)
            head = await store._head(creds, parsed)
            self.assertEqual(head.headers.getRawHeaders("X-Static-Large-Object"), ["True"])
            await store.delete(stored.location)
            self.assertEqual(await store.listObjects(store.segmentsContainer), [])
            self.assertEqual(await self._images(), [])
        return ensureDeferred(go())

    def test_exactMultipleOfChunkUnknownLength(self):
        """
        An unknown-length body that is an exact multiple of the chunk size
        gives no empty last segment.
        """
        async def go():
            store, stored = await self._roundTrip(
                os.urandom(2 * CHUNK_SIZE), knownLength=False)
            self.assertEqual(len(await store.listObjects(store.segmentsContainer)), 2)
        return ensureDeferred(go())

    def test_deleteGlanceDynamicLargeObject(self):
        """
        A DLO as Glance writes them (segments C{<obj>-00001}… beside the
        manifest) is read whole and deleted with its segments.
        """
        async def go():
            store = await self._store()
            creds = store._configuredCredentials()
            c = self.containerName
            await store._ensureContainer(creds, c, True)
            for name, data in (("img-00001", b"abc"), ("img-00002", b"de")):
                r = await store._authed(creds, "PUT", "/%s/%s" % (c, name), data=data)
                self.assertEqual(r.code, 201)
            r = await store._authed(creds, "PUT", "/%s/img" % (c,), data=b"",
                                    headers={"X-Object-Manifest": "%s/img-" % (c,)})
            self.assertEqual(r.code, 201)
            location = self.location(c, "img")
            self.assertEqual(await store.get_size(location), 5)
            self.assertEqual(await readAll(reactor, await store.get(location)), b"abcde")
            await store.delete(location)
            self.assertEqual(await self._images(), [])
        return ensureDeferred(go())

    def test_emptyUnknownLength(self):
        return ensureDeferred(self._roundTrip(b"", knownLength=False))

    def test_smallUnknownLength(self):
        """
        A short body of unknown length is one segment under a manifest.
        """
        return ensureDeferred(self._roundTrip(b"tiny" * 10, knownLength=False))

    def test_failedSmallBodyLeavesNothing(self):
        """
        A body below the threshold (one streamed PUT) that fails half way
        leaves no object behind.
        """
        async def go():
            store = await self._store()
            data = os.urandom(LARGE_OBJECT_SIZE // 2)
            body = BytesBody(reactor, data, failAfter=len(data) // 2)
            with self.assertRaises(UploadFailed):
                await store.add(self.imageId(), body)
            self.assertEqual(await self._images(), [])
        return ensureDeferred(go())

    def test_failedAtTheEndLeavesNothing(self):
        """
        A body that has sent every byte and only then fails (a checksum
        mismatch found at the end) leaves nothing, on either path.
        """
        async def go():
            store = await self._store()
            for size in (1000, self.largeSize):
                data = os.urandom(size)
                body = BytesBody(reactor, data, failAfter=len(data))
                with self.assertRaises(UploadFailed):
                    await store.add(self.imageId(), body)
            self.assertEqual(await self._images(), [])
            self.assertEqual(await store.listObjects(store.segmentsContainer), [])
        return ensureDeferred(go())

    def test_failedLargeBodyLeavesNoImage(self):
        """
        After a failed segmented upload neither a manifest nor a segment
        remains.
        """
        async def go():
            store = await self._store()
            data = os.urandom(self.largeSize)
            body = BytesBody(reactor, data, failAfter=2 * CHUNK_SIZE + 5)
            with self.assertRaises(UploadFailed):
                await store.add(self.imageId(), body)
            self.assertEqual(await self._images(), [])
            self.assertEqual(await store.listObjects(store.segmentsContainer), [])
        return ensureDeferred(go())

    def test_backpressure(self):
        """
        The body is paused while Swift catches up: memory stays bounded.
        """
        async def go():
            store = await self._store()
            data = os.urandom(self.largeSize)
            body = BytesBody(reactor, data, chunk=256 * 1024)
            stored = await store.add(self.imageId(), body)
            self.assertEqual(stored.size, len(data))
            self.assertGreater(body.pauses, 0)
        return ensureDeferred(go())

    def test_locationFormat(self):
        async def go():
            store = await self._store()
            stored = await store.add("abc", BytesBody(reactor, b"x"))
            host = self.authUrl().split("://", 1)[1]
            self.assertEqual(
                stored.location,
                "swift+http://%s:%s@%s/%s/abc" % (quote(self.user, safe=""), self.key, host,
                                                   self.containerName))
        return ensureDeferred(go())

    def test_locationsWithARotatedKeyStillRead(self):
        """
        A location records the account's key as it was when the image was
        written.  Once the operator has changed that key (and the store's
        configuration with it), the store's own account's images still
        read and delete, with the key as configured now; before, each one
        answered 503 for good.
        """
        async def go():
            store, stored = await self._roundTrip(b"rotated" * 10)
            self.assertIn(":%s@" % (quote(self.key, safe=""),), stored.location)
            stale = stored.location.replace(":%s@" % (quote(self.key, safe=""),),
                                            ":an-old-key@", 1)
            self.assertNotEqual(stale, stored.location)
            self.assertEqual(await store.get_size(stale), 70)
            self.assertEqual(await readAll(reactor, await store.get(stale)), b"rotated" * 10)
            await store.delete(stale)
            with self.assertRaises(LocationNotFound):
                await store.get_size(stored.location)
        return ensureDeferred(go())

    def test_missingObject(self):
        async def go():
            store = await self._store()
            location = self.location(self.containerName, "nope")
            await store._ensureContainer(store._configuredCredentials(), self.containerName, True)
            with self.assertRaises(LocationNotFound):
                await store.get(location)
            with self.assertRaises(LocationNotFound):
                await store.get_size(location)
            await store.delete(location)
        return ensureDeferred(go())

    def test_noContainerNoCreate(self):
        """
        Without create-on-put, a missing container is a store error and the
        body is never started.
        """
        async def go():
            store = self.makeStore(createContainer=False)
            body = BytesBody(reactor, b"data")
            with self.assertRaises(StoreError) as caught:
                await store.add(self.imageId(), body)
            self.assertIn("does not exist", str(caught.exception))
            self.assertNotIn(self.key, str(caught.exception))
        return ensureDeferred(go())

    def test_badCredentials(self):
        async def go():
            store = self.makeStore(key="wrong-key")
            with self.assertRaises(StoreError) as caught:
                await store.add(self.imageId(), BytesBody(reactor, b"data"))
            self.assertNotIn("wrong-key", str(caught.exception))
        return ensureDeferred(go())

    def test_expiredTokenRenewed(self):
        """
        A token Swift no longer accepts is renewed once and the request
        retried.
        """
        async def go():
            store, stored = await self._roundTrip(b"y" * 100)
            creds = store._configuredCredentials()
            old = store._sessions[creds]
            store._sessions[creds] = type(old)(storageUrl=old.storageUrl, token="AUTH_tkexpired")
            self.assertEqual(await store.get_size(stored.location), 100)
            producer = await store.get(stored.location)
            self.assertEqual(await readAll(reactor, producer), b"y" * 100)
            # An upload starts with a check that renews the token too.
            store._sessions[creds] = type(old)(storageUrl=old.storageUrl, token="AUTH_tkexpired")
            await store.add(self.imageId(), BytesBody(reactor, os.urandom(self.largeSize)))
        return ensureDeferred(go())

    def test_downloadBackpressure(self):
        """
        A paused download stops reading; resuming finishes it intact.
        """
        async def go():
            store = await self._store()
            data = os.urandom(self.largeSize)
            stored = await store.add(self.imageId(), BytesBody(reactor, data))
            producer = await store.get(stored.location)
            chunks = []

            class Pausing:
                def write(self, chunk):
                    chunks.append(chunk)
                    if len(chunks) == 1:
                        producer.pauseProducing()
                        reactor.callLater(0.2, producer.resumeProducing)

                def registerProducer(self, p, streaming):
                    pass

                def unregisterProducer(self):
                    pass

            await producer.startProducing(Pausing())
            self.assertEqual(b"".join(chunks), data)
        return ensureDeferred(go())

    def test_stopDownload(self):
        """
        A consumer that stops a download closes its connection.
        """
        async def go():
            store, stored = await self._roundTrip(os.urandom(200000))
            producer = await store.get(stored.location)
            producer.stopProducing()
        return ensureDeferred(go())


class _FakeKeystone(Resource):
    """
    Keystone v3's token call, handing out a real Swift token (got from
    tempauth) and a catalog that points at the real Swift.
    """

    isLeaf = True

    def __init__(self, token: str, storageUrl: str) -> None:
        super().__init__()
        self.token = token
        self.storageUrl = storageUrl
        self.requests = []

    def render_POST(self, request):
        self.requests.append((request.path, json.loads(request.content.read())))
        if request.path != b"/v3/auth/tokens":
            request.setResponseCode(404)
            return b""
        request.setResponseCode(201)
        request.setHeader("X-Subject-Token", self.token)
        request.setHeader("Content-Type", "application/json")
        catalog = [
            {"type": "identity", "endpoints": [
                {"interface": "public", "region": "RegionOne", "url": "http://unused"}]},
            {"type": "object-store", "endpoints": [
                {"interface": "admin", "region": "RegionOne", "url": "http://unused"},
                {"interface": "public", "region": "RegionOne", "url": self.storageUrl},
            ]},
        ]
        return json.dumps({"token": {"catalog": catalog}}).encode()


class KeystoneV3Tests(TestCase):
    """
    Keystone v3 password auth, against a fake Keystone whose catalog names
    the real Swift.
    """

    def test_roundTrip(self):
        async def go():
            authUrl = swiftAuthUrl()
            client = _client(self)
            response = await client.get(
                authUrl, headers={"X-Auth-User": USER, "X-Auth-Key": KEY})
            await response.content()
            token = response.headers.getRawHeaders("X-Auth-Token")[0]
            storageUrl = response.headers.getRawHeaders("X-Storage-Url")[0]
            keystone = _FakeKeystone(token, storageUrl)
            port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
                Site(keystone))
            self.addCleanup(port.stopListening)
            address = "http://127.0.0.1:%d/v3" % (port.getHost().port,)
            container = "glancetx-test-" + os.urandom(6).hex()
            store = SwiftStore.fromConfig({
                "swift_store_auth_version": "3",
                "swift_store_auth_address": address,
                "swift_store_user": "service:glance",
                "swift_store_key": "s3cret",
                "swift_store_container": container,
                "swift_store_create_container_on_put": "true",
            }, reactor, client)
            cleaner = SwiftStore(reactor, client, authAddress=authUrl, user=USER,
                                 key=KEY, container=container)
            self.addCleanup(lambda: ensureDeferred(
                SwiftStoreTests._removeContainers(None, cleaner)))
            stored = await store.add("img", BytesBody(reactor, b"v3 bytes"))
            self.assertEqual(
                stored.location,
                "swift+http://service%%3Aglance:s3cret@127.0.0.1:%d/v3/%s/img"
                % (port.getHost().port, container))
            producer = await store.get(stored.location)
            self.assertEqual(await readAll(reactor, producer), b"v3 bytes")
            path, body = keystone.requests[0]
            self.assertEqual(body["auth"]["identity"]["password"]["user"], {
                "name": "glance", "domain": {"name": "Default"}, "password": "s3cret"})
            self.assertEqual(body["auth"]["scope"]["project"], {
                "name": "service", "domain": {"name": "Default"}})
            self.assertEqual(len(keystone.requests), 1)
        return ensureDeferred(go())


class _FakeBody:
    def __init__(self):
        self.paused = False

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False


class _FakeConsumer:
    def __init__(self):
        self.data = []

    def write(self, data):
        self.data.append(data)


class WatchedBodyTests(TestCase):
    def test_failedBeforeStart(self):
        """
        A body that failed before the HTTP client started it (the client
        went away while the connection to Swift was being made) fails the
        Deferred the HTTP client gets: it once got None, and the failure
        was logged as unhandled.
        """
        watched = _WatchedBody(FailedBody())
        forClient = watched.startProducing(_FakeConsumer())
        self.assertIsInstance(forClient, Deferred)
        self.failureResultOf(forClient, UploadFailed)
        self.assertTrue(watched.settled.called)


class DownloadTests(TestCase):
    def test_abort(self):
        """
        A copy-from the server ends at shutdown closes Swift's connection
        and fails, started or not.
        """
        from twisted.internet.testing import StringTransport
        download = _Download(6)
        transport = StringTransport()
        download.makeConnection(transport)
        d = download.startProducing(_FakeConsumer())
        download.dataReceived(b"abc")
        download.abort()
        self.failureResultOf(d, StoreUnavailable)
        self.assertEqual(transport.producerState, "stopped")
        unstarted = _Download(6)
        unstarted.makeConnection(StringTransport())
        unstarted.abort()
        self.failureResultOf(unstarted.startProducing(_FakeConsumer()), StoreUnavailable)


class SegmentWriterTests(TestCase):
    """
    Flow control of the segmented upload, with uploads that end when the
    test says so.
    """

    def setUp(self):
        self.uploads = []

        def upload(name, body):
            d = Deferred()
            self.uploads.append((name, body, d))
            return d

        self.writer = _SegmentWriter(upload, "img/u/", 10, None, 1000)
        self.body = _FakeBody()
        self.writer.registerProducer(self.body, True)

    def inFlight(self):
        return [u for u in self.uploads if not u[2].called]

    def test_atMostTwoInFlight(self):
        w = self.writer
        w.write(b"a" * 10)
        w.write(b"b" * 10)
        # The first segment is complete only once the next write shows the
        # body went on (the latest write is held back).
        self.assertEqual(len(self.uploads), 1)
        w.write(b"c" * 5)
        self.assertEqual(len(self.uploads), 2)
        self.assertTrue(self.body.paused)
        self.uploads[0][2].callback("etag0")
        self.assertFalse(self.body.paused)
        w.write(b"c" * 5)
        self.assertEqual(len(self.inFlight()), 2)

    def test_bufferUntilConnected(self):
        w = self.writer
        w.write(b"x" * 4)
        w.write(b"y" * 4)
        name, body, d = self.uploads[0]
        self.assertEqual(name, "img/u/00000001")
        consumer = _FakeConsumer()
        result = body.startProducing(consumer)
        self.assertEqual(b"".join(consumer.data), b"x" * 4)
        w.write(b"z" * 2)
        self.assertEqual(b"".join(consumer.data), b"x" * 4 + b"y" * 4)
        self.assertFalse(result.called)

    def test_segmentPauseHeldUntilResume(self):
        """
        A segment the connection paused ends its PUT only once resumed; the
        body is not held back by it meanwhile.
        """
        w = self.writer
        w.write(b"a" * 4)
        w.write(b"a" * 6)
        name, body, d = self.uploads[0]
        result = body.startProducing(_FakeConsumer())
        body.pauseProducing()
        self.assertTrue(self.body.paused)
        w.write(b"b")
        self.assertFalse(self.body.paused)
        self.assertFalse(result.called)
        body.resumeProducing()
        self.assertTrue(result.called)

    def test_failureAbortsSegments(self):
        w = self.writer
        w.write(b"a" * 10)
        w.write(b"b" * 3)
        w.write(b"b" * 3)
        failures = []
        w.failed.addErrback(failures.append)
        self.uploads[1][2].errback(StoreError("boom"))
        self.assertEqual(len(failures), 1)
        result = self.uploads[1][1].startProducing(_FakeConsumer())
        self.failureResultOf(result, StoreError)


class LocationTests(TestCase):
    def test_roundTrip(self):
        location = makeLocation(
            "http://127.0.0.1:8080/auth/v1.0/", "account:user", "k:e/y@1", "glance", "img-1")
        self.assertEqual(
            location,
            "swift+http://account%3Auser:k%3Ae%2Fy%401@127.0.0.1:8080/auth/v1.0/glance/img-1")
        parsed = parseLocation(location)
        self.assertEqual(parsed.authAddress, "http://127.0.0.1:8080/auth/v1.0")
        self.assertEqual(parsed.user, "account:user")
        self.assertEqual(parsed.key, "k:e/y@1")
        self.assertEqual((parsed.container, parsed.obj), ("glance", "img-1"))

    def test_httpsAndKeystone(self):
        location = makeLocation("https://keystone:5000/v3", "proj:user", "pw", "glance", "i")
        self.assertEqual(location, "swift+https://proj%3Auser:pw@keystone:5000/v3/glance/i")
        self.assertEqual(parseLocation(location).authAddress, "https://keystone:5000/v3")

    def test_plainSwiftSchemeMeansHttps(self):
        parsed = parseLocation("swift://a:u:key@host/auth/v1.0/c/o")
        self.assertEqual(parsed.authAddress, "https://host/auth/v1.0")
        # Old unquoted form: the key is what follows the last colon.
        self.assertEqual((parsed.user, parsed.key), ("a:u", "key"))

    def test_withoutCredentials(self):
        parsed = parseLocation("swift+http://host:8080/auth/v1.0/c/o")
        self.assertIsNone(parsed.user)
        self.assertIsNone(parsed.key)

    def test_bad(self):
        for bad in [
            "http://host/c/o",
            "swift://user:pass@http://host/v1/c/o",
            "swift+http://u:k@host",
            "swift+http://u:k@host/o",
            "swift+http://u:k@/auth/c/o",
            "swift+http://nokey@host/auth/c/o",
            "swift+http://u:k@host/auth/c/o?x=1",
            "swift+http://u:k@host/auth/c/",
        ]:
            self.assertRaises(BadLocation, parseLocation, bad)

    def test_badLocationMessageHidesKey(self):
        try:
            parseLocation("swift+http://u:secretkey@host/c")
        except BadLocation as e:
            self.assertNotIn("secretkey", str(e))
        else:
            self.fail("no BadLocation")

    def test_redact(self):
        location = makeLocation(
            "http://127.0.0.1:8080/auth/v1.0", "test:tester", "testing", "glance", "img")
        self.assertEqual(redact(location), "swift+http://127.0.0.1:8080/auth/v1.0/glance/img")

    def test_locationWithoutCredentialsUsesConfigured(self):
        store = SwiftStore.fromConfig(_conf(), reactor, None)
        creds, parsed = store._locate("swift+http://127.0.0.1:8080/auth/v1.0/glance/x")
        self.assertEqual(creds.user, "test:tester")
        self.assertRaises(BadLocation, store._locate, "swift+http://elsewhere/auth/v1.0/glance/x")

    def test_ownAccountsLocationsUseTheKeyAsConfiguredNow(self):
        """
        This store's account's locations authenticate with the key as
        configured now, not the one they were written with; another
        account's location keeps its own.
        """
        store = SwiftStore.fromConfig(_conf(swift_store_key="rotated"), reactor, None)
        auth = "http://127.0.0.1:8080/auth/v1.0"
        creds, _ = store._locate(makeLocation(auth, "test:tester", "testing", "glance", "x"))
        self.assertEqual((creds.user, creds.key), ("test:tester", "rotated"))
        creds, _ = store._locate(makeLocation(auth, "test2:tester2", "other", "glance", "x"))
        self.assertEqual((creds.user, creds.key), ("test2:tester2", "other"))
        elsewhere = "http://10.0.0.1:8080/auth/v1.0"
        creds, _ = store._locate(makeLocation(elsewhere, "test:tester", "testing", "glance", "x"))
        self.assertEqual((creds.authAddress, creds.key), (elsewhere, "testing"))

    def test_keyNotInRepr(self):
        store = SwiftStore.fromConfig(_conf(), reactor, None)
        self.assertNotIn("testing", repr(store))
        self.assertNotIn("testing", repr(store._configuredCredentials()))


def _conf(**options):
    conf = {
        "swift_store_auth_address": "http://127.0.0.1:8080/auth/v1.0",
        "swift_store_user": "test:tester",
        "swift_store_key": "testing",
    }
    conf.update(options)
    return {k: v for k, v in conf.items() if v is not None}


class ConfigTests(TestCase):
    def assertConfigError(self, option, conf):
        with self.assertRaises(ConfigError) as caught:
            SwiftStore.fromConfig(conf, reactor, None)
        message = str(caught.exception)
        self.assertTrue(message.startswith(option + ": "), message)
        self.assertNotIn("testing", message)

    def test_requestTimeout(self):
        """
        C{swift_store_request_timeout} sets the seconds a request without
        image bytes (Keystone's included) may take: 60 unless set.
        """
        self.assertEqual(SwiftStore.fromConfig(_conf(), reactor, None).requestTimeout, 60.0)
        store = SwiftStore.fromConfig(_conf(swift_store_request_timeout=" 300 "), reactor, None)
        self.assertEqual(store.requestTimeout, 300.0)
        for bad in ("0", "-5", "1.5", "ten", "\u00b9"):
            self.assertConfigError("swift_store_request_timeout",
                                   _conf(swift_store_request_timeout=bad))

    def test_defaults(self):
        store = SwiftStore.fromConfig(_conf(), reactor, None)
        self.assertEqual(store.name, "swift")
        self.assertEqual(store.schemes, ("swift", "swift+http", "swift+https"))
        self.assertEqual(store.authVersion, 1)
        self.assertEqual(store.container, "glance")
        self.assertEqual(store.segmentsContainer, "glance_segments")
        self.assertFalse(store.createContainer)
        self.assertEqual(store.largeObjectSize, 5120 * 1024 * 1024)
        self.assertEqual(store.chunkSize, 200 * 1024 * 1024)
        self.assertEqual(store.endpointType, "public")

    def test_options(self):
        store = SwiftStore.fromConfig(_conf(
            swift_store_container="images",
            swift_store_create_container_on_put="True",
            swift_store_large_object_size="100",
            swift_store_large_object_chunk_size="10",
            swift_store_endpoint_type="internalURL",
            swift_store_region="RegionTwo",
        ), reactor, None)
        self.assertEqual(store.container, "images")
        self.assertTrue(store.createContainer)
        self.assertEqual(store.largeObjectSize, 100 * 1024 * 1024)
        self.assertEqual(store.chunkSize, 10 * 1024 * 1024)
        self.assertEqual(store.endpointType, "internal")
        self.assertEqual(store.region, "RegionTwo")

    def test_keystoneV3(self):
        store = SwiftStore.fromConfig(_conf(
            swift_store_auth_version="3",
            swift_store_auth_address="https://keystone.example:5000/v3",
            swift_store_user="glance",
            swift_store_project_name="service",
        ), reactor, None)
        self.assertEqual(store.authVersion, 3)
        self.assertEqual(store.projectName, "service")
        self.assertEqual(store.projectDomainName, "Default")
        self.assertEqual(store.userDomainName, "Default")
        # Glance's own form: project:user.
        store = SwiftStore.fromConfig(_conf(
            swift_store_auth_version="3", swift_store_user="service:glance"), reactor, None)
        self.assertIsNone(store.projectName)

    def test_missing(self):
        for option in ("swift_store_auth_address", "swift_store_user", "swift_store_key"):
            self.assertConfigError(option, _conf(**{option: None}))
            self.assertConfigError(option, _conf(**{option: "  "}))

    def test_bad(self):
        cases = [
            ("swift_store_auth_version", "2"),
            ("swift_store_auth_version", "x"),
            ("swift_store_auth_address", "ftp://host/auth"),
            ("swift_store_auth_address", "http://user:pw@host/auth"),
            ("swift_store_auth_address", "http://host:port/auth"),
            ("swift_store_user", "tester"),
            ("swift_store_container", "a/b"),
            ("swift_store_create_container_on_put", "maybe"),
            ("swift_store_large_object_size", "big"),
            ("swift_store_large_object_size", "0"),
            ("swift_store_large_object_size", "6000"),
            ("swift_store_large_object_chunk_size", "-1"),
            ("swift_store_endpoint_type", "public-ish"),
            ("swift_store_endpoint", "not a url"),
        ]
        for option, value in cases:
            self.assertConfigError(option, _conf(**{option: value}))

    def test_v3NeedsProject(self):
        self.assertConfigError("swift_store_project_name", _conf(
            swift_store_auth_version="3", swift_store_user="glance"))

    def test_pickEndpoint(self):
        store = SwiftStore.fromConfig(_conf(
            swift_store_auth_version="3", swift_store_user="p:u",
            swift_store_region="two"), reactor, None)
        catalog = [
            {"type": "identity", "endpoints": [
                {"interface": "public", "region": "two", "url": "http://ks"}]},
            {"type": "object-store", "endpoints": [
                {"interface": "public", "region": "one", "url": "http://one/v1/AUTH_p"},
                {"interface": "internal", "region": "two", "url": "http://int/v1/AUTH_p"},
                {"interface": "public", "region_id": "two", "url": "http://two/v1/AUTH_p"},
            ]},
        ]
        self.assertEqual(store._pickEndpoint(catalog), "http://two/v1/AUTH_p")
        self.assertRaises(StoreError, store._pickEndpoint, catalog[:1])
