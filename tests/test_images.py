"""
The image lifecycle in the service, with a real registry (SQLite), a real
filesystem store and a collecting notifier.
"""

import datetime
import hashlib
import os

import attr
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from glancetx import errors
from glancetx.config import Config
from glancetx.context import RequestContext, noauthContext
from glancetx.images import SWEEP_DELAY, ImageChanges, ImageService
from glancetx.notifier import CollectingNotifier
from glancetx.registry import migrate
from glancetx.registry.registry import ListQuery, Registry, Unreachable
from glancetx.store.interface import (
    LocationNotFound,
    StoreError,
    StoreUnavailable,
    UploadFailed,
    withoutLocations,
)
from glancetx.store.filesystem import FilesystemStore
from glancetx.uploadleases import UploadLeases
from tests import dbs
from tests.bodies import BytesBody, readAll

RAW = {"disk_format": "raw", "container_format": "bare"}


def async_test(f):
    def wrapper(self):
        return ensureDeferred(f(self))
    wrapper.__name__ = f.__name__
    return wrapper


class HeldBody:
    """
    Writes its bytes, then holds the body open until released.
    """

    length = 13

    def __init__(self, data):
        self.data = data
        self.started = Deferred()
        self._done = Deferred()

    def startProducing(self, consumer):
        consumer.write(self.data)
        self.started.callback(None)
        return self._done

    def release(self):
        self._done.callback(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class RacingRegistry:
    """
    The registry, with another request's change committed just before one
    of this service's writes: the service then writes on a record it read
    before that change, as when another process changed the image between
    its read and its write.
    """

    def __init__(self, registry):
        self._registry = registry
        self._races = []

    def before(self, method, change, when=lambda kw: True):
        """
        Run C{change()} (a coroutine function) once, just before the next
        call of C{method} whose keyword arguments C{when} accepts.
        """
        self._races.append((method, change, when))

    def __getattr__(self, name):
        real = getattr(self._registry, name)
        if not callable(real):
            return real

        def call(*args, **kw):
            for race in self._races:
                method, change, when = race
                if method == name and when(kw):
                    self._races.remove(race)

                    async def raced():
                        await change()
                        return await real(*args, **kw)
                    return ensureDeferred(raced())
            return real(*args, **kw)
        return call


@attr.s
class FiveByteOrigin:
    """
    An http source of five bytes, for copies and locations.
    """

    name = "http"
    schemes = ("http", "https")

    async def get_size(self, location):
        return 5

    async def get(self, location):
        return BytesBody(reactor, b"12345", knownLength=False)


@attr.s
class FailingRemote:
    """
    A remote store whose parts are swept after a failed upload, as S3's
    and Swift's are: every upload fails as C{fail} (a coroutine function
    of the image id) says, and removals are recorded, failing while it is
    C{down}.
    """

    fail = attr.ib()
    down = attr.ib(default=False)
    removals = attr.ib(factory=list)
    name = "remote"
    schemes = ("remote",)
    writable = True
    sweptAfterFailure = True

    async def add(self, imageId, body):
        await self.fail(imageId)

    async def removeAbandoned(self, imageId, retry=True):
        self.removals.append((imageId, retry))
        if self.down:
            raise StoreUnavailable("still away")


async def wentAway(imageId):
    raise StoreUnavailable("the store went away mid-upload")


class LifecycleTests(TestCase):
    def setUp(self):
        url = dbs.sqliteURL(self)
        migrate.sync(url)
        self.registry = Registry(url, reactor)
        self.addCleanup(self.registry.close)
        pool = ThreadPool(1, 2, name="test-disk")
        pool.start()
        self.addCleanup(pool.stop)
        self.dir = os.path.abspath(self.mktemp())
        self.store = FilesystemStore(self.dir, reactor, pool)
        self.store.prepare()
        self.notifier = CollectingNotifier()
        self.config = Config(image_size_cap=10 * 1024 * 1024)
        self.service = ImageService(registry=self.registry, stores={"file": self.store},
                                    config=self.config, notifier=self.notifier,
                                    reactor=reactor, cpuPool=pool)
        self.ctx = noauthContext()

    def files(self):
        return sorted(os.listdir(self.dir))

    def events(self):
        return [e for e, _ in self.notifier.events]

    async def assertWaitsForTheScrubber(self, image):
        """
        C{image} is deleted with its bytes still in the store, for a
        scrubber to remove.
        """
        row = await self.registry.get(image.id, includeDeleted=True)
        self.assertEqual(row.status, "pending_delete")
        self.assertEqual(self.files(), [image.id])

    async def assertScrubbed(self, image):
        """
        A scrub removes C{image}'s bytes, and it ends deleted with its
        location forgotten.
        """
        self.assertEqual(await self.service.scrub(), 1)
        self.assertEqual(self.files(), [])
        row = await self.registry.get(image.id, includeDeleted=True)
        self.assertEqual(row.status, "deleted")
        self.assertEqual(await self.registry.getLocation(image.id), None)

    async def upload(self, data, **fields):
        changes = ImageChanges(fields=dict(RAW, **fields))
        return await self.service.create(self.ctx, changes, BytesBody(reactor, data))

    @async_test
    async def test_reserveThenUpload(self):
        image = await self.service.create(self.ctx, ImageChanges(fields=dict(RAW)))
        self.assertEqual(image.status, "queued")
        self.assertEqual(image.owner, "admin")
        data = os.urandom(200000)
        image = await self.service.update(self.ctx, image.id, ImageChanges(),
                                          BytesBody(reactor, data))
        self.assertEqual((image.status, image.size), ("active", len(data)))
        self.assertEqual(image.checksum, hashlib.md5(data).hexdigest())
        got, producer = await self.service.download(self.ctx, image.id)
        self.assertEqual(await readAll(reactor, producer), data)
        # Glance v1's: the activation's image.update, then the update's own,
        # each once the image is active.
        self.assertEqual(self.events(), ["image.create", "image.prepare", "image.upload",
                                         "image.activate", "image.update", "image.update"])
        for event, payload in self.notifier.events[-2:]:
            self.assertEqual((payload["status"], payload["size"]), ("active", len(data)))
        self.assertEqual(self.notifier.errors, [])

    @async_test
    async def test_losingUploadChangesNothing(self):
        """
        Of uploads racing to one queued image, each with its own metadata,
        the winner's bytes go active with the winner's metadata, and a
        loser's 409 leaves no trace: a loser's disk_format was written
        before it lost, so raw bytes went active labelled vhd.
        """
        formats = ("raw", "vhd", "qcow2", "vmdk")
        for _ in range(5):
            image = await self.service.create(self.ctx, ImageChanges(fields=dict(RAW)))
            data = [os.urandom(50000) for _ in formats]

            async def put(i):
                changes = ImageChanges(fields={"disk_format": formats[i], "name": "from-%d" % i},
                                       properties={"who": str(i)})
                try:
                    await self.service.update(self.ctx, image.id, changes,
                                              BytesBody(reactor, data[i]))
                except (errors.Conflict, errors.Forbidden):
                    return None
                return i

            results = await DeferredList([ensureDeferred(put(i)) for i in range(len(formats))],
                                         fireOnOneErrback=True, consumeErrors=True)
            winners = [i for ok, i in results if i is not None]
            self.assertEqual(len(winners), 1, results)
            won = winners[0]
            final = await self.registry.get(image.id)
            self.assertEqual((final.status, final.checksum),
                             ("active", hashlib.md5(data[won]).hexdigest()))
            self.assertEqual((final.name, final.disk_format, final.properties),
                             ("from-%d" % won, formats[won], {"who": str(won)}))

    @async_test
    async def test_eventsAsGlanceSentThem(self):
        """
        Each way to an active image sends Glance v1's events, ending with
        an image.update of the active image: Ceilometer's image.size meter
        reads its size from image.upload and image.update, so an image
        registered by location was not metered, and one made active by an
        update was metered at 0 (its image.update went out before).
        """
        @attr.s
        class Origin:
            name = "http"
            schemes = ("http", "https")
            writable = False

            async def get_size(self, location):
                return 5

        self.service.stores["http"] = Origin()
        image = await self.upload(b"abc")
        self.assertEqual(self.events(), ["image.create", "image.prepare", "image.upload",
                                         "image.activate", "image.update"])
        self.notifier.events.clear()
        image = await self.service.create(self.ctx, ImageChanges(
            fields=dict(RAW), location="http://origin.example/image"))
        self.assertEqual(self.events(), ["image.create", "image.activate", "image.update"])
        self.assertEqual(self.notifier.events[-1][1]["size"], 5)
        self.notifier.events.clear()
        image = await self.service.create(self.ctx, ImageChanges(fields=dict(RAW)))
        await self.service.update(self.ctx, image.id, ImageChanges(
            location="http://origin.example/image"))
        self.assertEqual(self.events(), ["image.create", "image.activate", "image.update",
                                         "image.update"])
        self.assertEqual([p["size"] for _, p in self.notifier.events[-2:]], [5, 5])
        # An update whose upload fails sends its ERROR, and no image.update.
        self.notifier.events.clear()
        image = await self.service.create(self.ctx, ImageChanges(fields=dict(RAW)))
        with self.assertRaises(errors.BadRequest):
            await self.service.update(self.ctx, image.id, ImageChanges(),
                                      BytesBody(reactor, b"x" * 1000, failAfter=10))
        self.assertEqual(self.events(), ["image.create", "image.prepare"])
        self.assertEqual(len(self.notifier.errors), 1)

    @async_test
    async def test_notificationsNeverCarryTheLocation(self):
        image = await self.upload(b"x" * 1000)
        await self.service.delete(self.ctx, image.id)
        location = "file://" + os.path.join(self.dir, image.id)
        for event, payload in self.notifier.events:
            self.assertNotIn("location", payload)
            self.assertNotIn(location, repr(payload))
            self.assertNotIn(self.dir, repr(payload))
        self.assertIn("image.delete", self.events())

    @async_test
    async def test_failedUploadKills(self):
        changes = ImageChanges(fields=dict(RAW))
        body = BytesBody(reactor, os.urandom(300000), failAfter=100000)
        with self.assertRaises(errors.BadRequest):
            await self.service.create(self.ctx, changes, body)
        [image] = await self.registry.list(__import__(
            "glancetx.registry.registry", fromlist=["ListQuery"]).ListQuery())
        self.assertEqual(image.status, "killed")
        self.assertEqual(self.files(), [])
        self.assertNotIn("image.upload", self.events())
        # Glance's ERROR notification, whose payload is the message.
        [(event, message)] = self.notifier.errors
        self.assertEqual(event, "image.upload")
        self.assertIn(image.id, message)

    @async_test
    async def test_killThatCannotBeRecordedIsSaidSo(self):
        """
        An upload fails while the database cannot be reached: the client
        gets the upload's own error, and the log says the image is not
        killed yet (it said "killed" before the kill was tried, and nothing
        once it failed).
        """
        from twisted.logger import globalLogPublisher

        from glancetx.registry.registry import Unreachable
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        real = self.registry.update

        def update(imageId, values, *a, **kw):
            if values.get("status") == "killed":
                raise Unreachable("refused")
            return real(imageId, values, *a, **kw)
        self.patch(self.registry, "update", update)
        body = BytesBody(reactor, os.urandom(300000), failAfter=100000)
        with self.assertRaises(errors.BadRequest):
            await self.service.create(self.ctx, ImageChanges(fields=dict(RAW)), body)
        [image] = await self.registry.list(ListQuery())
        self.assertEqual(image.status, "saving")
        said = [e["log_format"] for e in logged if "image_id" in e]
        self.assertTrue(any("could not be marked killed" in f for f in said), said)
        self.assertFalse(any(f.startswith("image {image_id} killed") for f in said), said)

    @async_test
    async def test_activationTheDatabaseRefusedIsLogged(self):
        """
        An upload stored whole whose activation the database refuses (its
        disk is full) says so in the log, and keeps the bytes for the
        lease's reaper: the activation may have committed all the same.
        Nothing was logged, and the image sat saving with no word why.
        """
        from twisted.logger import globalLogPublisher
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        real = self.registry.update

        def update(imageId, values, *a, **kw):
            if values.get("status") == "active":
                raise Unreachable("database or disk is full")
            return real(imageId, values, *a, **kw)
        self.patch(self.registry, "update", update)
        with self.assertRaises(Unreachable):
            await self.upload(b"x" * 1000)
        [image] = await self.registry.list(ListQuery())
        self.assertEqual(image.status, "saving")
        self.assertEqual(self.files(), [image.id])
        said = [e for e in logged if e.get("image_id") == image.id]
        self.assertEqual([e["log_level"].name for e in said], ["warn"], said)
        self.assertIn("could not be made active", said[0]["log_format"])
        self.assertEqual(said[0]["error"], "database or disk is full")

    @async_test
    async def test_unexpectedStoreFailureKills(self):
        """
        Even a failure no store should raise leaves the image killed, with
        nothing stored, and reaches the caller (the API's logged 500).
        """
        def broken(imageId, body):
            raise RuntimeError("a bug in a store")
        self.patch(self.store, "add", broken)
        with self.assertRaises(RuntimeError):
            await self.upload(b"x" * 1000)
        [image] = await self.registry.list(ListQuery())
        self.assertEqual(image.status, "killed")
        self.assertEqual(self.files(), [])

    @async_test
    async def test_copyFromSourceUnreadableKills(self):
        """
        A copy-from source that answered for its size but then cannot be
        read ends with a killed image, not one saving for ever.
        """
        @attr.s
        class FlakySource:
            name = "http"
            schemes = ("http", "https")

            async def get_size(self, location):
                return 5

            async def get(self, location):
                raise StoreError("connection refused")

        self.service.stores["http"] = FlakySource()
        image = await self.service.create(self.ctx, ImageChanges(
            fields=dict(RAW), copy_from="http://source.example/image"))
        await DeferredList(list(self.service.background))
        [image] = await self.registry.list(ListQuery(filters={"status": "killed"}))
        self.assertEqual(image.status, "killed")
        self.assertEqual(self.files(), [])

    @async_test
    async def test_uploadBudgetGivenBack(self):
        """
        The hasher's share of the upload budget is held only while bytes
        arrive, whether the upload succeeds or fails.
        """
        from glancetx.budget import SharedBudget

        self.service.budget = SharedBudget()
        body = BytesBody(reactor, b"x" * 1000)
        start = body.startProducing

        def held(consumer):
            self.assertEqual(self.service.budget.holders, 1)
            return start(consumer)
        body.startProducing = held
        await self.service.create(self.ctx, ImageChanges(fields=dict(RAW)), body)
        self.assertEqual(self.service.budget.holders, 0)
        body = BytesBody(reactor, b"x" * 1000, failAfter=10)
        with self.assertRaises(errors.BadRequest):
            await self.service.create(self.ctx, ImageChanges(fields=dict(RAW)), body)
        self.assertEqual(self.service.budget.holders, 0)

    @async_test
    async def test_capAndDeclaredSize(self):
        with self.assertRaises(errors.TooLarge):
            await self.upload(b"x" * (10 * 1024 * 1024 + 1))
        with self.assertRaises(errors.BadRequest):
            await self.upload(b"x" * 10, size=11)
        with self.assertRaises(errors.BadRequest):
            await self.upload(b"x" * 10, checksum="0" * 32)
        self.assertEqual(self.files(), [])

    @async_test
    async def test_onlyQueuedTakesBytes(self):
        image = await self.upload(b"abc")
        with self.assertRaises(errors.Conflict):
            await self.service.update(self.ctx, image.id, ImageChanges(),
                                      BytesBody(reactor, b"def"))

    @async_test
    async def test_racingUploadsOneWins(self):
        image = await self.service.create(self.ctx, ImageChanges(fields=dict(RAW)))
        results = await DeferredList([
            self.service.update(self.ctx, image.id, ImageChanges(),
                                BytesBody(reactor, os.urandom(100000)))
            for _ in range(3)], consumeErrors=True)
        ok = [r for s, r in results if s]
        failed = [r for s, r in results if not s]
        self.assertEqual(len(ok), 1)
        for f in failed:
            f.trap(errors.Conflict)
        self.assertEqual(self.files(), [image.id])

    @async_test
    async def test_deletedDuringUploadKeepsNothing(self):
        image, body, d = await self.heldUpload(self.service)
        # Delete the image while its bytes are still arriving.
        await self.service.delete(self.ctx, image.id)
        body.release()
        with self.assertRaises(errors.Conflict):
            await d
        self.assertEqual(self.files(), [])

    @async_test
    async def test_uploadEndedByADeleteIsNoFailure(self):
        """
        An upload whose image is deleted while its body fails (the client
        gave up on it) sends no ERROR event: the image is not killed, it is
        gone.
        """
        image, body, d = await self.heldUpload(self.service)
        await self.service.delete(self.ctx, image.id)
        body._done.errback(UploadFailed(400, "the client went away"))
        with self.assertRaises(Exception):
            await d
        self.assertEqual(self.notifier.errors, [])

    def leasedService(self, now):
        leases = UploadLeases(self.registry, 60, now=lambda: now[0])
        return attr.evolve(self.service, notifier=CollectingNotifier(), leases=leases)

    async def heldUpload(self, service):
        """
        An upload through C{service} whose body has sent its bytes and
        stays open: the image, the body (to release) and the update's
        Deferred.
        """
        image = await service.create(self.ctx, ImageChanges(fields=dict(RAW)))
        body = HeldBody(b"partial bytes")
        d = service.update(self.ctx, image.id, ImageChanges(), body)
        await body.started
        return image, body, d

    async def reaper(self, now):
        """
        A process whose reaper has been reaching the database, so it kills
        what it finds.
        """
        other = self.leasedService(now)
        for _ in range(2):
            self.assertEqual(await other.killAbandonedUploads(), 0)
        return other

    @async_test
    async def test_uploadOfADeadProcessIsKilled(self):
        """
        An upload whose process stopped renewing its lease is killed by
        any process sharing the registry, with an ERROR notification.  If
        the process was alive after all (only cut off from the database
        for longer than a lease), its upload then fails as one deleted
        meanwhile does, and keeps nothing.
        """
        now = [datetime.datetime(2030, 1, 1)]
        mine, other = self.leasedService(now), await self.reaper(now)
        image, body, d = await self.heldUpload(mine)
        self.assertEqual(mine.leases.held, 1)
        now[0] += datetime.timedelta(seconds=59)
        self.assertEqual(await other.killAbandonedUploads(), 0)
        now[0] += datetime.timedelta(seconds=2)
        self.assertEqual(await other.killAbandonedUploads(), 1)
        self.assertEqual((await self.registry.get(image.id)).status, "killed")
        self.assertEqual(other.notifier.errors, [
            ("image.upload", "Image %s upload abandoned: its upload lease ran out (the process"
             " receiving it stopped, or could not reach the database)" % (image.id,))])
        body.release()
        with self.assertRaises(errors.Conflict):
            await d
        self.assertEqual(self.files(), [])
        self.assertEqual(mine.leases.held, 0)

    def waitingSource(self):
        """
        A copy-from source that reports 5 bytes and answers the copy's
        GET only when the test fires the Deferred it keeps.
        """
        @attr.s
        class WaitingSource:
            name = "http"
            schemes = ("http", "https")
            answers = attr.ib(factory=list)

            async def get_size(self, location):
                return 5

            def get(self, location):
                self.answers.append(Deferred())
                return self.answers[-1]
        return WaitingSource()

    @async_test
    async def test_copyClaimsTheImageBeforeAnswering(self):
        """
        A copy-from makes its image saving, under this process's upload
        lease, before it answers, not when its source begins to send:
        meanwhile an upload took the queued image, and the copy, failing,
        killed it under that upload; and a copy whose process died left
        its image queued for ever.
        """
        now = [datetime.datetime(2030, 1, 1)]
        mine = self.leasedService(now)
        source = mine.stores["http"] = self.waitingSource()
        image = await mine.create(self.ctx, ImageChanges(
            fields=dict(RAW), copy_from="http://source.example/image"))
        self.assertEqual((image.status, image.size), ("saving", 5))
        self.assertEqual(mine.leases.held, 1)
        with self.assertRaises(errors.Conflict):
            await self.service.update(self.ctx, image.id, ImageChanges(),
                                      BytesBody(reactor, b"12345"))
        source.answers[0].errback(StoreError("the origin answered 500"))
        await DeferredList(list(mine.background))
        self.assertEqual((await self.registry.get(image.id)).status, "killed")
        self.assertEqual(mine.leases.held, 0)
        self.assertEqual(self.files(), [])

    @async_test
    async def test_aFailedCopyNamesNoLocation(self):
        """
        A copy whose source fails says so, to the log at info level and
        in its ERROR notification, without the source's host or path: a
        location without its credentials still named them, and a DNS
        error its host.
        """
        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        source = self.service.stores["http"] = self.waitingSource()
        image = await self.service.create(self.ctx, ImageChanges(
            fields=dict(RAW), copy_from="http://origin.example/private/image"))
        source.answers[0].errback(StoreUnavailable(
            "HTTP://origin.example/private/image: the origin sent 2 of 5 bytes"))
        await DeferredList(list(self.service.background))
        self.assertEqual((await self.registry.get(image.id)).status, "killed")
        [(event, payload)] = self.notifier.errors
        why = "copy-from source unreadable: <http location>: the origin sent 2 of 5 bytes"
        self.assertEqual(payload, "Image %s %s" % (image.id, why))
        lines = [formatEvent(e) for e in seen if e["log_level"] >= LogLevel.info]
        self.assertIn("image %s killed: %s" % (image.id, why), lines)
        for line in lines:
            self.assertNotIn("origin.example", line)

    @async_test
    async def test_copyOfADeadProcessIsKilled(self):
        """
        A copy whose process died while its source had not yet answered is
        killed by a reaper once its lease runs out, as an upload is.
        """
        now = [datetime.datetime(2030, 1, 1)]
        mine, other = self.leasedService(now), await self.reaper(now)
        source = mine.stores["http"] = self.waitingSource()
        image = await mine.create(self.ctx, ImageChanges(
            fields=dict(RAW), copy_from="http://source.example/image"))
        now[0] += datetime.timedelta(seconds=61)
        self.assertEqual(await other.killAbandonedUploads(), 1)
        self.assertEqual((await self.registry.get(image.id)).status, "killed")
        source.answers[0].errback(StoreError("too late"))
        await DeferredList(list(mine.background))

    @async_test
    async def test_stoppingCancelsACopyWaitingForItsSource(self):
        """
        A server stopping does not wait out a copy's source: the copy's
        wait is cancelled and its image killed before the server exits.
        """
        source = self.service.stores["http"] = self.waitingSource()
        image = await self.service.create(self.ctx, ImageChanges(
            fields=dict(RAW), copy_from="http://source.example/image"))
        await self.service.stopUploads(grace=5)
        self.assertTrue(source.answers[0].called)
        self.assertEqual((await self.registry.get(image.id)).status, "killed")

    @async_test
    async def test_stoppingRefusesDataBeforeTheRecord(self):
        """
        While the server stops, a create that carries data or a copy-from
        is refused (503) with no image made: a queued image with no bytes,
        whose id the refusal never gave, was left behind, and a client
        that retried made a second.  A create without data is still made.
        """
        self.service.stores["http"] = self.waitingSource()
        await self.service.stopUploads(grace=5)
        for body, copy in ((BytesBody(reactor, b"abc"), None),
                           (None, "http://source.example/image")):
            e = await self.assertFailure(self.service.create(
                self.ctx, ImageChanges(fields=dict(RAW), copy_from=copy), body),
                errors.Unavailable)
            self.assertEqual(e.message, "The server is shutting down.")
        self.assertEqual(await self.registry.list(ListQuery()), [])
        self.assertEqual((self.events(), self.notifier.errors), ([], []))
        image = await self.service.create(self.ctx, ImageChanges(fields=dict(RAW)))
        self.assertEqual(image.status, "queued")

    @async_test
    async def test_stoppingWhileTheRecordIsWrittenKillsIt(self):
        """
        A server that begins to stop while a create's record is written
        refuses its data and kills the image, with Glance's ERROR
        notification: it stayed queued for ever.
        """
        real = self.registry.create

        async def createThenStop(*args, **kw):
            image = await real(*args, **kw)
            await self.service.stopUploads(grace=5)
            return image
        self.registry.create = createThenStop
        await self.assertFailure(self.service.create(
            self.ctx, ImageChanges(fields=dict(RAW)), BytesBody(reactor, b"abc")),
            errors.Unavailable)
        [image] = await self.registry.list(ListQuery())
        self.assertEqual(image.status, "killed")
        self.assertEqual(self.events(), ["image.create"])
        self.assertEqual(self.notifier.errors, [
            ("image.upload", "Image %s the server stopped before its data arrived" % (image.id,))])
        self.assertEqual(self.files(), [])

    @async_test
    async def test_copyEndedBeforeItsSourceSentIsAnError(self):
        """
        A copy killed before its source began to send (its source failed,
        or the server stopped) sends Glance's ERROR image.upload, as every
        other failed upload and copy does; it sent none.
        """
        for stop in (False, True):
            del self.notifier.errors[:]
            service = ImageService(registry=self.registry, stores={"file": self.store},
                                   config=self.config, notifier=self.notifier,
                                   reactor=reactor, cpuPool=self.service.cpuPool)
            source = service.stores["http"] = self.waitingSource()
            image = await service.create(self.ctx, ImageChanges(
                fields=dict(RAW), copy_from="http://source.example/image"))
            if stop:
                await service.stopUploads(grace=5)
            else:
                source.answers[0].errback(StoreError("no such image"))
                await DeferredList(list(service.background))
            self.assertEqual((await self.registry.get(image.id)).status, "killed")
            [(event, message)] = self.notifier.errors
            self.assertEqual(event, "image.upload", stop)
            self.assertIn(image.id, message)

    @async_test
    async def test_deleteStopsTheCopy(self):
        """
        Deleting an image stops this process's copy of it, whether its
        source has yet to answer or is sending: it fetched on, up to
        image_size_cap, for an image no longer there.  Nothing is left.
        """
        now = [datetime.datetime(2030, 1, 1)]
        mine = self.leasedService(now)
        source = mine.stores["http"] = self.waitingSource()
        image = await mine.create(self.ctx, ImageChanges(
            fields=dict(RAW), copy_from="http://source.example/image"))
        await mine.delete(self.ctx, image.id)
        await DeferredList(list(mine.background))
        self.assertTrue(source.answers[0].called)

        class Sending(HeldBody):
            length = 5
            why = None

            def abort(self, why):
                self.why = why
                self._done.errback(StoreUnavailable("source: " + why))
        sending = Sending(b"12")
        image = await mine.create(self.ctx, ImageChanges(
            fields=dict(RAW), copy_from="http://source.example/image"))
        source.answers[1].callback(sending)
        await sending.started
        await mine.delete(self.ctx, image.id)
        await DeferredList(list(mine.background))
        self.assertEqual(sending.why, "the image was deleted")
        self.assertEqual(self.files(), [])
        self.assertEqual(mine.leases.held, 0)
        # A delete is no failed upload: no ERROR event ("store error: ...:
        # the image was deleted"), as Glance sent none.
        self.assertEqual(mine.notifier.errors, [])
        self.assertEqual([i.status for i in await self.registry.list(ListQuery())], [])

    @async_test
    async def test_createWhoseImageIsDeletedAtOnceConflicts(self):
        """
        A create with data whose image another request deletes (by the id
        it gave) before the data is taken is a 409, not a 404 for the
        image the request itself made.
        """
        service, racing = self.racing()
        imageId = "0a6e4c6a-1a2b-4c5d-8e9f-0123456789ab"

        async def deleted():
            await self.registry.delete(imageId)
        racing.before("update", deleted)
        with self.assertRaises(errors.Conflict) as caught:
            await service.create(self.ctx, ImageChanges(fields=dict(RAW, id=imageId)),
                                 BytesBody(reactor, b"12345"))
        self.assertIn("was deleted before its data was stored", caught.exception.message)
        self.assertEqual(self.files(), [])

    @async_test
    async def test_copyOrLocationUpdatePurgesProperties(self):
        """
        An update that supplies data by copy-from or location, with no
        properties and no x-glance-registry-purge-props: false, removes
        the image's properties, as any update without a body does (only
        one with a body keeps them).
        """
        self.service.stores["http"] = FiveByteOrigin()
        for supply in ({"copy_from": "http://source.example/x"},
                       {"location": "http://source.example/x"}):
            image = await self.service.create(self.ctx, ImageChanges(
                fields=dict(RAW), properties={"old": "1"}))
            await self.service.update(self.ctx, image.id, ImageChanges(**supply))
            await DeferredList(list(self.service.background))
            final = await self.registry.get(image.id)
            self.assertEqual((final.status, final.properties), ("active", {}), supply)

    @async_test
    async def test_losingCopyOrLocationChangesNothing(self):
        """
        An update that supplies data by copy-from or location writes its
        metadata with the image's change from queued, in one conditional
        transaction: one that loses the image to an upload (409) leaves
        no trace, as a losing upload leaves none.
        """
        for supply in ({"copy_from": "http://source.example/x"},
                       {"location": "http://source.example/x"}):
            service, racing = self.racing()
            service.stores["http"] = FiveByteOrigin()
            image = await self.service.create(self.ctx, ImageChanges(fields=dict(RAW)))

            async def uploadBegins():
                await self.registry.update(image.id, {"status": "saving"},
                                           expectStatus=["queued"])
            racing.before("update", uploadBegins,
                          when=lambda kw: "lease" in kw or "location" in kw)
            with self.assertRaises(errors.Conflict):
                await service.update(self.ctx, image.id, ImageChanges(
                    fields={"name": "loser"}, properties={"who": "loser"}, **supply))
            await DeferredList(list(service.background))
            final = await self.registry.get(image.id)
            self.assertEqual((final.status, final.name, final.properties),
                             ("saving", None, {}), supply)

    @async_test
    async def test_reaperOnlyLooksAfterAnOutage(self):
        """
        A lease that ran out while the database could not be reached says
        nothing of its holder, which could not renew it either: a reaper
        kills again only after two rounds in a row that reached the
        database, by when every live holder has renewed.
        """
        now = [datetime.datetime(2030, 1, 1)]
        mine, other = self.leasedService(now), await self.reaper(now)
        image, body, d = await self.heldUpload(mine)
        now[0] += datetime.timedelta(seconds=61)
        real = self.registry.killAbandonedUploads

        def unreachable(*args):
            raise RuntimeError("the database cannot be reached")
        self.registry.killAbandonedUploads = unreachable
        with self.assertRaises(RuntimeError):
            await other.killAbandonedUploads()
        self.registry.killAbandonedUploads = real
        for _ in range(2):
            self.assertEqual(await other.killAbandonedUploads(), 0)
            self.assertEqual((await self.registry.get(image.id)).status, "saving")
        # The holder never renewed: it is dead after all.
        self.assertEqual(await other.killAbandonedUploads(), 1)
        body.release()
        with self.assertRaises(errors.Conflict):
            await d

    @async_test
    async def test_renewedUploadLives(self):
        now = [datetime.datetime(2030, 1, 1)]
        mine, other = self.leasedService(now), await self.reaper(now)
        image, body, d = await self.heldUpload(mine)
        for _ in range(5):
            now[0] += datetime.timedelta(seconds=mine.leases.interval)
            await mine.leases.renew()
            self.assertEqual(await other.killAbandonedUploads(), 0)
        body.release()
        self.assertEqual((await d).status, "active")
        self.assertEqual(self.files(), [image.id])
        now[0] += datetime.timedelta(days=1)
        self.assertEqual(await other.killAbandonedUploads(), 0)

    def racing(self, **kw):
        registry = RacingRegistry(self.registry)
        return attr.evolve(self.service, registry=registry, **kw), registry

    async def saving(self, data):
        """
        A queued image moved to saving, as an upload elsewhere moves it,
        and the change that activates it with C{data}.
        """
        image = await self.service.create(self.ctx, ImageChanges(fields=dict(RAW)))
        await self.registry.update(image.id, {"status": "saving"}, expectStatus=["queued"])

        async def activate():
            path = os.path.join(self.dir, image.id)
            with open(path, "wb") as f:
                f.write(data)
            await self.registry.update(
                image.id, {"status": "active", "size": len(data),
                           "checksum": hashlib.md5(data).hexdigest()},
                expectStatus=["saving"], location="file://" + path)
        return image, activate

    @async_test
    async def test_updateRacingActivationLeavesTheActiveImageAlone(self):
        """
        An update checked against a saving image, written after the upload
        activated it, is checked again against the active image: it may
        not change its checksum, size or formats.
        """
        service, racing = self.racing()
        for change in ({"checksum": "0" * 32}, {"size": 1}, {"disk_format": "qcow2"}):
            image, activate = await self.saving(b"abc")
            racing.before("update", activate)
            with self.assertRaises(errors.Forbidden):
                await service.update(self.ctx, image.id, ImageChanges(fields=change))
            got = await self.registry.get(image.id)
            self.assertEqual((got.status, got.size, got.checksum, got.disk_format),
                             ("active", 3, hashlib.md5(b"abc").hexdigest(), "raw"))

    @async_test
    async def test_harmlessUpdateRacingActivationIsWritten(self):
        service, racing = self.racing()
        image, activate = await self.saving(b"abc")
        racing.before("update", activate)
        got = await service.update(self.ctx, image.id, ImageChanges(fields={"name": "new"}))
        self.assertEqual((got.status, got.name, got.size), ("active", "new", 3))

    @async_test
    async def test_formatsStayWhileBytesArrive(self):
        """
        An image becomes active only with both formats: they cannot be
        cleared while it is saving, and an upload that finds one cleared
        since it looked does not begin.
        """
        image, _ = await self.saving(b"abc")
        with self.assertRaises(errors.Forbidden):
            await self.service.update(self.ctx, image.id,
                                      ImageChanges(fields={"disk_format": None}))
        service, racing = self.racing()
        queued = await self.service.create(self.ctx, ImageChanges(fields=dict(RAW)))

        async def clear():
            await self.registry.update(queued.id, {"container_format": None})
        racing.before("update", clear, when=lambda kw: kw.get("expectStatus") == ["queued"])
        with self.assertRaises(errors.BadRequest):
            await service.update(self.ctx, queued.id, ImageChanges(), BytesBody(reactor, b"x"))
        self.assertEqual((await self.registry.get(queued.id)).status, "queued")
        self.assertEqual(self.files(), [])

    @async_test
    async def test_deleteRacingActivationRemovesTheBytes(self):
        service, racing = self.racing()
        image, activate = await self.saving(b"abc")
        racing.before("delete", activate)
        deleted = await service.delete(self.ctx, image.id)
        self.assertEqual(deleted.status, "deleted")
        self.assertEqual(self.files(), [])

    @async_test
    async def test_protectedMeanwhileIsNotDeleted(self):
        service, racing = self.racing()
        image = await self.upload(b"abc")

        async def protect():
            await self.registry.update(image.id, {"protected": True})
        racing.before("delete", protect)
        with self.assertRaises(errors.Forbidden):
            await service.delete(self.ctx, image.id)
        self.assertEqual((await self.registry.get(image.id)).status, "active")
        self.assertEqual(self.files(), [image.id])

    @async_test
    async def test_propertyQuotaHoldsAgainstConcurrentUpdates(self):
        service, racing = self.racing(config=attr.evolve(self.config, image_property_quota=3))
        image = await self.service.create(self.ctx, ImageChanges(
            fields=dict(RAW), properties={"a": "1"}))

        async def addTwo():
            await self.registry.update(image.id, {}, {"b": "2", "c": "3"}, purgeProperties=False)
        racing.before("update", addTwo)
        with self.assertRaises(errors.TooLarge):
            await service.update(self.ctx, image.id, ImageChanges(
                properties={"d": "4", "e": "5"}, purge_properties=False))
        self.assertEqual(sorted((await self.registry.get(image.id)).properties), ["a", "b", "c"])

    @async_test
    async def test_losingUploadLeavesTheWinnersLease(self):
        """
        A second upload of an image, in the same process, that finds it
        saving does not stop that process renewing the first's lease.
        """
        now = [datetime.datetime(2030, 1, 1)]
        mine = self.leasedService(now)
        registry = RacingRegistry(self.registry)
        loser = attr.evolve(mine, registry=registry)
        image = await mine.create(self.ctx, ImageChanges(fields=dict(RAW)))
        body = HeldBody(b"partial bytes")
        won = []

        async def winnerBegins():
            won.append(mine.update(self.ctx, image.id, ImageChanges(), body))
            await body.started
        # Both found the image queued; the winner moves it to saving first.
        registry.before("update", winnerBegins, when=lambda kw: kw.get("lease") is not None)
        with self.assertRaises(errors.Conflict):
            await loser.update(self.ctx, image.id, ImageChanges(), BytesBody(reactor, b"x"))
        self.assertEqual(mine.leases.held, 1)
        body.release()
        self.assertEqual((await won[0]).status, "active")
        self.assertEqual(mine.leases.held, 0)

    @async_test
    async def test_deletedUploadEndsItsLease(self):
        """
        An upload whose image was deleted as its bytes arrived removes
        them and ends its lease, which no status change ended.
        """
        now = [datetime.datetime(2030, 1, 1)]
        mine = self.leasedService(now)
        image, body, d = await self.heldUpload(mine)
        await mine.delete(self.ctx, image.id)
        body.release()
        with self.assertRaises(errors.Conflict):
            await d
        self.assertEqual(self.files(), [])
        self.assertEqual(await self.registry.renewUploads(mine.leases.holder, now[0]), 0)

    @async_test
    async def test_failedRemoteUploadIsSweptLater(self):
        """
        A failed upload to a remote store leaves a reminder in the registry:
        past the store's own two minutes of retries, a reaper (any
        process's) makes sure nothing of it is left, and while the store
        cannot be reached it tries again later.  A store down for longer
        than its retries left a failed upload's segments for good.
        """
        now = [datetime.datetime(2030, 1, 1)]
        mine = self.leasedService(now)
        remote = FailingRemote(wentAway, down=True)
        removals = remote.removals
        self.service.stores["remote"] = remote  # the reaper's too
        image = await mine.create(self.ctx, ImageChanges(fields=dict(RAW)))
        with self.assertRaises(errors.Unavailable):
            await mine.update(self.ctx, image.id, ImageChanges(store="remote"),
                              BytesBody(reactor, b"abc"))
        self.assertEqual((await self.registry.get(image.id)).status, "killed")
        other = await self.reaper(now)
        now[0] += datetime.timedelta(seconds=SWEEP_DELAY - 10)
        self.assertEqual(await other.killAbandonedUploads(), 0)
        self.assertEqual(removals, [])
        now[0] += datetime.timedelta(seconds=20)
        self.assertEqual(await other.killAbandonedUploads(), 0)
        self.assertEqual(removals, [(image.id, False)])
        # Still away: tried again a sweep later, not before.
        self.assertEqual(await other.killAbandonedUploads(), 0)
        self.assertEqual(len(removals), 1)
        remote.down = False
        now[0] += datetime.timedelta(seconds=SWEEP_DELAY + 10)
        self.assertEqual(await other.killAbandonedUploads(), 0)
        self.assertEqual(len(removals), 2)
        now[0] += datetime.timedelta(seconds=SWEEP_DELAY + 10)
        self.assertEqual(await other.killAbandonedUploads(), 0)
        self.assertEqual(len(removals), 2)
        self.assertEqual(other.notifier.errors, [])

    @async_test
    async def test_partialFileThatCouldNotBeRemovedIsSweptLater(self):
        """
        A failed upload whose partial file the disk would not let go (it
        went read-only under the upload) leaves a reminder as a remote
        store's does, and a reaper removes the file once the disk takes
        removals again: it stayed until the server's next start.
        """
        from glancetx.store import appendfile
        now = [datetime.datetime(2030, 1, 1)]
        mine = self.leasedService(now)

        def broken(self, *args):
            raise OSError(30, "Read-only file system")
        # The bytes may all wait for the commit's sync, or not.
        self.patch(appendfile.AppendFile, "append", broken)
        self.patch(appendfile.AppendFile, "sync", broken)
        realUnlink = os.unlink

        def refuse(path, *args, **kwargs):
            if os.path.dirname(os.path.abspath(path)) == self.dir:
                raise OSError(30, "Read-only file system")
            return realUnlink(path, *args, **kwargs)
        self.patch(os, "unlink", refuse)
        image = await mine.create(self.ctx, ImageChanges(fields=dict(RAW)))
        with self.assertRaises(errors.Unavailable):
            await mine.update(self.ctx, image.id, ImageChanges(),
                              BytesBody(reactor, b"x" * 300000))
        self.assertEqual((await self.registry.get(image.id)).status, "killed")
        self.assertEqual(len(self.files()), 1)
        other = await self.reaper(now)
        now[0] += datetime.timedelta(seconds=SWEEP_DELAY + 10)
        self.assertEqual(await other.killAbandonedUploads(), 0)
        self.assertEqual(len(self.files()), 1)  # still refused: tried again later
        self.patch(os, "unlink", realUnlink)
        now[0] += datetime.timedelta(seconds=SWEEP_DELAY + 10)
        self.assertEqual(await other.killAbandonedUploads(), 0)
        self.assertEqual(self.files(), [])

    @async_test
    async def test_deleteTheDiskRefusesIsScrubbedLater(self):
        """
        An image file the disk will not remove (its directory's
        permissions changed) leaves its image pending_delete for the
        scrubber: the image was deleted and its bytes forgotten.
        """
        image = await self.upload(b"abc")
        realUnlink = os.unlink

        def refuse(path, *args, **kwargs):
            if os.path.dirname(os.path.abspath(path)) == self.dir:
                raise OSError(13, "Permission denied")
            return realUnlink(path, *args, **kwargs)
        self.patch(os, "unlink", refuse)
        await self.service.delete(self.ctx, image.id)
        row = await self.registry.get(image.id, includeDeleted=True)
        self.assertEqual(row.status, "pending_delete")
        self.assertEqual(self.files(), [image.id])
        self.patch(os, "unlink", realUnlink)
        self.assertEqual(await self.service.scrub(), 1)
        self.assertEqual(self.files(), [])

    @async_test
    async def test_failedRemoteUploadsReminderIsWrittenWithItsKill(self):
        """
        The reminder to sweep a failed remote upload is written in the
        same commit that kills its image: a process that died between
        the two left the parts with nothing to say they were there.
        """
        now = [datetime.datetime(2030, 1, 1)]
        mine = self.leasedService(now)
        remote = FailingRemote(wentAway)
        self.service.stores["remote"] = remote

        async def died(*args, **kw):
            raise RuntimeError("the process died after the kill")
        self.registry.sweepLater = died
        image = await mine.create(self.ctx, ImageChanges(fields=dict(RAW)))
        with self.assertRaises(errors.Unavailable):
            await mine.update(self.ctx, image.id, ImageChanges(store="remote"),
                              BytesBody(reactor, b"abc"))
        self.assertEqual((await self.registry.get(image.id)).status, "killed")
        del self.registry.sweepLater
        other = await self.reaper(now)
        now[0] += datetime.timedelta(seconds=SWEEP_DELAY + 10)
        self.assertEqual(await other.killAbandonedUploads(), 0)
        self.assertEqual(remote.removals, [(image.id, False)])

    @async_test
    async def test_storeFailureOfAnUploadKilledMeanwhileIsAConflict(self):
        """
        An upload whose image another process killed meanwhile (its lease
        had run out), and whose store then fails (the reaper aborted its
        multipart upload), is answered 409 as any upload killed meanwhile:
        not a 503, which invites the client to send it again.
        """
        async def killedMeanwhile(imageId):
            await self.registry.update(imageId, {"status": "killed"}, expectStatus=["saving"])
            raise StoreError("S3 part 3 upload failed")
        self.service.stores["remote"] = FailingRemote(killedMeanwhile)
        image = await self.service.create(self.ctx, ImageChanges(fields=dict(RAW)))
        with self.assertRaises(errors.Conflict) as caught:
            await self.service.update(self.ctx, image.id, ImageChanges(store="remote"),
                                      BytesBody(reactor, b"abc"))
        self.assertIn("was killed during the upload", caught.exception.message)
        self.assertEqual((await self.registry.get(image.id)).status, "killed")

    @async_test
    async def test_deletedUploadOfADeadProcessIsRemoved(self):
        """
        An image deleted while its bytes arrived, whose receiving process
        then died: the reaper removes what the upload stored, and does not
        kill the deleted image.
        """
        now = [datetime.datetime(2030, 1, 1)]
        mine, other = self.leasedService(now), await self.reaper(now)
        image, body, d = await self.heldUpload(mine)
        await other.delete(self.ctx, image.id)
        # The held upload's writer is alive in this process, so the store
        # would keep its file: see that the reaper asks for it.
        removed = []
        real = self.store.removeAbandoned
        self.store.removeAbandoned = lambda imageId, **kw: removed.append(imageId) or real(imageId)
        now[0] += datetime.timedelta(seconds=61)
        self.assertEqual(await other.killAbandonedUploads(), 0)
        self.assertEqual(removed, [image.id])
        self.assertEqual(await other.killAbandonedUploads(), 0)
        self.assertEqual(removed, [image.id])
        self.assertEqual(other.notifier.errors, [])
        self.assertEqual((await self.registry.get(image.id, includeDeleted=True)).status,
                         "deleted")
        body.release()
        with self.assertRaises(errors.Conflict):
            await d

    @async_test
    async def test_reaperThatDiesBeforeRemovingLeavesItToAnother(self):
        """
        A reaper kills a dead process's upload and dies before it has
        removed what that upload stored: another reaper removes it once
        L{SWEEP_DELAY} has passed.  The kill once ended the lease, the only
        record that anything was left, in the same commit, and the parts
        stayed in the store for good.  A removal that is done ends the
        record, so nothing is removed twice.
        """
        from twisted.internet.defer import Deferred as Never
        now = [datetime.datetime(2030, 1, 1)]
        mine, dying = self.leasedService(now), await self.reaper(now)
        image, body, d = await self.heldUpload(mine)
        removed = []
        real = self.store.removeAbandoned
        reached, stuck = Never(), Never()

        def neverDone(imageId, **kw):
            removed.append(imageId)
            reached.callback(None)
            return stuck
        # The first reaper never gets past the store.
        self.store.removeAbandoned = neverDone
        now[0] += datetime.timedelta(seconds=61)
        dead = dying.killAbandonedUploads()
        await reached
        self.assertEqual(removed, [image.id])
        self.assertEqual((await self.registry.get(image.id)).status, "killed")
        self.store.removeAbandoned = lambda imageId, **kw: removed.append(imageId) or real(imageId)
        other = await self.reaper(now)
        now[0] += datetime.timedelta(seconds=SWEEP_DELAY - 1)
        self.assertEqual(await other.killAbandonedUploads(), 0)
        self.assertEqual(removed, [image.id])
        now[0] += datetime.timedelta(seconds=2)
        self.assertEqual(await other.killAbandonedUploads(), 0)
        self.assertEqual(removed, [image.id, image.id])
        now[0] += datetime.timedelta(seconds=SWEEP_DELAY + 1)
        self.assertEqual(await other.killAbandonedUploads(), 0)
        self.assertEqual(removed, [image.id, image.id])
        body.release()
        with self.assertRaises(errors.Conflict):
            await d
        # (The first reaper's store call, answered at last.)
        stuck.callback(None)
        await dead

    @async_test
    async def test_deleteRemovesBytes(self):
        image = await self.upload(b"abc")
        self.assertEqual(self.files(), [image.id])
        deleted = await self.service.delete(self.ctx, image.id)
        self.assertEqual(deleted.status, "deleted")
        self.assertEqual(self.files(), [])
        with self.assertRaises(errors.NotFound):
            await self.service.show(self.ctx, image.id)

    @async_test
    async def test_delayedDeleteKeepsBytes(self):
        self.service.config = attr.evolve(self.config, delayed_delete=True)
        image = await self.upload(b"abc")
        deleted = await self.service.delete(self.ctx, image.id)
        self.assertEqual(deleted.status, "pending_delete")
        self.assertEqual(self.files(), [image.id])

    @async_test
    async def test_scrubberRemovesDelayedBytes(self):
        self.service.config = attr.evolve(self.config, delayed_delete=True, scrub_time=0)
        image = await self.upload(b"abc")
        await self.service.delete(self.ctx, image.id)
        self.assertEqual(self.files(), [image.id])
        self.assertEqual(await self.service.scrub(), 1)
        self.assertEqual(self.files(), [])
        gone = await self.registry.get(image.id, includeDeleted=True)
        self.assertEqual(gone.status, "deleted")
        self.assertEqual(await self.registry.getLocation(image.id), None)
        # Nothing left to do, and a second scrubber finds nothing to claim.
        self.assertEqual(await self.service.scrub(), 0)

    @async_test
    async def test_bytesTheStoreRefusedToDeleteAreScrubbedLater(self):
        """
        A store that refuses a delete (a 403, a skewed clock, a file it
        may not remove), rather than being out of reach: the image goes
        back to pending_delete, and a later scrub removes the bytes, as
        Glance's scrubber retried.  Before, the image stayed deleted and
        its bytes in the store for good.
        """
        self.service.config = attr.evolve(self.config, delayed_delete=True, scrub_time=0)
        image = await self.upload(b"abc")
        await self.service.delete(self.ctx, image.id)
        realDelete = self.store.delete

        def refused(location):
            raise StoreError("S3 delete failed: 403 AccessDenied")
        self.store.delete = refused
        self.assertEqual(await self.service.scrub(), 0)
        await self.assertWaitsForTheScrubber(image)
        self.store.delete = realDelete
        await self.assertScrubbed(image)

    @async_test
    async def test_bytesOfAScrubberThatDiedAreScrubbedAgain(self):
        """
        A scrubber claimed an image's bytes (the image went to deleted) and
        its process died before it removed them: once the claim is stale,
        a later scrub puts the image back and removes them.  Before,
        nothing looked at a deleted image again, and its bytes stayed.
        """
        self.service.config = attr.evolve(self.config, delayed_delete=True, scrub_time=0)
        image = await self.upload(b"abc")
        await self.service.delete(self.ctx, image.id)
        self.assertIsNotNone(await self.registry.claimPendingDelete(image.id))
        self.assertEqual(await self.service.scrub(), 0)
        self.assertEqual(self.files(), [image.id])
        self.service.removalClaimSeconds = -1
        await self.assertScrubbed(image)

    @async_test
    async def test_bytesOfADeleteWhileTheStoreIsDownAreScrubbed(self):
        """
        A delete whose store cannot be reached leaves the image
        pending_delete, so that a scrubber (any server's, after a restart
        too) removes its bytes once the store is back, rather than leaving
        them behind when the store's own retries give up; a scrubber that
        meets the store still down puts the image back again.
        """
        self.service.config = attr.evolve(self.config, scrub_time=3600)
        image = await self.upload(b"abc")
        realDelete = self.store.delete

        def down(location):
            raise StoreUnavailable("the store is down")
        self.store.delete = down
        deleted = await self.service.delete(self.ctx, image.id)
        self.assertEqual(deleted.status, "deleted")
        with self.assertRaises(errors.NotFound):
            await self.service.show(self.ctx, image.id)
        await self.assertWaitsForTheScrubber(image)
        self.assertEqual(await self.service.scrub(), 0)
        await self.assertWaitsForTheScrubber(image)
        self.store.delete = realDelete
        # Not a delayed delete: retried without waiting scrub_time.
        await self.assertScrubbed(image)

    @async_test
    async def test_bytesOfADeleteWhoseAnswerWasLostAreScrubbed(self):
        """
        The database committed a delete but answered after the registry's
        deadline: the client got a 503, and the image is deleted all the
        same.  Its bytes once stayed in the store for good, since nothing
        recorded that they were still to be removed; a scrubber now
        removes them.
        """
        image = await self.upload(b"abc")
        onTime = self.registry.delete

        async def late(*args, **kw):
            await onTime(*args, **kw)
            raise Unreachable("no answer within 30 s")
        self.registry.delete = late
        with self.assertRaises(Unreachable):
            await self.service.delete(self.ctx, image.id)
        with self.assertRaises(errors.NotFound):
            await self.service.show(self.ctx, image.id)
        self.assertEqual(self.files(), [image.id])
        self.assertEqual(await self.service.scrub(), 1)
        self.assertEqual(self.files(), [])
        row = await self.registry.get(image.id, includeDeleted=True)
        self.assertEqual(row.status, "deleted")

    @async_test
    async def test_deleteThatCannotClaimItsBytesLeavesThemToTheScrubber(self):
        """
        The delete is committed, then the database cannot be reached to
        take the bytes for removal: the delete still succeeds, and a
        scrubber removes them later.
        """
        image = await self.upload(b"abc")

        async def unreachable(imageId):
            raise Unreachable("no answer within 30 s")
        self.registry.claimPendingDelete = unreachable
        deleted = await self.service.delete(self.ctx, image.id)
        self.assertEqual(deleted.status, "deleted")
        self.assertEqual(self.events()[-1], "image.delete")
        self.assertEqual(self.files(), [image.id])
        del self.registry.claimPendingDelete
        self.assertEqual(await self.service.scrub(), 1)
        self.assertEqual(self.files(), [])

    @async_test
    async def test_scrubberWorksThroughEveryPendingDelete(self):
        """
        One scrub removes every image due, however many batches that takes:
        a scrubber that took one batch a wakeup fell behind for good once
        more images were deleted between wakeups than a batch holds.
        """
        self.service.config = attr.evolve(self.config, delayed_delete=True, scrub_time=0)
        self.service.scrubBatch = 2
        for data in (b"a", b"b", b"c", b"d", b"e"):
            image = await self.upload(data)
            await self.service.delete(self.ctx, image.id)
        self.assertEqual(len(self.files()), 5)
        self.assertEqual(await self.service.scrub(), 5)
        self.assertEqual(self.files(), [])

    @async_test
    async def test_scrubberStopsWithTheServer(self):
        """
        A scrub ends with the image it is at once the server is stopping:
        shutdown waits for the scrub under way, which now works through
        every image due.
        """
        self.service.config = attr.evolve(self.config, delayed_delete=True, scrub_time=0)
        for data in (b"a", b"b", b"c"):
            image = await self.upload(data)
            await self.service.delete(self.ctx, image.id)
        realDelete = self.store.delete

        def deleteThenStop(location):
            stopped.append(Deferred.fromCoroutine(self.service.stopUploads()))
            return realDelete(location)
        stopped = []
        self.store.delete = deleteThenStop
        self.assertEqual(await self.service.scrub(), 1)
        self.assertEqual(len(self.files()), 2)
        await stopped[0]

    @async_test
    async def test_scrubberTriesAStoreThatIsDownOncePerRun(self):
        """
        Once a scrub finds a store unreachable, its other images go back to
        pending_delete untried in that run: each try would wait for the
        store's timeouts, and the images of other stores behind them (the
        oldest come first) would wait for all of those.
        """
        self.service.config = attr.evolve(self.config, delayed_delete=True, scrub_time=0)
        self.service.scrubBatch = 2
        images = []
        for data in (b"a", b"b", b"c"):
            image = await self.upload(data)
            await self.service.delete(self.ctx, image.id)
            images.append(image)
        tried = []

        def down(location):
            tried.append(location)
            raise StoreUnavailable("the store is down")
        self.store.delete = down
        self.assertEqual(await self.service.scrub(), 0)
        self.assertEqual(len(tried), 1)
        for image in images:
            row = await self.registry.get(image.id, includeDeleted=True)
            self.assertEqual(row.status, "pending_delete")
        self.assertEqual(len(self.files()), 3)

    @async_test
    async def test_scrubberLeavesTheImagesOfAStoreItDoesNotHave(self):
        """
        Images whose locations no store of this server's serves (a store
        taken out of C{stores}, or one only other servers have) are left
        in pending_delete, their bytes kept, untouched, with one warning a
        scrub that names no location: each was claimed and put back, two
        writes an image every scrub, with a warning for each.  A server
        with their store removes them.
        """
        from twisted.logger import LogLevel, globalLogPublisher
        self.service.config = attr.evolve(self.config, delayed_delete=True, scrub_time=0)
        images = []
        for data in (b"a", b"b", b"c"):
            image = await self.upload(data)
            await self.service.delete(self.ctx, image.id)
            images.append(image)
        stores, self.service.stores = self.service.stores, {}
        claimed = []
        real = self.registry.claimPendingDelete
        self.registry.claimPendingDelete = lambda imageId: claimed.append(imageId) or real(imageId)
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.assertEqual(await self.service.scrub(), 0)
        self.assertEqual(claimed, [])
        warned = [e for e in logged if e.get("log_level") == LogLevel.warn]
        self.assertEqual([(e.get("count"), e.get("scheme")) for e in warned], [(3, "file://")])
        for event in logged:
            self.assertNotIn(self.dir, repr(event))
        for image in images:
            row = await self.registry.get(image.id, includeDeleted=True)
            self.assertEqual(row.status, "pending_delete")
        self.assertEqual(len(self.files()), 3)
        self.service.stores = stores
        self.assertEqual(await self.service.scrub(), 3)
        self.assertEqual(self.files(), [])

    @async_test
    async def test_bytesAlreadyGoneAreNoFailure(self):
        self.service.config = attr.evolve(self.config, delayed_delete=True, scrub_time=0)
        image = await self.upload(b"abc")
        await self.service.delete(self.ctx, image.id)

        def gone(location):
            raise LocationNotFound("no image file")
        self.store.delete = gone
        self.assertEqual(await self.service.scrub(), 1)
        row = await self.registry.get(image.id, includeDeleted=True)
        self.assertEqual(row.status, "deleted")

    @async_test
    async def test_scrubberWaitsForScrubTime(self):
        self.service.config = attr.evolve(self.config, delayed_delete=True, scrub_time=3600)
        image = await self.upload(b"abc")
        await self.service.delete(self.ctx, image.id)
        self.assertEqual(await self.service.scrub(), 0)
        self.assertEqual(self.files(), [image.id])

    @async_test
    async def test_readOnlyContext(self):
        ro = RequestContext(user="u", tenant="t", roles={"reader"}, read_only=True)
        with self.assertRaises(errors.Forbidden):
            await self.service.create(ro, ImageChanges(fields=dict(RAW)))

    @async_test
    async def test_changesSincePagesPastADeletedImage(self):
        """
        A changes-since list includes deleted images, so one of them can end
        a page; its id must then work as the next page's marker, for the
        owner as for an admin, or paging stops there with a 400.
        """
        alice = RequestContext(user="a", tenant="alice", roles={"member"})
        before = datetime.datetime.utcnow() - datetime.timedelta(seconds=1)
        made = []
        for _ in range(3):
            made.append(await self.service.create(alice, ImageChanges(fields=dict(RAW))))
        await self.service.delete(alice, made[1].id)
        for ctx in (alice, self.ctx):
            seen, marker = [], None
            for _ in range(5):
                page = await self.service.list(ctx, ListQuery(
                    changes_since=before, limit=1, marker=marker,
                    restrict_to_visible=True if ctx is alice else False))
                if not page:
                    break
                seen.append(page[0].id)
                marker = page[0].id
            self.assertEqual(sorted(seen), sorted(i.id for i in made))
        # Without changes-since a deleted image is in no list, so it is no marker.
        with self.assertRaises(errors.BadRequest):
            await self.service.list(alice, ListQuery(marker=made[1].id))

    @async_test
    async def test_uploadToAReservedImageKeepsItsProperties(self):
        """
        Reserve with properties, then upload with a PUT that names none (as
        curl does): as in Glance, a PUT that carries image data purges
        nothing, so the properties survive; a PUT without data still does.
        """
        image = await self.service.create(self.ctx, ImageChanges(
            fields=dict(RAW), properties={"os_distro": "debian", "arch": "x86_64"}))
        image = await self.service.update(
            self.ctx, image.id, ImageChanges(properties={"arch": "aarch64"}),
            BytesBody(reactor, b"x" * 1000))
        self.assertEqual(image.status, "active")
        self.assertEqual(image.properties, {"os_distro": "debian", "arch": "aarch64"})
        image = await self.service.update(self.ctx, image.id, ImageChanges(
            properties={"arch": "aarch64"}))
        self.assertEqual(image.properties, {"arch": "aarch64"})

    @async_test
    async def test_amazonFormatFillsTheOther(self):
        """
        As Glance did: an aki, ari or ami format given with the other format
        left out sets the other to the same; given both, they must match.
        """
        image = await self.service.create(self.ctx, ImageChanges(fields={"disk_format": "aki"}))
        self.assertEqual((image.disk_format, image.container_format), ("aki", "aki"))
        image = await self.service.create(self.ctx, ImageChanges(
            fields={"container_format": "bare"}))
        image = await self.service.update(self.ctx, image.id, ImageChanges(
            fields={"disk_format": "ari"}))
        self.assertEqual((image.disk_format, image.container_format), ("ari", "ari"))
        with self.assertRaises(errors.BadRequest):
            await self.service.create(self.ctx, ImageChanges(
                fields={"disk_format": "ami", "container_format": "bare"}))

    @async_test
    async def test_reservedImageNotifiesSizeZero(self):
        """
        Glance's notifications carried size 0 for an image with no bytes
        yet; a consumer metering image.size (Ceilometer) reads a number.
        """
        await self.service.create(self.ctx, ImageChanges(fields=dict(RAW)))
        [(event, payload)] = self.notifier.events
        self.assertEqual((event, payload["status"], payload["size"]),
                         ("image.create", "queued", 0))

    @async_test
    async def test_sourceSizesBeyondWhatAnImageMayHave(self):
        """
        A copy-from source reporting more than the image size cap is
        refused at once (413), as a declared size is, not killed once the
        cap's worth has been fetched; a location or source reporting more
        than any image can have (2 ** 63 bytes: no column holds it) is a
        400 that leaves no image, not a 500 after the record was made.
        """
        @attr.s
        class Huge:
            size = attr.ib()
            name = "http"
            schemes = ("http", "https")

            async def get_size(self, location):
                return self.size

        for size, supply, error in (
                (self.config.image_size_cap + 1, "copy_from", errors.TooLarge),
                (2 ** 63, "copy_from", errors.TooLarge),
                (2 ** 63, "location", errors.BadRequest),
                (10 ** 30, "location", errors.BadRequest)):
            self.service.stores["http"] = Huge(size)
            with self.assertRaises(error):
                await self.service.create(self.ctx, ImageChanges(
                    fields=dict(RAW), **{supply: "http://source.example/huge"}))
            reserved = await self.service.create(self.ctx, ImageChanges(fields=dict(RAW)))
            with self.assertRaises(error):
                await self.service.update(self.ctx, reserved.id, ImageChanges(
                    **{supply: "http://source.example/huge"}))
            await self.registry.delete(reserved.id)
        self.assertEqual(await self.registry.list(ListQuery()), [])
        self.service.stores["http"] = Huge(2 ** 63 - 1)
        image = await self.service.create(self.ctx, ImageChanges(
            fields=dict(RAW), location="http://source.example/huge"))
        self.assertEqual((image.status, image.size), ("active", 2 ** 63 - 1))

    @async_test
    async def test_copyFromTakesTheSourcesSize(self):
        """
        As in Glance, a copy-from image takes the size its source reports
        when it is made, so it shows that size while it waits, and a source
        that then sends other than that is a failed copy (killed).
        """
        @attr.s
        class Source:
            data = attr.ib()
            reported = attr.ib()
            name = "http"
            schemes = ("http", "https")

            async def get_size(self, location):
                return self.reported

            async def get(self, location):
                return BytesBody(reactor, self.data, knownLength=False)

        self.service.stores["http"] = Source(b"x" * 5, 5)
        image = await self.service.create(self.ctx, ImageChanges(
            fields=dict(RAW), copy_from="http://source.example/good"))
        self.assertEqual((image.status, image.size), ("saving", 5))
        await DeferredList(list(self.service.background))
        image = await self.registry.get(image.id)
        self.assertEqual((image.status, image.size), ("active", 5))

        self.service.stores["http"] = Source(b"x" * 6, 5)
        image = await self.service.create(self.ctx, ImageChanges(
            fields=dict(RAW), copy_from="http://source.example/grown"))
        await DeferredList(list(self.service.background))
        image = await self.registry.get(image.id)
        self.assertEqual(image.status, "killed")
        self.assertEqual(self.files(), [(await self.registry.list(ListQuery(
            filters={"status": "active"})))[0].id])


class WithoutLocationsTests(SynchronousTestCase):
    """
    The text of an error, for a client, a notification or an info log
    line, with each URL in it reduced to its scheme.
    """

    def test_schemeInAnyCase(self):
        """
        A location goes whatever the case of its scheme (credentials once
        passed over C{HTTP://user:pass@host}).
        """
        for text, scheme in (("failed: HTTP://u:SEKRIT@h/x", "http"),
                             ("failed: Swift+HTTP://u:SEKRIT@h/a/c/o", "swift+http"),
                             ("x http://u:SEKRIT@h/x y", "http")):
            self.assertNotIn("SEKRIT", withoutLocations(text))
            self.assertNotIn("h/", withoutLocations(text))
            self.assertIn("<%s location>" % (scheme,), withoutLocations(text))
        self.assertEqual(withoutLocations("failed: HTTP://u:SEKRIT@h/x"),
                         "failed: <http location>")

    def test_passwordWithSpaceOrQuote(self):
        """
        A password holding a space or a quote does not end the location
        early and leave its tail in the text: everything up to the line's
        last C{@} is taken for the location's user part.
        """
        for text in ("failed: http://u:SEK RIT@h/x", "failed: http://u:SEK'RIT@h/x y",
                     'failed: "http://u:SEK"RIT@h/x"', "failed: http://u:SEK RIT@h/x\nnext"):
            self.assertNotIn("RIT", withoutLocations(text))
        self.assertEqual(withoutLocations("failed: http://u:SEK RIT@h/x: 404"),
                         "failed: <http location>: 404")
        self.assertEqual(withoutLocations("fetch 'http://h/x' failed\nfrom a@b"),
                         "fetch '<http location>' failed\nfrom a@b")

    def test_punctuationAfterTheLocation(self):
        """
        A colon or full stop after a location is the text's, and stays.
        """
        self.assertEqual(
            withoutLocations("http://127.0.0.2:45259: the origin could not be reached"),
            "<http location>: the origin could not be reached")
        self.assertEqual(withoutLocations("from http://u:SEKRIT@[::1]:80/x. Then"),
                         "from <http location>. Then")
        self.assertEqual(withoutLocations("at http://h:1/a, s3://h/b/c; done"),
                         "at <http location>, <s3 location>; done")
