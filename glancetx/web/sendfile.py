"""
Zero-copy downloads: the kernel moves an image file's pages straight to the
client's socket with sendfile(2), on a thread of a dedicated bounded pool,
while the reactor goes on serving everyone else.

The reactor keeps the connection; the sending thread works on a duplicate
of its file descriptor, so even if the reactor closes the connection
meanwhile (shutdown, an abort) the thread can never write to a descriptor
number that was reused for another client.  Reading from the connection is
paused for the transfer and resumed after it.  Plain TCP only: TLS needs
the bytes in user space, and takes the producer path instead.
"""

import os
import threading
import time

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

#: Bytes per sendfile call: large enough that the loop costs nothing, small
#: enough that a stop request is noticed quickly.
SEND_SIZE = 16 * 1024 * 1024

log = Logger()


class ShortFile(Exception):
    """
    The file ended before its recorded size.
    """


class Stopped(Exception):
    """
    The transfer was stopped (the server is shutting down).
    """


class Stalled(Exception):
    """
    The client read nothing of the transfer for too long.
    """


def transportIsIdle(transport) -> bool:
    """
    Whether everything written to C{transport} has gone to the kernel.

    Reads private attributes of Twisted's TCP transport (tested against the
    installed Twisted; setup.py bounds its version).
    """
    try:
        return not transport._tempDataLen and transport.offset == len(transport.dataBuffer)
    except AttributeError:
        return False


def canSendfile(transport) -> bool:
    return (hasattr(os, "sendfile") and hasattr(transport, "fileno")
            and hasattr(transport, "doWrite") and not ISSLTransport.providedBy(transport))


def _sendAll(sockfd: int, source, size: int, stop: threading.Event,
             stallSeconds: float = 0) -> int:
    """
    Send C{size} bytes of C{source} (a file's path, or a descriptor of its
    own, which this closes) to the socket; a thread job.

    The descriptor is made blocking for the transfer (the reactor neither
    reads nor writes this connection meanwhile), with a send timeout so a
    stalled client still lets the loop notice a stop request; the kernel
    then paces sendfile itself, with no poll round trips.
    """
    import socket
    import struct

    sock = socket.socket(fileno=sockfd)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 1, 0))
        os.set_blocking(sockfd, True)
        with (open(source, "rb", buffering=0) if isinstance(source, str)
              else os.fdopen(source, "rb", buffering=0)) as f:
            infd = f.fileno()
            offset = 0
            progress = time.monotonic()
            try:
                while offset < size:
                    if stop.is_set():
                        raise Stopped("the server is shutting down")
                    try:
                        n = os.sendfile(sockfd, infd, offset, min(size - offset, SEND_SIZE))
                    except BlockingIOError:
                        # The send timeout passed: look at the stop flag, and
                        # at how long the client has read nothing.
                        if stallSeconds and time.monotonic() - progress > stallSeconds:
                            raise Stalled()
                        continue
                    if n == 0:
                        raise ShortFile()
                    offset += n
                    progress = time.monotonic()
            except Exception as e:
                # What went out before (image.send reports it).
                e.bytesSent = offset
                raise
            return offset
    finally:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 0))
            os.set_blocking(sockfd, False)
        except OSError:
            pass
        sock.close()


class Sendfile:
    """
    Runs sendfile transfers on a bounded pool, and refuses (so the caller
    takes the producer path) when the pool is full.
    """

    def __init__(self, reactor, pool, limit: int, stallSeconds: float = 0) -> None:
        self._reactor = reactor
        self._pool = pool
        self._limit = limit
        #: A transfer the client reads nothing of for this long fails
        #: (L{Stalled}); 0: never.
        self._stallSeconds = stallSeconds
        self._active = 0
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def send(self, request, source, size: int):
        """
        Send the response body from C{source} (a path, or an open file),
        after the headers already set.

        @return: None if this transfer cannot be done with sendfile (the
            caller must produce the body itself; nothing has been written),
            else a Deferred firing with the byte count, or failing if the
            transfer broke (the caller must then abort the connection).
        """
        transport = request.transport
        if self._active >= self._limit or not canSendfile(transport):
            return None
        # Headers go out through Twisted; the body may only follow once
        # they have left its buffer.
        request.write(b"")
        transport.doWrite()
        if not transportIsIdle(transport):
            return None
        try:
            sockfd = os.dup(transport.fileno())
        except OSError:
            return None
        if not isinstance(source, str):
            try:
                source = os.dup(source.fileno())
            except OSError:
                os.close(sockfd)
                return None
        self._active += 1
        transport.pauseProducing()
        d = deferToThreadPool(self._reactor, self._pool, _sendAll, sockfd, source, size,
                              self._stop, self._stallSeconds)

        def done(result):
            self._active -= 1
            if not request._disconnected:
                transport.resumeProducing()
            if isinstance(result, int):
                request.sentLength = result
            return result

        d.addBoth(done)
        return d


def sendfileFile(producer):
    """
    The open file behind a download producer, if it is a plain local file.
    """
    return getattr(producer, "sendfileFile", None)
