"""
Reading a new image into the page cache once its upload has ended, so that
its first download comes from memory.

The filesystem store writes images around the page cache (C{O_DIRECT}, see
L{glancetx.store.appendfile}): an upload costs less CPU that way, but a new
image is in no cache, and its first download has to fill new cache pages
as it sends.  On this project's virtual machines that first download ran at
a quarter of a cached one, while the one that followed ran at full speed,
most likely because a page of the guest's costs a fault the first time its
CPU touches it after the host took the memory under it back.  Compute
nodes often fetch an image soon after it is uploaded; with
C{filesystem_store_warm_cache} on, the store reads each new image once
through a buffer on a disk thread as soon as it is stored, paying that
price where no client waits for it.

It is off by default because the price moves rather than vanishes: on the
same machine, 32 nginx uploads of 64 MiB that followed 32 warmed ones ran
at 69 MiB/s, against 247 after 32 that were not warmed.  Whoever next
needs new memory pays for what the warm-up took.

It reads through a buffer, touching every page, and not with C{sendfile} to
C{/dev/null}: measured on such a machine, a cache filled by C{sendfile}
(which never touches the pages) left the next download little faster than
an empty one (672 against 492 MiB/s), while a cache filled by C{read} made
it fast (1,969 against 468).

Warming is a courtesy.  It reads only while no upload is in flight: on two
cores, a warm-up beside the next upload took a quarter of that upload's
speed (452 against 607 MiB/s for uploads that followed another at once).
It reads one image at a time, so the disk pool keeps its other threads for
uploads and downloads; its queue is bounded and forgets what does not fit;
and it ends as soon as the image is deleted or the server stops.
"""

import os
import threading
from collections import deque
from typing import Callable, Deque

from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

#: Bytes per read, through one buffer that every read reuses.
WARM_READ_SIZE = 1024 * 1024
#: Images waiting for their turn; one past this is not warmed.
MAX_WAITING = 32
#: How often a read looks whether its image was deleted meanwhile.
CHECK_EVERY = 64 * 1024 * 1024
#: How long a read waits before it looks again whether the uploads that
#: held it back have ended.
PAUSE_SECONDS = 0.05

log = Logger()


def _always() -> bool:
    return True


def readThrough(path: str, buffer: bytearray, stop: threading.Event,
                idle: Callable[[], bool] = _always) -> int:
    """
    Read the file at C{path} once, from start to end, into C{buffer}, piece
    by piece; a thread job.  Before each piece it waits until C{idle()} is
    true.  It ends early when C{stop} is set or once the file has been
    deleted.  Errors end it quietly: a warm-up that fails costs nothing but
    the speed of a download.

    @return: how many bytes were read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return 0
    total = 0
    nextCheck = CHECK_EVERY
    try:
        while not stop.is_set():
            if not idle():
                stop.wait(PAUSE_SECONDS)
                continue
            n = os.readv(fd, [buffer])
            if not n:
                break
            total += n
            if total >= nextCheck:
                nextCheck += CHECK_EVERY
                if os.fstat(fd).st_nlink == 0:
                    break
    except OSError:
        pass
    finally:
        os.close(fd)
    return total


class CacheWarmer:
    """
    Reads files into the page cache, one at a time, on a thread pool,
    whenever C{idle()} says nothing more urgent needs the cores (it is
    called from that thread).
    """

    def __init__(self, reactor, pool, idle: Callable[[], bool] = _always,
                 readSize: int = WARM_READ_SIZE, maxWaiting: int = MAX_WAITING) -> None:
        self._reactor = reactor
        self._pool = pool
        self._idle = idle
        self._buffer = bytearray(readSize)
        self._waiting: Deque[str] = deque()
        self._maxWaiting = maxWaiting
        self._reading = False
        self._stop = threading.Event()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def warm(self, path: str) -> None:
        """
        Read the file at C{path} into the cache when its turn comes.
        """
        if self._stop.is_set() or len(self._waiting) >= self._maxWaiting:
            return
        self._waiting.append(path)
        self._next()

    def stop(self) -> None:
        """
        End the read under way at its next piece and forget the rest.
        """
        self._stop.set()
        self._waiting.clear()

    def _next(self) -> None:
        if self._reading or not self._waiting:
            return
        self._reading = True
        d = deferToThreadPool(self._reactor, self._pool, readThrough, self._waiting.popleft(),
                              self._buffer, self._stop, self._idle)
        d.addErrback(lambda f: log.failure("reading a new image into the cache failed", f))
        d.addBoth(self._readDone)

    def _readDone(self, _) -> None:
        self._reading = False
        self._next()
