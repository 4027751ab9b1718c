"""
Background retries of a remote store's clean-up (aborting a multipart
upload, removing segments or a deleted image's object) while the store
cannot be reached: the image is already killed or deleted, and the bytes
must not stay behind once the store is back.
"""

from typing import Any, Awaitable, Callable, List, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from glancetx.store.interface import StoreError, StoreUnavailable


#: Clean-up that fails because the store cannot be reached (or answers
#: 5xx) -- aborting a multipart upload, removing a partial object -- is
#: retried in the background: first after CLEANUP_FIRST_DELAY seconds, the
#: wait doubling up to CLEANUP_MAX_DELAY, given up CLEANUP_DEADLINE seconds
#: after the first failure, and abandoned (logged) at reactor shutdown.
CLEANUP_FIRST_DELAY = 1.0
CLEANUP_MAX_DELAY = 15.0
CLEANUP_DEADLINE = 120.0


class _CleanupJob:
    def __init__(self, what: str, attempt: Callable[[], Awaitable[Any]],
                 deadline: float, delay: float) -> None:
        self.what = what
        self.attempt = attempt
        self.deadline = deadline
        self.delay = delay
        self.tries = 1
        self.call: Any = None
        self.running: Optional[Deferred] = None
        self.cancelled = False


class CleanupRetries:
    """
    Bounded background retries of clean-up steps.  C{what} names a step in
    log lines; it must hold no credentials (use L{redact}ed locations).
    Only L{StoreUnavailable} is retried: a refusal (403, a bad request)
    will not get better by waiting.
    """

    def __init__(self, reactor: Any, log: Logger, firstDelay: float = CLEANUP_FIRST_DELAY,
                 maxDelay: float = CLEANUP_MAX_DELAY, deadline: float = CLEANUP_DEADLINE) -> None:
        self._reactor = reactor
        self._log = log
        self._firstDelay = firstDelay
        self._maxDelay = maxDelay
        self._deadline = deadline
        self._jobs: List[_CleanupJob] = []
        self._trigger: Any = None
        self._idleWaiters: List[Deferred] = []

    def pending(self) -> int:
        return len(self._jobs)

    def add(self, what: str, attempt: Callable[[], Awaitable[Any]]) -> None:
        """
        Retry C{attempt} (an async callable that raises if the step failed),
        whose first try has just failed with L{StoreUnavailable}.
        """
        job = _CleanupJob(what, attempt, self._reactor.seconds() + self._deadline,
                          self._firstDelay)
        self._jobs.append(job)
        if self._trigger is None and hasattr(self._reactor, "addSystemEventTrigger"):
            self._trigger = self._reactor.addSystemEventTrigger(
                "before", "shutdown", self.cancelAll)
        self._log.info("will retry to {what} in the background", what=what)
        job.call = self._reactor.callLater(job.delay, self._run, job)

    def _run(self, job: _CleanupJob) -> None:
        job.call = None
        job.tries += 1
        job.running = Deferred.fromCoroutine(job.attempt())
        job.running.addCallbacks(self._succeeded, self._failed,
                                 callbackArgs=(job,), errbackArgs=(job,))

    def _succeeded(self, _: Any, job: _CleanupJob) -> None:
        job.running = None
        self._log.info("retry {tries} succeeded: {what}", tries=job.tries, what=job.what)
        self._done(job)

    def _failed(self, reason: Failure, job: _CleanupJob) -> None:
        job.running = None
        if job.cancelled:
            return
        job.delay = min(job.delay * 2, self._maxDelay)
        retryable = reason.check(StoreUnavailable) is not None
        if not retryable or self._reactor.seconds() + job.delay > job.deadline:
            self._log.warn(
                "gave up after {tries} tries: could not {what}: {why}",
                tries=job.tries, what=job.what,
                why=str(reason.value) if isinstance(reason.value, StoreError)
                else type(reason.value).__name__)
            self._done(job)
            return
        job.call = self._reactor.callLater(job.delay, self._run, job)

    def _done(self, job: _CleanupJob) -> None:
        if job in self._jobs:
            self._jobs.remove(job)
        if not self._jobs:
            if self._trigger is not None:
                try:
                    self._reactor.removeSystemEventTrigger(self._trigger)
                except (ValueError, KeyError):
                    pass
                self._trigger = None
            waiters, self._idleWaiters = self._idleWaiters, []
            for w in waiters:
                w.callback(None)

    def whenIdle(self) -> Deferred:
        """
        Fire once no clean-up is waiting to be retried.
        """
        d: Deferred = Deferred()
        if self._jobs:
            self._idleWaiters.append(d)
        else:
            d.callback(None)
        return d

    def cancelAll(self) -> None:
        """
        Stop retrying (at shutdown): every step still pending is logged as
        abandoned.
        """
        self._trigger = None
        for job in list(self._jobs):
            job.cancelled = True
            if job.call is not None and job.call.active():
                job.call.cancel()
            job.call = None
            running, job.running = job.running, None
            if running is not None:
                running.addErrback(lambda f: None)
                running.cancel()
            self._log.warn("abandoned at shutdown: could not {what}", what=job.what)
            self._done(job)


class RetriedCleanups:
    """
    What a remote store driver offers for its background clean-up: a lazy
    L{CleanupRetries} (the driver keeps it in C{self._retries}, next to its
    C{self._reactor} and C{self.log}), and bounded retries of a delete that
    failed because the store could not be reached.
    """

    _retries: Optional[CleanupRetries]

    def _cleanups(self) -> CleanupRetries:
        if self._retries is None:
            self._retries = CleanupRetries(self._reactor, self.log)
        return self._retries

    def pendingCleanups(self) -> int:
        """
        How many clean-up steps are waiting to be retried.
        """
        return 0 if self._retries is None else self._retries.pending()

    def whenCleanedUp(self) -> Deferred:
        """
        Fire once no clean-up step is waiting to be retried (done or given up).
        """
        return self._cleanups().whenIdle()

    def cancelCleanups(self) -> None:
        """
        Stop retrying clean-up steps (done by itself at reactor shutdown).
        """
        if self._retries is not None:
            self._retries.cancelAll()

    def deleteLater(self, location: str) -> None:
        """
        Keep trying to delete an image's bytes that could not be deleted now
        because the store is unreachable, so a deleted image does not leave
        its object behind.
        """
        async def attempt() -> None:
            await self.delete(location)

        name = location.rstrip("/").rsplit("/", 1)[-1]
        self._cleanups().add("delete the stored object %s" % (name,), attempt)
