"""
Reading new images into the page cache after their uploads: the reads
themselves, and the one-at-a-time, bounded queue that runs them.
"""

import os
import threading
from types import SimpleNamespace

from twisted.internet.defer import succeed
from twisted.trial.unittest import TestCase

from glancetx.store import cachewarm
from glancetx.store.cachewarm import CacheWarmer, readThrough
from tests.test_drain import recordJobs


class ReadThroughTests(TestCase):
    def file(self, size: int) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        return path

    def test_readsTheWholeFile(self):
        """
        Every byte is read, in buffer-sized pieces and a short last one.
        """
        path = self.file(10 * 1000 + 7)
        self.assertEqual(readThrough(path, bytearray(1000), threading.Event()), 10007)

    def test_missingFile(self):
        """
        An image deleted before its turn came is nothing to read, not an
        error.
        """
        self.assertEqual(readThrough(self.mktemp(), bytearray(10), threading.Event()), 0)

    def test_stopsWhenAsked(self):
        """
        A stop (the server shutting down) ends the read at the next piece,
        so the thread pool can stop without waiting for a whole image.
        """
        path = self.file(100)
        stop = threading.Event()
        stop.set()
        self.assertEqual(readThrough(path, bytearray(10), stop), 0)

    def test_waitsWhileNotIdle(self):
        """
        While C{idle()} is false (an upload is in flight) nothing is read;
        the read goes on once it is true again.
        """
        path = self.file(25)
        answers = [False, False, True, True, True, True]
        waits = []

        class Stop(threading.Event):
            def wait(self, timeout=None):
                waits.append(timeout)
                return False

        self.assertEqual(readThrough(path, bytearray(10), Stop(), lambda: answers.pop(0)), 25)
        self.assertEqual(waits, [cachewarm.PAUSE_SECONDS] * 2)
        self.assertEqual(answers, [])

    def test_stopWhileWaiting(self):
        """
        A stop ends a read that waits for the uploads to end.
        """
        path = self.file(25)
        stop = threading.Event()

        def idle():
            stop.set()
            return False
        self.assertEqual(readThrough(path, bytearray(10), stop, idle), 0)

    def test_stopsOnceTheFileIsDeleted(self):
        """
        An image deleted while it is being read will never be downloaded:
        the read ends at the next check instead of reading the rest.
        """
        path = self.file(100)
        self.patch(cachewarm, "CHECK_EVERY", 20)
        reads = []
        realReadv = os.readv

        def readv(fd, buffers):
            n = realReadv(fd, buffers)
            reads.append(n)
            if len(reads) == 1:
                os.unlink(path)
            return n

        self.patch(cachewarm.os, "readv", readv)
        self.assertEqual(readThrough(path, bytearray(10), threading.Event()), 20)


class CacheWarmerTests(TestCase):
    def idle(self):
        return True

    def warmer(self, maxWaiting=3):
        """
        A warmer, and its pool's jobs as recorded, each fired by hand.
        """
        pool = SimpleNamespace(jobs=recordJobs(self, cachewarm))
        warmer = CacheWarmer(None, None, idle=self.idle, readSize=16, maxWaiting=maxWaiting)
        return warmer, pool

    def test_oneReadAtATimeInOrder(self):
        """
        However many uploads end together, one image is read at a time (so
        the disk pool keeps its other threads for the uploads), oldest
        first.
        """
        warmer, pool = self.warmer()
        for name in ("a", "b", "c"):
            warmer.warm(name)
        self.assertEqual([args[0] for _, args, _ in pool.jobs], ["a"])
        self.assertIs(pool.jobs[0][0], readThrough)
        self.assertEqual(pool.jobs[0][1][3], self.idle)
        pool.jobs[0][2].callback(5)
        self.assertEqual([args[0] for _, args, _ in pool.jobs], ["a", "b"])
        pool.jobs[1][2].callback(5)
        pool.jobs[2][2].callback(5)
        self.assertEqual([args[0] for _, args, _ in pool.jobs], ["a", "b", "c"])
        self.assertEqual(warmer.waiting, 0)

    def test_boundedQueue(self):
        """
        Past C{maxWaiting} images waiting, a new one is not warmed: warming
        is a courtesy, and its queue must not grow with a burst of uploads.
        """
        warmer, pool = self.warmer(maxWaiting=2)
        for name in ("a", "b", "c", "d", "e"):
            warmer.warm(name)
        self.assertEqual(warmer.waiting, 2)
        for i in range(3):
            pool.jobs[i][2].callback(1)
        self.assertEqual([args[0] for _, args, _ in pool.jobs], ["a", "b", "c"])

    def test_failedReadGoesOn(self):
        """
        A read that fails (it should not: readThrough swallows OSError) is
        logged, and the next image still gets its turn.
        """
        warmer, pool = self.warmer()
        warmer.warm("a")
        warmer.warm("b")
        pool.jobs[0][2].errback(RuntimeError("boom"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual([args[0] for _, args, _ in pool.jobs], ["a", "b"])

    def test_stop(self):
        """
        After a stop, the read under way is told to end, the waiting ones
        are dropped, and nothing new starts.
        """
        warmer, pool = self.warmer()
        warmer.warm("a")
        warmer.warm("b")
        stopFlag = pool.jobs[0][1][2]
        warmer.stop()
        self.assertTrue(stopFlag.is_set())
        pool.jobs[0][2].callback(0)
        warmer.warm("c")
        self.assertEqual(len(pool.jobs), 1)
        self.assertEqual(warmer.waiting, 0)

    def test_sharesOneBuffer(self):
        """
        Every read goes through the same buffer: warming costs no memory
        per image.
        """
        warmer, pool = self.warmer()
        warmer.warm("a")
        pool.jobs[0][2].callback(1)
        warmer.warm("b")
        self.assertIs(pool.jobs[0][1][1], pool.jobs[1][1][1])
        self.assertEqual(len(pool.jobs[0][1][1]), 16)

    def test_defaultRunsOnThePool(self):
        """
        Without a C{run}, jobs go to the given thread pool.
        """
        calls = []
        self.patch(cachewarm, "deferToThreadPool",
                   lambda reactor, pool, f, *a: calls.append((reactor, pool, f, a)) or succeed(0))
        warmer = CacheWarmer("reactor", "pool")
        warmer.warm("a")
        self.assertEqual([(r, p, f, a[0], a[3]()) for r, p, f, a in calls],
                         [("reactor", "pool", readThrough, "a", True)])
