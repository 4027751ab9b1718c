"""
Small response bodies from an object store (error documents, XML and JSON
answers, token answers), read with a limit.

A store, or a proxy in front of it, may answer anything: a body is never
collected whole just because an answer was expected to be short.  Past the
limit the rest is not read and the connection is not reused.
"""

from typing import Any, List

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

MAX_DOCUMENT = 1024 * 1024


class DocumentReader(Protocol):
    """
    Collect a small response body, up to a limit.
    """

    def __init__(self, limit: int, done: Deferred) -> None:
        self._limit = limit
        self._done = done
        self._chunks: List[bytes] = []
        self._size = 0
        self._truncated = False

    def dataReceived(self, data: bytes) -> None:
        if self._truncated:
            return
        room = self._limit - self._size
        if len(data) > room:
            data = data[:room]
            self._truncated = True
            self.transport.stopProducing()
        self._chunks.append(data)
        self._size += len(data)

    def connectionLost(self, reason: Failure = None) -> None:
        if self._truncated or reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._chunks))
        else:
            self._done.errback(reason)


def readDocument(response: Any, limit: int = MAX_DOCUMENT) -> Deferred:
    """
    The first C{limit} bytes of C{response}'s body (all of it, if shorter).
    """
    done: Deferred = Deferred()
    response.deliverBody(DocumentReader(limit, done))
    return done


async def drain(response: Any, limit: int = MAX_DOCUMENT) -> None:
    """
    Read and drop a response body the status already answered for, so the
    connection can be reused; a failure to read it changes nothing.
    """
    try:
        await readDocument(response, limit)
    except Exception:
        pass
