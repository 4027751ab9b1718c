"""
Small bridges between coroutines and Deferreds, used across the package so
that every public method still returns a Deferred.
"""

import functools
from typing import Any, Awaitable, Callable, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectingCancelledError
from twisted.python.failure import Failure

T = TypeVar("T")


def fromCoroutine(f: Callable[..., Awaitable[T]]) -> Callable[..., "Deferred[T]"]:
    """
    Decorate an C{async def} so that callers get a Deferred, converted once at
    the boundary.
    """

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> "Deferred[T]":
        return Deferred.fromCoroutine(f(*args, **kwargs))

    return wrapper


def firstOf(*ds: Deferred) -> Deferred:
    """
    Fire with the result or failure of whichever Deferred fires first.
    Unlike L{twisted.internet.defer.race}, a failure wins too: a writer that
    breaks must end the wait even while the body is still arriving.  The
    others are left alone (not cancelled), their later results swallowed.
    """
    out: Deferred = Deferred()

    def fire(result: Any) -> None:
        if not out.called:
            if isinstance(result, Failure):
                out.errback(result)
            else:
                out.callback(result)
        return None

    for d in ds:
        d.addBoth(fire)
    return out


def isCancellation(e: BaseException) -> bool:
    """
    Whether a request failed because it was cancelled: by a time-out or by
    its caller.  twisted's HTTP client reports a request cancelled after it
    was sent as C{ResponseNeverReceived([CancelledError])}, never as a
    bare C{CancelledError}, and one cancelled while it was still connecting
    as C{ConnectingCancelledError}.
    """
    if isinstance(e, (CancelledError, ConnectingCancelledError)):
        return True
    return any(isinstance(r, Failure) and r.check(CancelledError) is not None
               for r in getattr(e, "reasons", None) or ())


def shield(d: Deferred) -> Deferred:
    """
    A Deferred that follows C{d} but whose cancellation leaves C{d} running:
    an upload must finish its own clean-up even when the client's request
    handler is cancelled because the client went away.
    """
    out: Deferred = Deferred()

    def fire(result: Any) -> Any:
        if not out.called:
            if isinstance(result, Failure):
                out.errback(result)
            else:
                out.callback(result)
        # A failure now belongs to C{out} (or to nobody, if it was
        # cancelled); leaving it on C{d} too would log it as unhandled.
        return None if isinstance(result, Failure) else result

    d.addBoth(fire)
    return out
