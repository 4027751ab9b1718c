"""
A deadline for the answer to a request that carries image bytes.

Such a request can have no deadline of its own: its body arrives at the
pace of the client uploading the image, however slow.  But once its last
byte is out, the object store should answer within its usual time, and a
store that took every byte and then says nothing (a hung proxy, say) would
otherwise hold the upload for ever: TCP notices no peer that acknowledges
and stays silent.  So the clock starts when the body has been sent.
"""

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer


@implementer(IBodyProducer)
class AnswerDeadline:
    """
    A request body that, once sent whole, gives its answer C{seconds} to
    come before C{expire} is called (to cancel the request).

    Only the start and the end of the body pass through here, not its
    bytes.  Call L{cancel} once the answer is in (or the request failed).
    """

    def __init__(self, body: Any, clock: Any, seconds: float,
                 expire: Callable[[], None]) -> None:
        self._body = body
        self.length = body.length
        self._clock = clock
        self._seconds = seconds
        self._expire = expire
        self._timer: Optional[Any] = None
        self._over = False

    def startProducing(self, consumer: Any) -> Deferred:
        d = self._body.startProducing(consumer)
        d.addCallback(self._sent)
        return d

    def _sent(self, result: Any) -> Any:
        if not self._over:
            self._timer = self._clock.callLater(self._seconds, self._expire)
        return result

    def cancel(self) -> None:
        self._over = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def pauseProducing(self) -> None:
        self._body.pauseProducing()

    def resumeProducing(self) -> None:
        self._body.resumeProducing()

    def stopProducing(self) -> None:
        self._body.stopProducing()
