"""
Registry queries against every supported database: filters, sorting and
marker paging (with ties), conditional status changes, members.
"""

import datetime

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from glancetx.registry import migrate
from glancetx.registry.schema import images
from glancetx.registry.registry import (Conflict, ListQuery, MemberRecord, MembersRefused,
                                        NotFound, Protected, QuotaExceeded, Registry,
                                        RegistryError, Unreachable, SWEEP_HOLDER, UploadLease)
from tests import dbs


def uid(n: int) -> str:
    return "00000000-0000-0000-0000-%012d" % (n,)


def async_test(f):
    def wrapper(self):
        return ensureDeferred(f(self))
    wrapper.__name__ = f.__name__
    return wrapper


class RegistryTestsMixin:
    def makeURL(self) -> str:
        raise NotImplementedError()

    def setUp(self):
        url = self.url = self.makeURL()
        migrate.sync(url)
        self.registry = Registry(url, reactor)
        self.addCleanup(self.registry.close)

    async def make(self, n, **values):
        fields = {"id": uid(n), "status": "active", "owner": "t1", "name": "img%d" % n}
        fields.update(values)
        props = fields.pop("properties", {})
        return await self.registry.create(fields, props)

    @async_test
    async def test_createAndGet(self):
        await self.make(1, properties={"arch": "x86_64", "ünï": "cødé"})
        got = await self.registry.get(uid(1))
        self.assertEqual(got.name, "img1")
        self.assertEqual(dict(got.properties), {"arch": "x86_64", "ünï": "cødé"})
        self.assertFalse(got.deleted)
        self.assertIsInstance(got.created_at, datetime.datetime)

    @async_test
    async def test_workPastItsDeadlineIsUnreachable(self):
        """
        Work that the database has not answered within the registry's
        timeout fails as L{Unreachable} then, rather than when (or if) the
        database answers; the next work gets a connection of its own.
        """
        import time
        self.registry.timeout = 0.3
        started = reactor.seconds()
        with self.assertRaises(Unreachable):
            await self.registry._run(lambda c: time.sleep(1.0))
        self.assertLess(reactor.seconds() - started, 0.9)
        self.registry.timeout = 30
        self.assertEqual(await self.registry.list(ListQuery()), [])

    @async_test
    async def test_workPastItsDeadlineIsNotCommitted(self):
        """
        A transaction still running when its caller was answered
        L{Unreachable} is rolled back, not committed: that caller was told
        the write failed (a 503), and an upload's activation that committed
        later turned an image active after its client had been told so.
        The database was slow, not locked, so no lock timeout ended it.
        """
        import threading
        import time
        await self.make(1, status="saving")
        finished = threading.Event()

        def slowWrite(sqlconn):
            sqlconn.execute(images.update().where(images.c.id == uid(1)).values(
                status="active"))
            time.sleep(1.0)
            finished.set()

        self.registry.timeout = 0.3
        with self.assertRaises(Unreachable):
            await self.registry._run(slowWrite)
        self.registry.timeout = 30
        await deferToThread(finished.wait, 10)
        self.assertTrue(finished.is_set())
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual((await self.registry.get(uid(1))).status, "saving")

    @async_test
    async def test_closeDoesNotWaitLongForBusyConnections(self):
        """
        The close at shutdown waits only so long for a connection whose
        work the database has not answered: a silent database held the
        server's stop for as long as it stayed silent.
        """
        import threading
        import time

        from twisted.internet.threads import deferToThread
        running = threading.Event()

        def work(sqlconn):
            running.set()
            time.sleep(2.0)
        busy = ensureDeferred(self.registry._run(work))
        await deferToThread(running.wait, 10)
        self.registry.closeSeconds = 0.3
        from twisted.logger import globalLogPublisher
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        started = reactor.seconds()
        await self.registry.close()
        self.assertLess(reactor.seconds() - started, 1.0)
        self.assertEqual([e.get("count") for e in logged if "still busy" in e.get("log_format", "")],
                         [1])
        await busy

    @async_test
    async def test_readsOfOneTurnShareATrip(self):
        """
        Reads by id asked for in the same reactor turn go to a database
        thread together, and each still gets its own answer.
        """
        from glancetx.registry import registry as module
        await self.registry.create({"id": uid(1), "status": "active", "name": "img1"}, {},
                                   location="file:///x/1")
        await self.make(2, is_public=False, owner="t2")
        trips = []
        real = module.runOnConnection
        self.patch(module, "runOnConnection", lambda conn, work: trips.append(1) or real(conn, work))
        gets = [self.registry.get(uid(1)), self.registry.get(uid(9)),
                self.registry.getLocation(uid(1)), self.registry.isVisible(uid(2), "t1")]
        one = await gets[0]
        with self.assertRaises(NotFound):
            await gets[1]
        self.assertEqual((one.name, await gets[2], await gets[3]),
                         ("img1", "file:///x/1", False))
        self.assertEqual(len(trips), 1)

    @async_test
    async def test_duplicateIdConflicts(self):
        await self.make(1)
        with self.assertRaises(Conflict):
            await self.make(1)

    @async_test
    async def test_getMissing(self):
        with self.assertRaises(NotFound):
            await self.registry.get(uid(99))

    @async_test
    async def test_locationNotInRecord(self):
        await self.registry.create({"id": uid(1), "status": "active"}, {},
                                   location="s3://key:secret@host/b/k")
        got = await self.registry.get(uid(1))
        self.assertNotIn("location", got.fields())
        self.assertEqual(await self.registry.getLocation(uid(1)), "s3://key:secret@host/b/k")

    @async_test
    async def test_conditionalStatus(self):
        await self.make(1, status="queued")
        await self.registry.update(uid(1), {"status": "saving"}, expectStatus=["queued"])
        with self.assertRaises(Conflict):
            await self.registry.update(uid(1), {"status": "saving"}, expectStatus=["queued"])
        with self.assertRaises(NotFound):
            await self.registry.update(uid(2), {"status": "saving"}, expectStatus=["queued"])

    async def saving(self, n, holder, expiresAt):
        await self.make(n, status="queued")
        await self.registry.update(uid(n), {"status": "saving"}, expectStatus=["queued"],
                                   lease=UploadLease(uid(n), holder, expiresAt, "file"))

    @async_test
    async def test_expiredUploadLeaseKillsItsImage(self):
        """
        An image whose upload lease ran out is killed, once: a second
        reaper, or the same one again, finds nothing.
        """
        t0 = datetime.datetime(2030, 1, 1)
        await self.saving(1, "a", t0)
        self.assertEqual(await self.registry.killAbandonedUploads(t0), [])
        self.assertEqual((await self.registry.get(uid(1))).status, "saving")
        later = t0 + datetime.timedelta(seconds=1)
        self.assertEqual(await self.registry.killAbandonedUploads(later),
                         [(UploadLease(uid(1), "a", t0, "file"), True)])
        self.assertEqual((await self.registry.get(uid(1))).status, "killed")
        self.assertEqual(await self.registry.killAbandonedUploads(later), [])

    @async_test
    async def test_sweepReminder(self):
        """
        A failed upload's reminder is a lease no process renews: it ends
        once run out, killing nothing, and is left only where the image has
        no lease already.
        """
        t0 = datetime.datetime(2030, 1, 1)
        await self.make(1, status="killed")
        self.assertTrue(await self.registry.sweepLater(uid(1), "swift", t0))
        self.assertFalse(await self.registry.sweepLater(uid(1), "swift", t0))
        later = t0 + datetime.timedelta(seconds=1)
        self.assertEqual(await self.registry.killAbandonedUploads(later),
                         [(UploadLease(uid(1), SWEEP_HOLDER, t0, "swift"), False)])
        self.assertEqual((await self.registry.get(uid(1))).status, "killed")
        self.assertEqual(await self.registry.killAbandonedUploads(later), [])
        self.assertTrue(await self.registry.sweepLater(uid(1), "swift", later))

    @async_test
    async def test_renewingKeepsOnlyTheHoldersUploads(self):
        t0 = datetime.datetime(2030, 1, 1)
        await self.saving(1, "a", t0)
        await self.saving(2, "b", t0)
        await self.saving(3, "a", t0)
        later = t0 + datetime.timedelta(seconds=60)
        self.assertEqual(await self.registry.renewUploads("a", later), 2)
        killed = await self.registry.killAbandonedUploads(t0 + datetime.timedelta(seconds=30))
        self.assertEqual([(lease.image_id, k) for lease, k in killed], [(uid(2), True)])
        self.assertEqual([(await self.registry.get(uid(n))).status for n in (1, 2, 3)],
                         ["saving", "killed", "saving"])

    @async_test
    async def test_leavingSavingEndsTheLease(self):
        """
        An upload that ended (active, killed) holds no lease any more, so
        nothing kills or touches it later; and a saving image with no lease
        (left by a version before leases) is not killed either.
        """
        t0 = datetime.datetime(2030, 1, 1)
        await self.saving(1, "a", t0)
        await self.registry.update(uid(1), {"status": "active"}, expectStatus=["saving"])
        await self.make(3, status="saving")
        much = t0 + datetime.timedelta(days=1)
        self.assertEqual(await self.registry.killAbandonedUploads(much), [])
        self.assertEqual(await self.registry.renewUploads("a", much), 0)
        self.assertEqual((await self.registry.get(uid(1))).status, "active")
        self.assertEqual((await self.registry.get(uid(3))).status, "saving")

    @async_test
    async def test_deletingKeepsTheUploadsLease(self):
        """
        An image deleted while its bytes arrive keeps its upload's lease:
        the upload ends it (L{Registry.endUpload}), or, if its process
        died, the reaper ends it, without killing the deleted image, so
        that what the upload stored is removed.
        """
        t0 = datetime.datetime(2030, 1, 1)
        await self.saving(1, "a", t0)
        await self.saving(2, "a", t0)
        await self.registry.delete(uid(1))
        await self.registry.delete(uid(2))
        await self.registry.endUpload(uid(2), "b")
        await self.registry.endUpload(uid(2), "a")
        much = t0 + datetime.timedelta(days=1)
        self.assertEqual(await self.registry.killAbandonedUploads(much),
                         [(UploadLease(uid(1), "a", t0, "file"), False)])
        self.assertEqual(await self.registry.killAbandonedUploads(much), [])
        self.assertEqual((await self.registry.get(uid(1), includeDeleted=True)).status,
                         "deleted")

    @async_test
    async def test_deleteDecidesFromTheLocationItFinds(self):
        """
        A delayed delete sends an image with bytes to pending_delete and
        one without to deleted, judged in the deleting statement itself;
        the location comes back from the same transaction.
        """
        await self.make(1)
        await self.make(2)
        await self.registry.update(uid(2), {"status": "active", "size": 1},
                                   location="file:///there/2")
        one, none = await self.registry.delete(uid(1), delayed=True)
        two, where = await self.registry.delete(uid(2), delayed=True)
        self.assertEqual((one.status, none), ("deleted", None))
        self.assertEqual((two.status, where), ("pending_delete", "file:///there/2"))

    @async_test
    async def test_requeueDelete(self):
        """
        A deleted image goes back to pending_delete (for a scrubber) only
        while it is deleted and records the bytes that could not be
        removed: not an image of other bytes, not one in another status.
        """
        for n in (1, 2, 3):
            await self.make(n)
            await self.registry.update(uid(n), {"status": "active", "size": 1},
                                       location="file:///there/%d" % (n,))
        await self.registry.delete(uid(1))
        await self.registry.delete(uid(2))
        self.assertTrue(await self.registry.requeueDelete(uid(1), "file:///there/1"))
        self.assertFalse(await self.registry.requeueDelete(uid(2), "file:///elsewhere"))
        self.assertFalse(await self.registry.requeueDelete(uid(3), "file:///there/3"))
        statuses = [(await self.registry.get(uid(n), includeDeleted=True)).status
                    for n in (1, 2, 3)]
        self.assertEqual(statuses, ["pending_delete", "deleted", "active"])
        self.assertEqual(await self.registry.claimPendingDelete(uid(1)), "file:///there/1")

    @async_test
    async def test_staleRemovalsArePutBack(self):
        """
        A deleted image that keeps its location past the claim's time is a
        removal whose scrubber died: it goes back to pending_delete.  One
        whose bytes were recorded as gone, one claimed since, and one still
        pending are left alone.
        """
        for n in (1, 2, 3, 4):
            await self.make(n)
            await self.registry.update(uid(n), {"status": "active", "size": 1},
                                       location="file:///there/%d" % (n,))
            await self.registry.delete(uid(n), delayed=True)
        for n in (1, 2, 3):
            self.assertEqual(await self.registry.claimPendingDelete(uid(n)),
                             "file:///there/%d" % (n,))
        self.assertTrue(await self.registry.forgetDeletedBytes(uid(2), "file:///there/2"))
        self.assertFalse(await self.registry.forgetDeletedBytes(uid(3), "file:///elsewhere"))
        self.assertFalse(await self.registry.forgetDeletedBytes(uid(4), "file:///there/4"))
        self.assertEqual(await self.registry.getLocation(uid(2)), None)
        past = datetime.datetime.utcnow() - datetime.timedelta(minutes=10)
        self.assertEqual(await self.registry.requeueStaleRemovals(past), 0)
        future = datetime.datetime.utcnow() + datetime.timedelta(seconds=5)
        self.assertEqual(await self.registry.requeueStaleRemovals(future), 2)
        statuses = [(await self.registry.get(uid(n), includeDeleted=True)).status
                    for n in (1, 2, 3, 4)]
        self.assertEqual(statuses, ["pending_delete", "deleted", "pending_delete",
                                    "pending_delete"])

    @async_test
    async def test_pendingDeletesPageByPage(self):
        """
        The scrubber's work list comes a page at a time, each page from
        just past the last one's end, in the order the images were deleted
        (by id where the database keeps the same time for several): every
        image once, and one put back meanwhile not met again.
        """
        for n in (1, 2, 3, 4, 5):
            await self.make(n)
            await self.registry.update(uid(n), {"status": "active", "size": 1},
                                       location="file:///there/%d" % (n,))
            await self.registry.delete(uid(n), delayed=True)
        before = datetime.datetime.utcnow() + datetime.timedelta(seconds=5)
        seen, after = [], None
        while True:
            page = await self.registry.pendingDeletes(before, 2, after)
            if not page:
                break
            self.assertLessEqual(len(page), 2)
            for after in page:
                seen.append(after[1])
                # Claimed and put back, as a scrub whose store is down does.
                location = await self.registry.claimPendingDelete(after[1])
                self.assertTrue(await self.registry.requeueDelete(after[1], location))
        self.assertEqual(sorted(seen), [uid(n) for n in (1, 2, 3, 4, 5)])
        self.assertEqual(len(seen), 5)
        self.assertEqual(await self.registry.pendingDeletes(
            datetime.datetime.utcnow() - datetime.timedelta(hours=1)), [])

    @async_test
    async def test_sharedWithInTheImagesOfOneOwner(self):
        """
        A member's shares, of every owner's images or of one's (in one
        query), not of deleted images.
        """
        for n, owner in ((1, "alice"), (2, "carol"), (3, "alice"), (4, "alice")):
            await self.make(n, owner=owner)
            await self.registry.addMember(uid(n), "bob", n == 3, 10)
        await self.registry.delete(uid(4))
        self.assertEqual(await self.registry.sharedWith("bob", owner="alice"),
                         [MemberRecord(uid(1), "bob", False), MemberRecord(uid(3), "bob", True)])
        self.assertEqual([m.image_id for m in await self.registry.sharedWith("bob")],
                         [uid(1), uid(2), uid(3)])
        self.assertEqual(await self.registry.sharedWith("bob", owner="ALICE"), [])

    @async_test
    async def test_pagesFromAMarkerAreBoundedByTheIndex(self):
        """
        A page after a marker is the same whatever the sort key (ties on
        the key broken by id), and its statement bounds the pair (key, id)
        in the way each database bounds an index walk with (see
        L{glancetx.registry.paging}; tests.test_query_plans reads the plans).
        """
        from glancetx.registry.registry import SORT_KEYS, _ListShape, _listStatement
        for n in range(1, 8):
            await self.make(n, name="img%d" % (n % 3), size=n % 2,
                            status="active" if n % 3 else "queued",
                            disk_format=None if n % 2 else "raw")
        for key in SORT_KEYS:
            for direction in ("asc", "desc"):
                every = [i.id for i in await self.registry.list(
                    ListQuery(sort_key=key, sort_dir=direction, limit=100))]
                for at in range(len(every)):
                    page = [i.id for i in await self.registry.list(ListQuery(
                        sort_key=key, sort_dir=direction, limit=3, marker=every[at]))]
                    self.assertEqual(page, every[at + 1:at + 4], (key, direction, at))
        shape = _ListShape.of(ListQuery(marker=uid(1)))
        from sqlalchemy.dialects import mysql, postgresql, sqlite
        for dialect in (postgresql.dialect(), sqlite.dialect()):
            self.assertIn("(images.created_at, images.id) < (",
                          str(_listStatement(shape).compile(dialect=dialect)))
        self.assertIn("images.created_at <= %s AND (images.created_at < %s OR",
                      str(_listStatement(shape).compile(dialect=mysql.dialect())))
        # MariaDB is told which index to walk, since it would not.
        hint = "FORCE INDEX (ix_images_deleted_created_at_id)"
        self.assertIn(hint, str(_listStatement(shape).compile(dialect=mysql.dialect())))
        self.assertNotIn(hint, str(_listStatement(shape).compile(dialect=postgresql.dialect())))
        filtered = _ListShape.of(ListQuery(marker=uid(1), filters={"name": "img1"}))
        self.assertNotIn(hint, str(_listStatement(filtered).compile(dialect=mysql.dialect())))

    @async_test
    async def test_pendingDeletesOfTheStoresAServerHas(self):
        """
        The work list can be limited to the schemes of a server's stores
        (a LIKE's wildcards in a scheme match only themselves); the rest
        are counted, with one's scheme.
        """
        at = {1: "file:///there/1", 2: "swift://u:k@h/c/2", 3: "s3+http://k:s@h/b/3",
              4: "s3_http://k:s@h/b/4", 5: "file:///there/5"}
        for n, location in at.items():
            await self.make(n)
            await self.registry.update(uid(n), {"status": "active", "size": 1},
                                       location=location)
            await self.registry.delete(uid(n), delayed=True)
        before = datetime.datetime.utcnow() + datetime.timedelta(seconds=5)
        page = await self.registry.pendingDeletes(before, 10, schemes=["file", "s3+http"])
        self.assertEqual(sorted(r[1] for r in page), [uid(1), uid(3), uid(5)])
        self.assertEqual(await self.registry.pendingDeletesElsewhere(before, ["file", "s3+http"]),
                         (2, "s3_http"))
        count, scheme = await self.registry.pendingDeletesElsewhere(before, ["file", "s3_%"])
        self.assertEqual(count, 3)
        self.assertIn(scheme, ("s3+http", "s3_http", "swift"))
        self.assertEqual(len(await self.registry.pendingDeletes(before, 10)), 5)

    @async_test
    async def test_protectedImageIsNotDeleted(self):
        await self.make(1)
        await self.registry.update(uid(1), {"protected": True})
        with self.assertRaises(Protected):
            await self.registry.delete(uid(1))
        self.assertFalse((await self.registry.get(uid(1))).deleted)
        with self.assertRaises(NotFound):
            await self.registry.delete(uid(9))

    @async_test
    async def test_propertyQuotaCountedInTheTransaction(self):
        await self.make(1, properties={"a": "1", "b": "2"})
        with self.assertRaises(QuotaExceeded):
            await self.registry.update(uid(1), {"name": "x"}, {"c": "3"},
                                       purgeProperties=False, propertyQuota=2)
        image = await self.registry.get(uid(1))
        self.assertEqual((dict(image.properties), image.name), ({"a": "1", "b": "2"}, "img1"))
        await self.registry.update(uid(1), {}, {"a": "9"}, purgeProperties=False,
                                   propertyQuota=2)

    @async_test
    async def test_activationNeedsBothFormats(self):
        await self.make(1, status="queued", disk_format="raw", container_format="bare")
        await self.registry.update(uid(1), {"disk_format": None})
        with self.assertRaises(Conflict) as e:
            await self.registry.update(uid(1), {"status": "saving"}, expectStatus=["queued"],
                                       requireFormats=True)
        self.assertEqual(e.exception.current.status, "queued")
        await self.registry.update(uid(1), {"status": "saving", "disk_format": "raw"},
                                   expectStatus=["queued"], requireFormats=True)
        with self.assertRaises(Conflict):
            await self.registry.update(uid(1), {"status": "active", "container_format": None},
                                       expectStatus=["saving"], requireFormats=True)

    @async_test
    async def test_deletedMarkerIsNoMarker(self):
        """
        A marker deleted after the service checked it is unknown, as it
        would have been a moment before, not a key to start a page from
        (a deleted image's status and update time changed): unless the
        list shows deleted images.
        """
        for n in range(1, 4):
            await self.make(n)
        await self.registry.delete(uid(2))
        for key in ("status", "updated_at", "created_at"):
            with self.assertRaises(NotFound):
                await self.registry.list(ListQuery(marker=uid(2), sort_key=key))
        since = datetime.datetime(2000, 1, 1)
        await self.registry.list(ListQuery(marker=uid(2), changes_since=since))

    @async_test
    async def test_errorsCarryNoParameters(self):
        """
        A failed statement's parameters, which may hold a location's
        credentials, are not in its error's text, which is logged.
        """
        from glancetx.registry.schema import images
        with self.assertRaises((RegistryError, Unreachable)) as e:
            await self.registry._run(lambda c: c.execute(images.insert(), {
                "id": uid(1), "location": "swift://user:SECRET@h/c/o"}))
        self.assertNotIn("SECRET", repr(e.exception.args))
        # Nor is the original shown beside it in a traceback.
        self.assertTrue(e.exception.__suppress_context__)
        self.assertIsNone(e.exception.__cause__)

    @async_test
    async def test_purgeProperties(self):
        await self.make(1, properties={"a": "1", "b": "2"})
        await self.registry.update(uid(1), {}, {"b": "3", "c": "4"}, purgeProperties=True)
        self.assertEqual(dict((await self.registry.get(uid(1))).properties), {"b": "3", "c": "4"})
        await self.registry.update(uid(1), {}, {"d": "5"}, purgeProperties=False)
        self.assertEqual(dict((await self.registry.get(uid(1))).properties),
                         {"b": "3", "c": "4", "d": "5"})

    @async_test
    async def test_softDelete(self):
        await self.make(1, properties={"a": "1"})
        deleted, location = await self.registry.delete(uid(1))
        self.assertIsNone(location)
        self.assertTrue(deleted.deleted)
        self.assertIsNotNone(deleted.deleted_at)
        self.assertEqual(deleted.status, "deleted")
        with self.assertRaises(NotFound):
            await self.registry.get(uid(1))
        again = await self.registry.get(uid(1), includeDeleted=True)
        self.assertTrue(again.deleted)
        self.assertEqual(await self.registry.list(ListQuery()), [])

    @async_test
    async def test_filters(self):
        await self.make(1, disk_format="raw", container_format="bare", size=10, min_ram=1,
                        properties={"os": "linux"})
        await self.make(2, disk_format="qcow2", container_format="bare", size=20,
                        protected=True, properties={"os": "bsd"})
        await self.make(3, disk_format="raw", container_format="ovf", size=30, status="queued")

        async def ids(**kw):
            return sorted(i.id for i in await self.registry.list(ListQuery(**kw)))

        self.assertEqual(await ids(filters={"disk_format": "raw"}), [uid(1), uid(3)])
        self.assertEqual(await ids(filters={"container_format": "bare"}), [uid(1), uid(2)])
        self.assertEqual(await ids(filters={"status": "queued"}), [uid(3)])
        self.assertEqual(await ids(filters={"size_min": 15}), [uid(2), uid(3)])
        self.assertEqual(await ids(filters={"size_max": 20}), [uid(1), uid(2)])
        self.assertEqual(await ids(filters={"min_ram": 1}), [uid(1)])
        self.assertEqual(await ids(filters={"protected": True}), [uid(2)])
        self.assertEqual(await ids(filters={"name": "img2"}), [uid(2)])
        self.assertEqual(await ids(properties={"os": "linux"}), [uid(1)])
        self.assertEqual(await ids(properties={"os": "linux", "x": "y"}), [])
        # The same shape with other values: one statement, values bound anew.
        self.assertEqual(await ids(filters={"disk_format": "qcow2"}), [uid(2)])
        self.assertEqual(await ids(properties={"os": "bsd"}), [uid(2)])

    @async_test
    async def test_filtersOnKeysOfImagesWithout(self):
        """
        The size and format filters compare the sort keys, which give an
        image with no size -1 and one with no format '' (migration 0006):
        such an image matches no size range and no format, as when they
        compared the columns.
        """
        await self.make(1, size=None, disk_format=None, container_format=None,
                        status="queued")
        await self.make(2, size=0, disk_format="raw", container_format="bare")
        await self.make(3, size=5, disk_format="", container_format="")

        async def ids(**filters):
            return sorted(i.id for i in await self.registry.list(ListQuery(filters=filters)))

        self.assertEqual(await ids(size_max=0), [uid(2)])
        self.assertEqual(await ids(size_min=0), [uid(2), uid(3)])
        self.assertEqual(await ids(size_min=-1), [uid(2), uid(3)])
        self.assertEqual(await ids(size_min=1, size_max=5), [uid(3)])
        self.assertEqual(await ids(disk_format=""), [uid(3)])
        self.assertEqual(await ids(container_format=""), [uid(3)])
        self.assertEqual(await ids(disk_format="raw"), [uid(2)])

    @async_test
    async def test_propertyFilterComparesTheWholeValue(self):
        """
        The property filter finds images through the first 64 characters
        of the value (migration 0006), counted as the database counts
        them, and the whole value decides.
        """
        head = "😀é" * 32
        await self.make(1, properties={"note": head + "one"})
        await self.make(2, properties={"note": head + "two"})
        await self.make(3, properties={"note": head})
        # Longer than any index entry, whole.
        await self.make(4, properties={"note": "x" * 70000})

        async def ids(value):
            return sorted(i.id for i in await self.registry.list(
                ListQuery(properties={"note": value})))

        self.assertEqual(await ids(head + "one"), [uid(1)])
        self.assertEqual(await ids(head + "two"), [uid(2)])
        self.assertEqual(await ids(head), [uid(3)])
        self.assertEqual(await ids(head[:-1]), [])
        self.assertEqual(await ids("x" * 70000), [uid(4)])

    @async_test
    async def test_commonPropertyValuesWalkTheSortOrderOnMySQL(self):
        """
        On MySQL and MariaDB, a list filtered on a property value many
        images have walks the sort key's index (MariaDB would start from
        the property, and sort a tenth of the catalogue); one few have,
        or a list with another filter too, is left to the optimizer.
        """
        from glancetx.registry import registry as registryModule
        from glancetx.registry.registry import _ListShape, _walkIfCommon
        self.patch(registryModule, "COMMON_PROPERTY", 3)
        for n in range(1, 4):
            await self.make(n, properties={"os": "linux"})
        await self.make(4, properties={"os": "bsd"})

        async def walks(**kw):
            query = ListQuery(**kw)
            shape = _ListShape.of(query)
            return (await self.registry._run(
                lambda c: _walkIfCommon(c, shape, shape.params(query)))).walk

        mysql = self.url.startswith("mysql")
        self.assertEqual(await walks(properties={"os": "linux"}), mysql)
        self.assertFalse(await walks(properties={"os": "bsd"}))
        self.assertFalse(await walks(properties={"os": "linux", "arch": "x"}))
        self.assertFalse(await walks(properties={"os": "linux"}, filters={"name": "img1"}))
        self.assertFalse(await walks())
        for key in ("created_at", "name"):
            page = await self.registry.list(ListQuery(properties={"os": "linux"}, sort_key=key,
                                                      sort_dir="asc", limit=2))
            self.assertEqual([i.id for i in page], [uid(1), uid(2)])

    @async_test
    async def test_createsCompileOnce(self):
        """
        Creating images reuses one compiled INSERT per set of columns.
        """
        await self.make(1, properties={"os": "linux"})
        before = len(self.registry._compiled)
        for n in range(2, 12):
            await self.make(n, properties={"os": "linux"})
        self.assertEqual(len(self.registry._compiled), before)

    @async_test
    async def test_listsOfOneShapeCompileOnce(self):
        """
        A list statement is built once per shape, so SQLAlchemy's compiled
        cache gains nothing from the same query with other values.
        """
        for n in range(1, 4):
            await self.make(n, properties={"os": "linux"})
        await self.registry.list(ListQuery(filters={"name": "img1"}, marker=uid(3)))
        before = len(self.registry._compiled)
        for n in range(30):
            await self.registry.list(ListQuery(filters={"name": "img%d" % n}, marker=uid(3),
                                               limit=n + 1))
        self.assertEqual(len(self.registry._compiled), before)

    @async_test
    async def test_pagesOfTiesAreStable(self):
        """
        Images sharing a sort value page by id, with no repeats or gaps, in
        both directions, on every sort key.
        """
        for n in range(1, 13):
            await self.make(n, name="same" if n % 2 else "other", size=(n % 3) or None,
                            disk_format=None if n % 4 == 0 else "raw")
        for key in ("name", "size", "disk_format", "created_at", "id", "status",
                    "container_format", "updated_at"):
            for direction in ("asc", "desc"):
                seen, marker = [], None
                while True:
                    page = await self.registry.list(ListQuery(
                        limit=5, marker=marker, sort_key=key, sort_dir=direction))
                    if not page:
                        break
                    seen.extend(i.id for i in page)
                    marker = page[-1].id
                self.assertEqual(sorted(seen), [uid(n) for n in range(1, 13)],
                                 "%s %s" % (key, direction))
                self.assertEqual(len(seen), len(set(seen)))

    @async_test
    async def test_sortOrder(self):
        await self.make(1, size=300)
        await self.make(2, size=100)
        await self.make(3, size=200)
        page = await self.registry.list(ListQuery(sort_key="size", sort_dir="asc"))
        self.assertEqual([i.id for i in page], [uid(2), uid(3), uid(1)])
        page = await self.registry.list(ListQuery(sort_key="size", sort_dir="desc", limit=2))
        self.assertEqual([i.id for i in page], [uid(1), uid(3)])

    @async_test
    async def test_unknownMarker(self):
        with self.assertRaises(NotFound):
            await self.registry.list(ListQuery(marker=uid(42)))

    @async_test
    async def test_visibility(self):
        await self.make(1, owner="t1")
        await self.make(2, owner="t2")
        await self.make(3, owner="t2", is_public=True)
        await self.make(4, owner="t3")
        await self.registry.addMember(uid(4), "t1", False, 10)

        async def ids(tenant):
            return sorted(i.id for i in await self.registry.list(
                ListQuery(restrict_to_visible=True, visible_to=tenant)))

        self.assertEqual(await ids("t1"), [uid(1), uid(3), uid(4)])
        self.assertEqual(await ids("t2"), [uid(2), uid(3)])
        self.assertEqual(await ids(None), [uid(3)])
        self.assertTrue(await self.registry.isVisible(uid(4), "t1"))
        self.assertFalse(await self.registry.isVisible(uid(2), "t1"))
        # A marker the caller cannot see is unknown to it.
        with self.assertRaises(NotFound):
            await self.registry.list(ListQuery(restrict_to_visible=True, visible_to="t1",
                                               marker=uid(2)))

    @async_test
    async def test_textComparedExactly(self):
        """
        Tenants, members, names and properties are compared byte for byte
        on every database.  MariaDB's default collation ignores case,
        accents and trailing spaces, so there tenant C{ALICE} (or C{alicé})
        read C{alice}'s private images, and C{Bob} and C{bob} as members of
        one image were a 500.
        """
        await self.make(1, owner="alice", name="CaseName", properties={"distro": "Ubuntu"})
        await self.make(2, owner="carol")
        await self.registry.addMember(uid(2), "bob", False, 10)

        async def ids(tenant):
            return sorted(i.id for i in await self.registry.list(
                ListQuery(restrict_to_visible=True, visible_to=tenant)))

        self.assertEqual(await ids("alice"), [uid(1)])
        for other in ("ALICE", "alicé", "alice "):
            self.assertEqual(await ids(other), [], other)
            self.assertFalse(await self.registry.isVisible(uid(1), other), other)
        self.assertEqual(await ids("BOB"), [])
        self.assertEqual(await self.registry.sharedWith("BOB"), [])
        with self.assertRaises(NotFound):
            await self.registry.deleteMember(uid(2), "BOB")
        await self.registry.addMember(uid(2), "Bob", False, 10)
        await self.registry.addMember(uid(2), "bob ", False, 10)
        self.assertEqual(sorted(m.member for m in await self.registry.members(uid(2))),
                         ["Bob", "bob", "bob "])
        await self.registry.replaceMembers(uid(2), {"cafe": False, "café": False}, 10)
        self.assertEqual(sorted(m.member for m in await self.registry.members(uid(2))),
                         ["cafe", "café"])

        async def listed(**kw):
            return [i.id for i in await self.registry.list(ListQuery(**kw))]

        self.assertEqual(await listed(filters={"name": "CaseName"}), [uid(1)])
        self.assertEqual(await listed(filters={"name": "casename"}), [])
        self.assertEqual(await listed(properties={"distro": "UBUNTU"}), [])
        self.assertEqual(await listed(properties={"distro": "Ubuntu"}), [uid(1)])
        # Text outside Latin-1, whatever the database's own default.
        await self.make(3, name="Ωmega 😀", properties={"note": "😀"})
        self.assertEqual((await self.registry.get(uid(3))).name, "Ωmega 😀")

    @async_test
    async def test_changesSinceIncludesDeleted(self):
        await self.make(1)
        await self.make(2)
        before = datetime.datetime.utcnow() - datetime.timedelta(seconds=1)
        await self.registry.delete(uid(2))
        got = await self.registry.list(ListQuery(changes_since=before))
        self.assertEqual(sorted(i.id for i in got), [uid(1), uid(2)])
        future = datetime.datetime.utcnow() + datetime.timedelta(hours=1)
        self.assertEqual(await self.registry.list(ListQuery(changes_since=future)), [])

    @async_test
    async def test_listIsOneSnapshot(self):
        """
        A page and its images' properties are read in one snapshot: an
        update committed between the two reads showed an image with the
        name of one update and the properties of another.
        """
        import sqlalchemy
        from glancetx.registry import registry as module
        from glancetx.registry.schema import image_properties
        await self.make(1, name="v1", properties={"tag": "v1"})
        real = module._propertiesFor
        engine = sqlalchemy.create_engine(self.url)
        self.addCleanup(engine.dispose)

        def updatedMeanwhile(sqlconn, ids):
            with engine.begin() as other:
                other.execute(images.update().where(images.c.id == uid(1)).values(name="v2"))
                other.execute(image_properties.update().where(
                    image_properties.c.image_id == uid(1)).values(value="v2"))
            return real(sqlconn, ids)

        self.patch(module, "_propertiesFor", updatedMeanwhile)
        [image] = await self.registry.list(ListQuery())
        self.assertEqual((image.name, image.properties), ("v1", {"tag": "v1"}))
        self.patch(module, "_propertiesFor", real)
        [image] = await self.registry.list(ListQuery())
        self.assertEqual((image.name, image.properties), ("v2", {"tag": "v2"}))

    @async_test
    async def test_lookupIsExact(self):
        """
        An id finds its own image only: MySQL's collations took "ID",
        "id " and an accented id for "id".
        """
        own = "abcdef00-0000-0000-0000-000000000001"
        await self.make(1, id=own)
        for other in (own.upper(), own + " ", "\u00e1" + own[1:]):
            with self.assertRaises(NotFound):
                await self.registry.get(other)
        self.assertEqual((await self.registry.get(own)).id, own)

    @async_test
    async def test_membersOfADeletedImage(self):
        """
        A member change that waited for the image's lock while the image
        was deleted finds it gone: the member rows outlived the image, and
        a deleted private image showed in its new member's lists.
        """
        await self.make(1)
        await self.registry.delete(uid(1))
        with self.assertRaises(NotFound):
            await self.registry.addMember(uid(1), "t2", None, 10)
        with self.assertRaises(NotFound):
            await self.registry.replaceMembers(uid(1), {"t2": False}, 10)
        self.assertEqual(await self.registry.sharedWith("t2"), [])

    @async_test
    async def test_sharerCheckedUnderTheLock(self):
        """
        A member adding another by its C{can_share} still has it when the
        addition is made, or nothing is added.
        """
        await self.make(1)
        await self.registry.addMember(uid(1), "bob", True, 10)
        await self.registry.addMember(uid(1), "carol", None, 10, sharer="bob")
        await self.registry.addMember(uid(1), "bob", False, 10)
        with self.assertRaises(MembersRefused) as caught:
            await self.registry.addMember(uid(1), "dave", None, 10, sharer="bob")
        self.assertEqual(caught.exception.args, ("share",))
        await self.registry.deleteMember(uid(1), "bob")
        with self.assertRaises(MembersRefused):
            await self.registry.addMember(uid(1), "dave", None, 10, sharer="bob")
        self.assertEqual([m.member for m in await self.registry.members(uid(1))], ["carol"])

    @async_test
    async def test_replaceMembersRefusedUnderTheLock(self):
        """
        A replacement the caller may not make changes nothing: one that
        would add a member without C{mayAdd}, or drop one without
        C{mayRemove}; the same list, or can_share changed, needs neither.
        """
        await self.make(1)
        await self.registry.replaceMembers(uid(1), {"t1": False}, 10)
        for members, kwargs, why in (({"t1": False, "t2": False}, {"mayAdd": False}, "add"),
                                     ({}, {"mayRemove": False}, "remove"),
                                     ({"t2": False}, {"mayRemove": False}, "remove"),
                                     ({"t2": False}, {"mayAdd": False}, "add")):
            with self.assertRaises(MembersRefused) as caught:
                await self.registry.replaceMembers(uid(1), members, 10, **kwargs)
            self.assertEqual(caught.exception.args, (why,))
        self.assertEqual([(m.member, m.can_share) for m in await self.registry.members(uid(1))],
                         [("t1", False)])
        await self.registry.replaceMembers(uid(1), {"t1": True}, 10, mayAdd=False,
                                           mayRemove=False)
        self.assertTrue((await self.registry.member(uid(1), "t1")).can_share)

    @async_test
    async def test_members(self):
        await self.make(1)
        await self.registry.addMember(uid(1), "t2", None, 3)
        await self.registry.addMember(uid(1), "t3", True, 3)
        self.assertEqual([(m.member, m.can_share) for m in await self.registry.members(uid(1))],
                         [("t2", False), ("t3", True)])
        await self.registry.addMember(uid(1), "t2", True, 3)
        self.assertTrue((await self.registry.member(uid(1), "t2")).can_share)
        await self.registry.addMember(uid(1), "t4", False, 3)
        with self.assertRaises(QuotaExceeded):
            await self.registry.addMember(uid(1), "t5", False, 3)
        await self.registry.replaceMembers(uid(1), {"t9": True}, 3)
        self.assertEqual([m.member for m in await self.registry.members(uid(1))], ["t9"])
        with self.assertRaises(QuotaExceeded):
            await self.registry.replaceMembers(uid(1), {"a": 0, "b": 0, "c": 0, "d": 0}, 3)
        self.assertEqual([m.image_id for m in await self.registry.sharedWith("t9")], [uid(1)])
        await self.registry.deleteMember(uid(1), "t9")
        with self.assertRaises(NotFound):
            await self.registry.deleteMember(uid(1), "t9")
        self.assertEqual(await self.registry.sharedWith("t9"), [])

    @async_test
    async def test_concurrentSavingOnlyOneWins(self):
        await self.make(1, status="queued")
        from twisted.internet.defer import DeferredList
        results = await DeferredList([
            self.registry.update(uid(1), {"status": "saving"}, expectStatus=["queued"])
            for _ in range(4)], consumeErrors=True)
        self.assertEqual(sum(1 for ok, _ in results if ok), 1)


    @async_test
    async def test_concurrentWritesToOneImage(self):
        """
        Writers racing on one image's members and properties (requests to
        one server, or to several sharing the database) all go through, one
        after another: none meets a duplicate row or a deadlock.
        """
        import random

        from twisted.internet.defer import DeferredList
        await self.make(1)
        r = random.Random(1)

        def someMembers():
            return {"t%d" % r.randrange(6): r.random() < 0.5 for _ in range(3)}

        calls = []
        for i in range(80):
            op = i % 4
            if op == 0:
                calls.append(self.registry.replaceMembers(uid(1), someMembers(), 100))
            elif op == 1:
                calls.append(self.registry.addMember(uid(1), "t%d" % r.randrange(6), None, 100))
            elif op == 2:
                calls.append(self.registry.deleteMember(uid(1), "t%d" % r.randrange(6)))
            else:
                calls.append(self.registry.update(
                    uid(1), {"min_ram": i}, properties={"k%d" % r.randrange(6): "v%d" % i},
                    purgeProperties=r.random() < 0.5))
        results = await DeferredList(calls, consumeErrors=True)
        failures = [f.getErrorMessage() for ok, f in results
                    if not ok and not f.check(NotFound)]
        self.assertEqual(failures, [])

    @async_test
    async def test_readsDoNotWaitBehindHeldWriters(self):
        """
        Another process holds what writes to an image wait for (its row's
        lock, or SQLite's one writer), and more writes than there are
        pooled connections wait on it: reads still answer at once.  They
        once queued for the connections the waiting writes held, so a lock
        held elsewhere for 30 s made every HEAD and list here wait 30 s.
        """
        from twisted.internet.defer import gatherResults
        await self.make(1)
        release = dbs.holdWrites(self.url, uid(1))
        writes = []
        try:
            self.registry.timeout = 10.0
            writes = [self.registry.update(uid(1), {"min_ram": n}) for n in range(8)]
            # The writes have taken their connections, and wait.
            await deferLater(reactor, 0.5, lambda: None)
            self.assertEqual([w.called for w in writes], [False] * 8)
            started = reactor.seconds()
            self.assertEqual((await self.registry.get(uid(1))).min_ram, 0)
            self.assertEqual([i.id for i in await self.registry.list(ListQuery())], [uid(1)])
            self.assertEqual(await self.registry.getLocation(uid(1)), None)
            self.assertLess(reactor.seconds() - started, 2.0)
        finally:
            release()
        await gatherResults(writes)
        self.assertIn((await self.registry.get(uid(1))).min_ram, range(8))

    @async_test
    async def test_lockWaitEndsBeforeTheDeadline(self):
        """
        A write waiting on a lock held elsewhere (another process's
        transaction on the row, SQLite's one writer) gives up in the
        database after L{timeouts.LOCK_SECONDS}, before the registry's
        deadline: the database rolls it back, so it cannot commit after its
        caller was told it failed, and its connection is lent again.  The
        wait once ran to the deadline, whose connection was then held
        until the database let its thread go, and a few such waits took
        every connection writes have.
        """
        from glancetx.registry import timeouts
        self.patch(timeouts, "LOCK_SECONDS", 1)
        registry = Registry(self.url, reactor)
        self.addCleanup(registry.close)
        registry.timeout = 8.0
        await self.make(1)
        release = dbs.holdWrites(self.url, uid(1))
        try:
            for n in range(6):
                started = reactor.seconds()
                with self.assertRaises(Unreachable):
                    await registry.update(uid(1), {"min_ram": n})
                self.assertLess(reactor.seconds() - started, 4.0)
        finally:
            release()
        started = reactor.seconds()
        await registry.update(uid(1), {"min_ram": 9})
        self.assertLess(reactor.seconds() - started, 2.0)
        self.assertEqual((await registry.get(uid(1))).min_ram, 9)


class RowLockTestsMixin:
    """
    For the databases with row locks (SQLite has one writer at a time).
    """

    def skipOnMySQL(self, why: str) -> None:
        """
        Skip where the server is MySQL: MariaDB has limits of its own.
        """
        if self.url.startswith("mysql"):
            import sqlalchemy
            engine = sqlalchemy.create_engine(self.url)
            version = engine.scalar("SELECT VERSION()")
            engine.dispose()
            if "mariadb" not in version.lower():
                raise SkipTest(why)

    @async_test
    async def test_frozenTransactionEnds(self):
        """
        A session that sits inside a transaction with no statement running
        (its process froze between UPDATE and COMMIT) is ended by the
        database (PostgreSQL, MariaDB; MySQL has no such limit) after
        L{timeouts.IDLE_IN_TRANSACTION_SECONDS}, releasing
        its locks: another process's write to the row then goes ahead.  It
        waited for as long as the process stayed frozen, and the reaper
        passed over that image, run after run.  The frozen work, once it
        wakes, runs again on a new connection.
        """
        import threading
        import time

        from glancetx.registry import timeouts
        self.skipOnMySQL("MySQL has no limit on a session idle in a transaction")
        self.patch(timeouts, "IDLE_IN_TRANSACTION_SECONDS", 1)
        frozen = Registry(self.url, reactor)
        self.addCleanup(frozen.close)
        await self.make(1)
        locked = threading.Event()
        attempts = []

        def freezeMidway(sqlconn):
            attempts.append(1)
            sqlconn.execute(images.update().where(images.c.id == uid(1)).values(min_ram=1))
            if len(attempts) == 1:
                locked.set()
                time.sleep(4.0)
            sqlconn.execute(images.update().where(images.c.id == uid(1)).values(min_disk=1))

        freezing = ensureDeferred(frozen._run(freezeMidway))
        await deferToThread(locked.wait, 10)
        started = reactor.seconds()
        await self.registry.update(uid(1), {"min_ram": 7})
        self.assertLess(reactor.seconds() - started, 3.5)
        await freezing
        self.assertEqual(len(attempts), 2)
        image = await self.registry.get(uid(1))
        self.assertEqual((image.min_ram, image.min_disk), (1, 1))

    @async_test
    async def test_longStatementIsEndedByTheDatabase(self):
        """
        A statement that runs past L{timeouts.STATEMENT_SECONDS} is ended by
        the database (PostgreSQL, MariaDB): past the registry's deadline it
        ran on, holding its connection, after its caller had its 503.  The
        work is L{Unreachable}, and the connection serves the next.
        """
        from glancetx.registry import timeouts
        sleep = "SELECT pg_sleep(5)" if self.url.startswith("postgresql") else "SELECT SLEEP(5)"
        self.skipOnMySQL("MySQL's statement limit covers only SELECTs")
        self.patch(timeouts, "STATEMENT_SECONDS", 1)
        limited = Registry(self.url, reactor)
        self.addCleanup(limited.close)
        started = reactor.seconds()
        with self.assertRaises(Unreachable):
            await limited._run(lambda sqlconn: sqlconn.execute(sleep).fetchall(),
                               transaction=False)
        self.assertLess(reactor.seconds() - started, 3.5)
        self.assertEqual(await limited._run(
            lambda sqlconn: sqlconn.execute("SELECT 1").scalar(), transaction=False), 1)

    @async_test
    async def test_lostConnectionsAreReplaced(self):
        """
        The database ended every connection (a restart, idle connections
        ended): reads and writes each run again on a new connection, and
        none fails.
        """
        from twisted.internet.defer import gatherResults
        await self.make(1)
        # Every pooled connection open, then ended by the server.
        await gatherResults([self.registry.list(ListQuery()) for _ in range(8)])
        self.assertGreater(self.endConnections(), 1)
        for n in range(2, 6):
            await self.make(n)
            await self.registry.update(uid(n), {"min_ram": n}, {"k": "v"})
        self.assertEqual(len(await self.registry.list(ListQuery(limit=100))), 5)

    @async_test
    async def test_readsLeaveNoTransactionOpen(self):
        """
        A read by id leaves its pooled connection outside any transaction.
        Left open, the transaction kept its read locks until that
        connection next wrote, and a migration's ALTER TABLE waited for
        them, with every later query queued behind the ALTER.
        """
        from twisted.internet.threads import deferToThread
        await self.make(1)
        self.assertEqual((await self.registry.get(uid(1))).name, "img1")
        self.assertEqual(await self.registry.getLocation(uid(1)), None)
        await deferToThread(dbs.alterWithin, self.url, 3)

    @async_test
    async def test_silentDatabaseIsUnreachableInTime(self):
        """
        A database that takes the connection's bytes and answers nothing
        (a hung server, a firewall that drops its traffic): work fails as
        L{Unreachable} once the registry's timeout has passed, and once
        the database answers again new work runs on new connections.
        """
        import re

        from tests.tcpproxy import TCPProxy
        port = int(re.search(r"127\.0\.0\.1:(\d+)", self.url).group(1))
        proxy = TCPProxy(reactor, "127.0.0.1", port)
        await proxy.start()
        self.addCleanup(proxy.stop)
        registry = Registry(self.url.replace("127.0.0.1:%d" % (port,), proxy.address), reactor)
        self.addCleanup(registry.close)
        registry.timeout = 1.0
        await self.make(1)
        self.assertEqual((await registry.get(uid(1))).name, "img1")
        proxy.blackHole()
        started = reactor.seconds()
        with self.assertRaises(Unreachable):
            await registry.get(uid(1))
        self.assertLess(reactor.seconds() - started, 3.0)
        await proxy.restore()
        registry.timeout = 30
        self.assertEqual([i.id for i in await registry.list(ListQuery())], [uid(1)])

    @async_test
    async def test_unreachableDatabase(self):
        registry = Registry(self.deadURL, reactor)
        self.addCleanup(registry.close)
        with self.assertRaises(Unreachable):
            await registry.list(ListQuery())

    @async_test
    async def test_oneLockedImageHoldsUpNoOtherReaping(self):
        """
        An abandoned upload whose image's row another transaction holds
        (its process froze mid-write) is passed over, and the others are
        reaped: they were all one transaction, and that one row held up
        every kill, run after run.
        """
        from glancetx.registry import timeouts
        self.patch(timeouts, "LOCK_SECONDS", 1)
        registry = Registry(self.url, reactor)
        self.addCleanup(registry.close)
        t0 = datetime.datetime(2030, 1, 1)
        for n in (1, 2, 3):
            await self.make(n, status="queued")
            await registry.update(uid(n), {"status": "saving"}, expectStatus=["queued"],
                                  lease=UploadLease(uid(n), "dead", t0 + datetime.timedelta(
                                      seconds=n), "file"))
        release = dbs.holdWrites(self.url, uid(1))
        try:
            later = t0 + datetime.timedelta(seconds=60)
            killed = await registry.killAbandonedUploads(later)
            self.assertEqual(sorted(lease.image_id for lease, _ in killed), [uid(2), uid(3)])
        finally:
            release()
        self.assertEqual([(await registry.get(uid(n))).status for n in (1, 2, 3)],
                         ["saving", "killed", "killed"])
        killed = await registry.killAbandonedUploads(later)
        self.assertEqual([lease.image_id for lease, _ in killed], [uid(1)])

    @async_test
    async def test_deadlockVictimRunsAgain(self):
        """
        Two transactions that lock two images in opposite orders deadlock;
        the database rolls one back, and the registry runs it again after
        a pause at random (at once, it could take its first lock back
        before the other did, and deadlock again), so both succeed.
        """
        import threading

        from twisted.internet.defer import gatherResults

        from glancetx.registry import registry as registryModule
        from glancetx.registry.registry import RETRY_PAUSE, _lockImage
        pauses = []

        class Random:
            @staticmethod
            def uniform(low, high):
                pauses.append((low, high))
                return high
        self.patch(registryModule, "random", Random)
        await self.make(1)
        await self.make(2)
        holding = [threading.Event(), threading.Event()]
        runs = []

        def locker(first, second, mine, theirs):
            def work(sqlconn):
                runs.append(first)
                _lockImage(sqlconn, uid(first))
                holding[mine].set()
                holding[theirs].wait(10)
                _lockImage(sqlconn, uid(second))
                return first
            return work

        done = await gatherResults([
            ensureDeferred(self.registry._run(locker(1, 2, 0, 1))),
            ensureDeferred(self.registry._run(locker(2, 1, 1, 0)))])
        self.assertEqual(sorted(done), [1, 2])
        self.assertEqual(len(runs), 3, runs)
        self.assertEqual(pauses, [(0, RETRY_PAUSE)])


class SQLiteRegistryTests(RegistryTestsMixin, TestCase):
    def makeURL(self):
        return dbs.sqliteURL(self)


class PostgreSQLRegistryTests(RowLockTestsMixin, RegistryTestsMixin, TestCase):
    deadURL = "postgresql://postgres@127.0.0.1:1/nothing"

    def makeURL(self):
        self.url = dbs.postgresURL(self)
        return self.url

    def endConnections(self) -> int:
        return dbs.endConnections(self.url)

class MySQLRegistryTests(RowLockTestsMixin, RegistryTestsMixin, TestCase):
    deadURL = "mysql+pymysql://root@127.0.0.1:1/nothing"

    def makeURL(self):
        self.url = dbs.mysqlURL(self)
        return self.url

    def endConnections(self) -> int:
        return dbs.endConnections(self.url)


class AlchimiaPinTests(TestCase):
    def test_runOnConnectionNeedsThisAlchimia(self):
        """
        runOnConnection uses alchimia 0.8.1's connection worker; another
        version must be checked before the pin moves.
        """
        from importlib.metadata import version
        self.assertEqual(version("alchimia"), "0.8.1")


class OptimizeTests(TestCase):
    def test_sqliteStatisticsMakeTheNameIndexWin(self):
        """
        After optimize, a name filter searches the name index instead of
        walking every image in created_at order.
        """
        async def go():
            import sqlite3
            url = dbs.sqliteURL(self)
            migrate.sync(url)
            path = url[len("sqlite:///"):]
            db = sqlite3.connect(path)
            db.executemany(
                "INSERT INTO images (id, name, status, is_public, min_disk, min_ram,"
                " protected, created_at, deleted) VALUES (?, ?, 'active', 1, 0, 0, 0,"
                " '2020-01-01 00:00:00', 0)", [(uid(i), "n%d" % i) for i in range(2000)])
            db.commit()
            plan = lambda: " ".join(str(r) for r in db.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM images WHERE deleted = 0 AND name = 'n5'"
                " ORDER BY created_at DESC, id DESC LIMIT 25"))
            self.assertNotIn("ix_images_name", plan())
            db.close()
            registry = Registry(url, reactor)
            self.addCleanup(registry.close)
            await registry.optimize()
            db = sqlite3.connect(path)
            self.assertIn("ix_images_name", plan())
            db.close()
        return ensureDeferred(go())


class ImageRecordOrderTests(TestCase):
    def test_fieldsInColumnOrder(self):
        """
        Lists build records from rows by position: ImageRecord's fields
        must be IMAGE_FIELDS in order, then properties.
        """
        import attr

        from glancetx.registry.registry import IMAGE_FIELDS, ImageRecord, _LIST_COLUMNS
        names = [a.name for a in attr.fields(ImageRecord)]
        self.assertEqual(names, list(IMAGE_FIELDS) + ["properties"])
        self.assertEqual([c.name for c in _LIST_COLUMNS], list(IMAGE_FIELDS))


class ErrorCodeTests(TestCase):
    def test_whatIsLogged(self):
        """
        A statement's error is logged by its code only (its text may quote
        a location); one that has no code (a database that is gone, a
        connection refused) by its driver's first line, which said why:
        the log said only "OperationalError".
        """
        import sqlite3

        from sqlalchemy.exc import DBAPIError

        from glancetx.registry.registry import _code

        class PGError(Exception):
            pgcode = "23502"

        def wrapped(orig):
            return DBAPIError("UPDATE images SET location=?", {}, orig)

        self.assertEqual(_code(wrapped(PGError('Failing row contains (http://u:SEKRIT@h)'))),
                         "23502")
        self.assertEqual(_code(wrapped(Exception(1205, "Lock wait timeout exceeded"))), 1205)
        self.assertEqual(_code(wrapped(sqlite3.OperationalError("database is locked"))),
                         "OperationalError: database is locked")
        gone = Exception('connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
                         'database "glance" does not exist\n')
        self.assertEqual(_code(wrapped(gone)),
                         'Exception: connection to server at "127.0.0.1", port 5432 failed:'
                         ' FATAL:  database "glance" does not exist')
