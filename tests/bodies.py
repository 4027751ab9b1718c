"""
Body producers for tests: bytes pushed in chunks, optionally failing part
way, the way a client's upload would arrive.
"""

from typing import Optional

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from glancetx.store.interface import UploadFailed


@implementer(IBodyProducer, IPushProducer)
class BytesBody:
    """
    Push C{data} in C{chunk}-sized writes, one per reactor turn, honouring
    pause/resume.  With C{failAfter}, fail with L{UploadFailed} once that many
    bytes are out, as a client that disconnects would.
    """

    def __init__(self, reactor, data: bytes, chunk: int = 65536,
                 knownLength: bool = True, failAfter: Optional[int] = None):
        self._reactor = reactor
        self._data = data
        self._chunk = chunk
        self._failAfter = failAfter
        self.length = len(data) if knownLength else UNKNOWN_LENGTH
        self._offset = 0
        self._paused = False
        self._stopped = False
        self._pending = None
        self._done: Optional[Deferred] = None
        self.pauses = 0

    def startProducing(self, consumer) -> Deferred:
        self._consumer = consumer
        self._done = Deferred()
        self._schedule()
        return self._done

    def _schedule(self) -> None:
        if self._pending is None and not self._paused and not self._stopped:
            self._pending = self._reactor.callLater(0, self._step)

    def _step(self) -> None:
        self._pending = None
        if self._paused or self._stopped:
            return
        if self._failAfter is not None and self._offset >= self._failAfter:
            self._stopped = True
            self._done.errback(Failure(UploadFailed(400, "client went away")))
            return
        if self._offset >= len(self._data):
            self._stopped = True
            self._done.callback(None)
            return
        end = self._offset + self._chunk
        if self._failAfter is not None:
            end = min(end, self._failAfter)
        piece = self._data[self._offset:end]
        self._offset = end
        self._consumer.write(piece)
        self._schedule()

    def pauseProducing(self) -> None:
        self.pauses += 1
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self._stopped = True
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


class CollectingConsumer:
    """
    A consumer that keeps what it is given (tests only: the data is small).
    """

    def __init__(self) -> None:
        self.chunks = []
        self.producer = None

    def registerProducer(self, producer, streaming) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def value(self) -> bytes:
        return b"".join(self.chunks)


class RecordingProducer:
    """
    A producer that records what its consumer asked of it, in order.
    """

    def __init__(self):
        self.calls = []

    def pauseProducing(self):
        self.calls.append("pause")

    def resumeProducing(self):
        self.calls.append("resume")

    def stopProducing(self):
        self.calls.append("stop")


def readAll(reactor, producer) -> Deferred:
    """
    Run a store's download producer into memory (test-sized images only).
    """
    consumer = CollectingConsumer()
    consumer.registerProducer(producer, True)
    d = producer.startProducing(consumer)
    d.addCallback(lambda _: consumer.value())
    return d


class FailedBody:
    """
    A body whose client went away before anyone started it: its
    C{startProducing} fails at once.
    """

    length = 10

    def startProducing(self, consumer) -> Deferred:
        return fail(UploadFailed(400, "went away"))


class PushBody:
    """
    A source whose bytes the test pushes by hand.
    """

    length = UNKNOWN_LENGTH

    def __init__(self):
        self.stopped = False
        self.done = Deferred()

    def startProducing(self, consumer):
        self.consumer = consumer
        return self.done

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        self.stopped = True
