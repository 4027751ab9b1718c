"""
A limit on how long an object store's answer body may say nothing.

An S3 or Swift request has a deadline until its answer's head arrives.
Its body was then read with none, so a store, or a proxy in front of it,
that sent a status line and then went silent held whatever waited on the
body for good: an upload stayed C{saving} (its server, alive, renewing its
lease), a delete never answered, a download held its client and its
connection, and a Swift token answer stalled once held every later Swift
request behind it.  TCP notices no peer that acknowledges and says
nothing.

So every answer a store client reads is wrapped: once its body is asked
for, a timer runs while the body is neither arriving nor paused by its
reader (a download waiting for its slow client is not the store's
silence), and when it runs out the connection is closed and the reader
is told the body failed with L{StoreUnavailable}, even where closing would
otherwise read as a complete body of unknown length.
"""

from typing import Any, Optional

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from glancetx.store.interface import StoreUnavailable


class SilentAnswer:
    """
    A response whose body, once delivered, may be silent for at most
    C{seconds}; everything else is the response's own.
    """

    def __init__(self, response: Any, clock: Any, seconds: float, what: str) -> None:
        self._response = response
        self._clock = clock
        self._seconds = seconds
        self._what = what

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)

    def deliverBody(self, protocol: Any) -> None:
        self._response.deliverBody(
            _Watched(protocol, self._clock, self._seconds, self._what))


@implementer(IPushProducer)
class _Pauses:
    """
    The body's transport as its reader sees it: the reader's pauses stop
    the silence timer, since the body is then silent on its account.
    """

    def __init__(self, transport: Any, watched: "_Watched") -> None:
        self._transport = transport
        self._watched = watched

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def pauseProducing(self) -> None:
        self._watched._pause()
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._transport.resumeProducing()
        self._watched._resume()

    def stopProducing(self) -> None:
        self._watched._disarm()
        self._transport.stopProducing()


class _Watched(Protocol):
    """
    Passes a body on to C{inner}, and ends it if it says nothing for
    C{seconds} while not paused.
    """

    def __init__(self, inner: Any, clock: Any, seconds: float, what: str) -> None:
        self._inner = inner
        self._clock = clock
        self._seconds = seconds
        self._what = what
        self._timer: Optional[Any] = None
        self._paused = False
        self._ended = False
        self._silent = False

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self._arm()
        self._inner.makeConnection(_Pauses(transport, self))

    def dataReceived(self, data: bytes) -> None:
        self._arm()
        self._inner.dataReceived(data)

    def connectionLost(self, reason: Failure = None) -> None:
        self._ended = True
        self._disarm()
        if self._silent:
            reason = Failure(StoreUnavailable(
                "%s: the store sent nothing of its answer for %d seconds"
                % (self._what, self._seconds)))
        self._inner.connectionLost(reason)

    def _pause(self) -> None:
        self._paused = True
        self._disarm()

    def _resume(self) -> None:
        self._paused = False
        self._arm()

    def _arm(self) -> None:
        if self._paused or self._ended:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._seconds)
        else:
            self._timer = self._clock.callLater(self._seconds, self._expired)

    def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _expired(self) -> None:
        self._timer = None
        self._silent = True
        self.transport.stopProducing()
