import functools

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from glancetx import drain
from glancetx.budget import SharedBudget
from glancetx.drain import Drain

KiB = 1024
MiB = 1024 * KiB


class FakeReactor:
    """
    callFromThread runs the call at once (the test is both threads).
    """

    def __init__(self):
        self.fromThread = []

    def callFromThread(self, f, *args):
        self.fromThread.append(f)
        f(*args)


def recordJobs(case, module=drain):
    """
    Pool jobs that C{module} hands to C{deferToThreadPool}, recorded as
    (function, args, Deferred), to run by hand with L{runJob}.
    """
    jobs = []

    def fakeDefer(reactor, pool, f, *args, **kwargs):
        d = Deferred()
        jobs.append((functools.partial(f, **kwargs) if kwargs else f, args, d))
        return d
    case.patch(module, "deferToThreadPool", fakeDefer)
    return jobs


def runJob(jobs):
    """
    Run the oldest recorded job in "its thread", then fire its Deferred in
    "the reactor", as the pool would.
    """
    f, args, d = jobs.pop(0)
    try:
        result = f(*args)
    except Exception:
        d.errback(Failure())
    else:
        d.callback(result)


class DrainTests(SynchronousTestCase):
    def setUp(self):
        self.jobs = recordJobs(self)
        self.reactor = FakeReactor()
        self.seen = []
        # high 4 MiB, low 1 MiB
        self.share = SharedBudget(total=4 * MiB).join()
        self.drain = Drain(self.reactor, None, self.seen.append, self.share)

    def test_waitsForTheLowMark(self):
        """
        Below the low mark the consumer is ahead: no job yet.
        """
        self.drain.put(b"a" * (512 * KiB))
        self.assertEqual(self.jobs, [])
        self.drain.put(b"b" * (512 * KiB))
        self.assertEqual(len(self.jobs), 1)
        self.assertEqual(self.drain.backlog, MiB)

    def test_jobTakesWhatArrivesMeanwhile(self):
        """
        Bytes put while a job works go to that job, with no second trip.
        """
        arrivals = [b"c" * MiB, b"d" * MiB]

        def process(items):
            self.seen.append(items)
            if arrivals:
                self.drain.put(arrivals.pop(0))  # the reactor, meanwhile
        self.drain._process = process
        self.drain.put(b"x" * MiB)
        self.assertEqual(len(self.jobs), 1)
        runJob(self.jobs)
        self.assertEqual(self.seen, [[b"x" * MiB], [b"c" * MiB], [b"d" * MiB]])
        self.assertEqual(self.jobs, [])
        self.assertEqual(self.drain.backlog, 0)

    def test_batches(self):
        """
        A job hands over about a batch at a time, in order.
        """
        piece = b"p" * (256 * KiB)
        for _ in range(6):
            self.drain.put(piece)
        runJob(self.jobs)
        self.assertEqual([len(items) for items in self.seen], [4, 2])

    def test_jobsTakeTurns(self):
        """
        A job stops after JOB_LIMIT, and the next one takes the rest.
        """
        self.patch(drain, "JOB_LIMIT", 2 * MiB)
        for _ in range(3):
            self.drain.put(b"q" * MiB)
        runJob(self.jobs)
        self.assertEqual(len(self.seen), 2)
        self.assertEqual(len(self.jobs), 1)
        runJob(self.jobs)
        self.assertEqual(len(self.seen), 3)
        self.assertEqual(self.jobs, [])

    def test_flushTakesTheTail(self):
        self.drain.put(b"short")
        flushed = self.drain.flush()
        self.assertNoResult(flushed)
        runJob(self.jobs)
        self.successResultOf(flushed)
        self.assertEqual(self.seen, [[b"short"]])
        self.successResultOf(self.drain.flush())  # idle: at once
        self.assertEqual(self.jobs, [])

    def test_flushWaitsForTheRunningJob(self):
        self.drain.put(b"r" * MiB)
        flushed = self.drain.flush()
        self.assertEqual(len(self.jobs), 1)
        self.assertNoResult(flushed)
        runJob(self.jobs)
        self.successResultOf(flushed)

    def test_toldWhenBackAtLowMark(self):
        """
        Once the backlog passed the high mark, the reactor is told (from the
        thread) as soon as it is back at the low mark, not per batch.
        """
        drained = []
        self.drain.onDrained = lambda: drained.append(self.drain.backlog)
        for _ in range(5):
            self.drain.put(b"s" * MiB)  # 5 MiB: past the 4 MiB high mark
        runJob(self.jobs)
        # told at 1 MiB left, then once more when the job ended
        self.assertEqual(drained, [MiB, 0])
        self.assertEqual(len(self.reactor.fromThread), 1)

    def test_notToldWhenNeverPastHigh(self):
        drained = []
        self.drain.onDrained = lambda: drained.append(self.drain.backlog)
        for _ in range(3):
            self.drain.put(b"s" * MiB)
        runJob(self.jobs)
        self.assertEqual(self.reactor.fromThread, [])
        self.assertEqual(drained, [0])  # the job's end only

    def test_failure(self):
        """
        What the processing raised fails the flush and is reported; later
        bytes are dropped.
        """
        failures = []
        self.drain.onFailed = failures.append

        def broken(items):
            raise OSError(28, "No space left on device")
        self.drain._process = broken
        self.drain.put(b"t" * MiB)
        runJob(self.jobs)
        self.assertEqual(len(failures), 1)
        self.failureResultOf(self.drain.flush(), OSError)
        self.drain.put(b"u" * MiB)
        self.assertEqual(self.jobs, [])
        self.assertEqual(self.drain.backlog, 0)

    def test_failureFailsWaiters(self):
        self.drain._process = lambda items: 1 / 0
        self.drain.put(b"v")
        flushed = self.drain.flush()
        runJob(self.jobs)
        self.failureResultOf(flushed, ZeroDivisionError)


class IdleDrainCase(SynchronousTestCase):
    """
    A drain whose jobs run by hand and record, in C{events}, the size of
    each batch they process and each call of their idle work.
    """

    def setUp(self):
        self.jobs = recordJobs(self)
        self.events = []
        share = SharedBudget(total=4 * MiB).join()
        self.drain = Drain(FakeReactor(), None, lambda items: self.events.append(len(items)),
                           share, idle=lambda: self.events.append("idle"))


class IdleTests(IdleDrainCase):
    """
    A stage's idle work, done in the job's thread when its queue runs dry.
    """

    def test_onceWhenDry(self):
        """
        A job calls idle once when nothing is left, then ends.
        """
        self.drain.put(b"a" * MiB)
        runJob(self.jobs)
        self.assertEqual(self.events, [1, "idle"])
        self.assertEqual(self.jobs, [])
        self.successResultOf(self.drain.flush())

    def test_takesWhatArrivesWhileIdle(self):
        """
        Bytes put while idle runs are taken by the same job, and the job is
        idle again once they are processed.
        """
        def idle():
            self.events.append("idle")
            if self.events.count("idle") == 1:
                self.drain.put(b"b" * MiB)  # the reactor, meanwhile
        self.drain._idle = idle
        self.drain.put(b"a" * MiB)
        runJob(self.jobs)
        self.assertEqual(self.events, [1, "idle", 1, "idle"])
        self.assertEqual(self.jobs, [])
        self.assertEqual(self.drain.backlog, 0)

    def test_notWhenTheJobEndsItsTurn(self):
        """
        A job that stops after JOB_LIMIT with the queue empty is not idle:
        the stage was busy all along.
        """
        self.patch(drain, "JOB_LIMIT", MiB)
        self.drain.put(b"a" * MiB)
        runJob(self.jobs)
        self.assertEqual(self.events, [1])

    def test_idleFailureFailsTheDrain(self):
        failures = []
        self.drain.onFailed = failures.append
        self.drain._idle = lambda: 1 / 0
        self.drain.put(b"a" * MiB)
        flushed = self.drain.flush()
        runJob(self.jobs)
        self.failureResultOf(flushed, ZeroDivisionError)
        self.assertEqual(len(failures), 1)


class AbandonTests(IdleDrainCase):

    def test_waitsForTheRunningJob(self):
        """
        Abandoning drops what is queued, but fires only once the job that
        is running has ended, and that job is not idle.
        """
        def process(items):
            self.events.append(len(items))
            abandoned.append(self.drain.abandon())  # the reactor, meanwhile
            self.drain.put(b"late" * MiB)
        abandoned = []
        self.drain._process = process
        self.drain.put(b"a" * MiB)
        self.drain.put(b"b" * MiB)
        self.drain._batch = 1
        runJob(self.jobs)
        self.assertEqual(self.events, [1])
        self.assertEqual(self.drain.backlog, 0)
        self.successResultOf(abandoned[0])
        self.assertEqual(self.jobs, [])

    def test_pendingUntilTheJobEnds(self):
        self.drain.put(b"a" * MiB)
        abandoned = self.drain.abandon()
        self.assertNoResult(abandoned)
        runJob(self.jobs)
        self.successResultOf(abandoned)

    def test_idleDrain(self):
        self.successResultOf(self.drain.abandon())
        self.drain.put(b"a" * (2 * MiB))
        self.assertEqual(self.jobs, [])

    def test_failedJob(self):
        """
        What the last job raised does not fail the abandoning.
        """
        self.drain._process = lambda items: 1 / 0
        self.drain.put(b"a" * MiB)
        abandoned = self.drain.abandon()
        runJob(self.jobs)
        self.successResultOf(abandoned)
        self.successResultOf(self.drain.abandon())
