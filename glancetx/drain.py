"""
Bytes handed from the reactor to a pool thread, in order, by a job that
keeps taking them as they come.

An upload's MD5 and its disk writes each run on a pool thread while the
reactor reads the socket.  When each job took one batch and went back to
the reactor for the next, the thread sat idle for a reactor round trip
(a wake-up through the waker pipe, a GIL hand-over, a queue hand-off)
between every two batches, and the stage, MD5 above all, ran well below
its own speed.  Here the reactor appends to a locked queue, and a running
job takes what arrived while it worked before it returns; it returns when
the queue is empty, or after a fixed amount, so that on a small pool the
uploads in flight take turns.  The reactor hears of progress only when it
waits for the backlog to fall (its producer is paused) and when a job ends.

A stage can use the moments its queue runs dry (the disk writer, whose
device is faster than the MD5 that feeds it, is often idle): a job that
finds nothing queued calls C{idle} once before it ends, and takes what
arrived meanwhile.
"""

import threading
from collections import deque
from typing import Callable, Deque, List, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from glancetx.budget import BudgetShare, fixedShare

MiB = 1024 * 1024

#: The most one job takes before it lets another upload's job have the
#: thread.
JOB_LIMIT = 8 * MiB


class Drain:
    """
    A queue of byte strings that C{process} takes, in order, in lists of
    about C{batch} bytes, on C{pool}.

    C{backlog} is what was put and not yet processed.  The holder pauses its
    producer when that reaches the share's high mark; L{onDrained} is then
    called once it is back at the low mark, and whenever a job ends.

    C{idle}, if given, is called in the job's thread when the job finds the
    queue empty after processing something; it may block (bytes put
    meanwhile wait in the queue, counted in the backlog as usual) and may
    raise, which fails the drain as C{process} raising does.
    """

    def __init__(self, reactor, pool, process: Callable[[List[bytes]], None],
                 share: Optional[BudgetShare] = None, batch: int = MiB,
                 idle: Optional[Callable[[], None]] = None) -> None:
        self._reactor = reactor
        self._pool = pool
        self._process = process
        self._share = share if share is not None else fixedShare()
        self._batch = batch
        self._idle = idle
        self._lock = threading.Lock()
        self._queue: Deque[bytes] = deque()
        self.backlog = 0
        self._running = False
        self._watching = False
        self._waiters: List[Deferred] = []
        self.error: Optional[Failure] = None
        self._abandoned = False
        self.onDrained: Optional[Callable[[], None]] = None
        self.onFailed: Optional[Callable[[Failure], None]] = None

    def put(self, data: bytes) -> None:
        if self.error is not None or self._abandoned:
            return
        high, low = self._share.high(), self._share.low()
        with self._lock:
            self._queue.append(data)
            self.backlog += len(data)
            if self.backlog >= high:
                self._watching = True
            # Below the low mark the consumer is ahead: wait for more
            # rather than pay a trip per read (flush takes a short tail).
            start = not self._running and self.backlog >= low
            if start:
                self._running = True
        if start:
            self._start()

    def flush(self) -> Deferred:
        """
        Fire once everything put so far has been processed (or fail with
        what the processing raised).
        """
        if self.error is not None:
            return fail(self.error)
        with self._lock:
            idle = not self._running and not self._queue
            start = not self._running and not idle
            if start:
                self._running = True
        if idle:
            return succeed(None)
        if start:
            self._start()
        d: Deferred = Deferred()
        self._waiters.append(d)
        return d

    def abandon(self) -> Deferred:
        """
        Drop what is queued and take nothing more; fire once no job is
        running, whatever the last one raised.  Whoever closes what the
        jobs work on (a file, whose descriptor number the system may hand
        to the next file opened) must wait for this first.
        """
        self._abandoned = True
        self._idle = None
        with self._lock:
            self.backlog -= sum(len(item) for item in self._queue)
            self._queue.clear()
        return self.flush().addErrback(lambda _: None)

    def _start(self) -> None:
        d = deferToThreadPool(self._reactor, self._pool, self._work, self._share.low())
        d.addCallbacks(self._ended, self._failed)

    def _work(self, low: int) -> None:
        """
        In a pool thread: process what is queued until nothing is, or until
        this job has done its share.
        """
        lock, queue, batch = self._lock, self._queue, self._batch
        done = 0
        # Whether the queue has run dry since this job last processed.
        dry = False
        try:
            while True:
                with lock:
                    idle = self._idle
                    if done >= JOB_LIMIT or (not queue and (dry or idle is None)):
                        self._running = False
                        return
                    items: List[bytes] = []
                    size = 0
                    while queue and size < batch:
                        item = queue.popleft()
                        items.append(item)
                        size += len(item)
                if not items:
                    dry = True
                    idle()
                    continue
                self._process(items)
                dry = False
                done += size
                with lock:
                    self.backlog -= size
                    notify = self._watching and self.backlog <= low
                    if notify:
                        self._watching = False
                if notify:
                    self._reactor.callFromThread(self._progressed)
        except BaseException:
            with lock:
                self._running = False
            raise

    def _progressed(self) -> None:
        if self.error is None and self.onDrained is not None:
            self.onDrained()

    def _ended(self, _) -> None:
        with self._lock:
            start = not self._running and bool(self._queue)
            if start:
                self._running = True
            idle = not self._running and not self._queue
        if start:
            self._start()
        elif idle and self._waiters:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                w.callback(None)
        if self.onDrained is not None:
            self.onDrained()

    def _failed(self, reason: Failure) -> None:
        self.error = reason
        with self._lock:
            self._queue.clear()
            self.backlog = 0
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.errback(reason)
        if self.onFailed is not None:
            self.onFailed(reason)
