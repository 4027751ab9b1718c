from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from glancetx.registry import batch
from glancetx.registry.batch import ReadBatcher


class Missing(Exception):
    pass


class ReadBatcherTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.trips = []
        self.batcher = ReadBatcher(self.clock, self.trip, (Missing,))

    def trip(self, work):
        """
        The registry's trip to a thread, done at once on a fake connection.
        """
        self.trips.append(work)
        try:
            return succeed(work("conn"))
        except Exception as e:
            d = Deferred()
            d.errback(e)
            return d

    def test_oneTripPerTurn(self):
        """
        Reads submitted in one turn wait for its end, then go in one trip,
        each in order with its own result.
        """
        seen = []

        def read(n):
            return lambda conn: seen.append((n, conn)) or n * 10
        ds = [self.batcher.submit(read(n)) for n in range(3)]
        self.assertEqual(self.trips, [])
        for d in ds:
            self.assertNoResult(d)
        self.clock.advance(0)
        self.assertEqual(len(self.trips), 1)
        self.assertEqual(seen, [(0, "conn"), (1, "conn"), (2, "conn")])
        self.assertEqual([self.successResultOf(d) for d in ds], [0, 10, 20])
        # The next turn's reads make the next trip.
        d = self.batcher.submit(read(7))
        self.clock.advance(0)
        self.assertEqual(len(self.trips), 2)
        self.assertEqual(self.successResultOf(d), 70)

    def test_expectedErrorIsThatReadsAlone(self):
        def missing(conn):
            raise Missing("no such image")
        a = self.batcher.submit(lambda conn: "a")
        b = self.batcher.submit(missing)
        c = self.batcher.submit(lambda conn: "c")
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(a), "a")
        self.failureResultOf(b, Missing)
        self.assertEqual(self.successResultOf(c), "c")

    def test_otherErrorsFailTheBatch(self):
        """
        Any other error may have broken the connection: every read of the
        batch fails with it.
        """
        def broken(conn):
            raise RuntimeError("connection lost")
        a = self.batcher.submit(lambda conn: "a")
        b = self.batcher.submit(broken)
        self.clock.advance(0)
        self.failureResultOf(a, RuntimeError)
        self.failureResultOf(b, RuntimeError)

    def test_fullBatchGoesAtOnce(self):
        self.patch(batch, "MAX_BATCH", 3)
        ds = [self.batcher.submit(lambda conn, n=n: n) for n in range(4)]
        self.assertEqual(len(self.trips), 1)
        self.assertEqual([self.successResultOf(d) for d in ds[:3]], [0, 1, 2])
        self.assertNoResult(ds[3])
        self.clock.advance(0)
        self.assertEqual(len(self.trips), 2)
        self.assertEqual(self.successResultOf(ds[3]), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelledReadIsSkipped(self):
        pending = Deferred()
        batcher = ReadBatcher(self.clock, lambda work: pending.addCallback(
            lambda _: work("conn")), (Missing,))
        a = batcher.submit(lambda conn: "a")
        b = batcher.submit(lambda conn: "b")
        self.clock.advance(0)
        a.cancel()
        self.failureResultOf(a, CancelledError)
        pending.callback(None)
        self.assertEqual(self.successResultOf(b), "b")
