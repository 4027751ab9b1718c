import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from glancetx.budget import SharedBudget
from glancetx.store import filesystem
from glancetx.store.filesystem import FilesystemStore
from glancetx.store.interface import BadLocation, UploadFailed
from tests.bodies import BytesBody
from tests.store_contract import StoreContractMixin


class FilesystemStoreTests(StoreContractMixin, TestCase):
    def makeStore(self, budget=None):
        self.dir = self.mktemp()
        pool = ThreadPool(1, 2, name="test-disk")
        pool.start()
        self.addCleanup(pool.stop)
        store = FilesystemStore(self.dir, reactor, pool, budget or SharedBudget(total=0))
        store.prepare()
        return store

    def leftovers(self):
        return [n for n in os.listdir(self.dir) if ".part-" in n]

    def test_locationOutsideDirectoryRefused(self):
        store = self.makeStore()
        self.assertRaises(BadLocation, store._pathFor, "file:///etc/passwd")
        self.assertRaises(BadLocation, store._pathFor, "file://" + self.dir + "/../x")

    def test_prepareRemovesStaleParts(self):
        store = self.makeStore()
        with open(os.path.join(self.dir, "abc.part-123"), "w") as f:
            f.write("x")
        store.prepare()
        self.assertEqual(self.leftovers(), [])

    async def _addHolding(self, budget, body):
        """
        Add C{body} and report how many held the budget while it was written.
        """
        store = self.makeStore(budget)
        seen = []
        write = filesystem._writeAll

        def spy(*args):
            seen.append(budget.holders)
            return write(*args)
        self.patch(filesystem, "_writeAll", spy)
        try:
            await store.add(os.urandom(16).hex(), body)
        finally:
            self.assertEqual(budget.holders, 0)
        return seen

    def test_shareHeldWhileWritingOnly(self):
        """
        The writer holds a share of the upload budget while it writes, and
        gives it back when the image is stored, or when the upload fails.
        """
        async def go():
            budget = SharedBudget()
            seen = await self._addHolding(budget, BytesBody(reactor, b"x" * 300000))
            self.assertEqual(set(seen), {1})
            body = BytesBody(reactor, b"x" * 300000, failAfter=200000)
            with self.assertRaises(UploadFailed):
                await self._addHolding(budget, body)
        return ensureDeferred(go())

    def test_pausesAtShare(self):
        """
        The producer is paused once the writer holds its share, not before.
        """
        self.patch(filesystem, "deferToThreadPool", lambda *a: Deferred())
        share = SharedBudget(total=4 * 1024 * 1024).join()
        writer = filesystem._FileWriter(-1, reactor, None, share)
        body = BytesBody(reactor, b"")
        writer.registerProducer(body, True)
        chunk = b"y" * (1024 * 1024)
        writer.write(chunk)  # goes to the disk thread at once
        for _ in range(3):
            writer.write(chunk)
        self.assertEqual(body.pauses, 0)
        writer.write(chunk)
        self.assertEqual(body.pauses, 1)

    def test_batchesAtLeastAMegabyte(self):
        """
        Short writes wait for the share's low mark (a megabyte of a 4 MiB
        share) before a disk job takes them; the short tail goes when the
        writer is drained.
        """
        jobs = []

        def fakeDefer(reactor, pool, f, *args):
            d = Deferred()
            jobs.append((args, d))
            return d
        self.patch(filesystem, "deferToThreadPool", fakeDefer)
        writer = filesystem._FileWriter(-1, reactor, None, SharedBudget(4 << 20).join())
        piece = b"z" * (256 * 1024)
        for _ in range(3):
            writer.write(piece)
        self.assertEqual(jobs, [])
        writer.write(piece)
        [(args, d)] = jobs
        self.assertEqual(args[1], [piece] * 4)
        writer.write(b"tail")
        drained = writer.drain()
        self.assertEqual(len(jobs), 1)  # the tail waits for the job in flight
        jobs.pop()[1].callback(None)
        [(args, d)] = jobs
        self.assertEqual(args[1], [b"tail"])
        self.assertNoResult(drained)
        d.callback(None)
        self.successResultOf(drained)
        self.assertEqual(writer.written, 4 * len(piece) + 4)

    def test_drainFlushesShortBatch(self):
        jobs = []
        self.patch(filesystem, "deferToThreadPool",
                   lambda reactor, pool, f, *args: jobs.append(args) or Deferred())
        writer = filesystem._FileWriter(-1, reactor, None, SharedBudget(4 << 20).join())
        writer.write(b"short")
        self.assertEqual(jobs, [])
        writer.drain()
        self.assertEqual([a[1] for a in jobs], [[b"short"]])
