"""
The filesystem store: one file per image under a directory.

Every disk call runs on a dedicated, bounded thread pool so a slow disk never
stalls the reactor.  An upload is written to a temporary name in the same
directory and renamed into place only after the body producer has vouched
for every byte (size, checksum, cap) and the data is fsynced, so a reader can
never see a partial file under an image's name.  How the bytes reach the disk
(around the page cache where possible) is L{glancetx.store.appendfile}'s.
"""

import errno
import os
import uuid
from typing import List, Optional

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from glancetx.asyncutil import firstOf, fromCoroutine
from glancetx.budget import BudgetShare, SharedBudget, fixedShare
from glancetx.drain import Drain
from glancetx.errors import ConfigError
from glancetx.store.appendfile import EARLY_FLUSH, AppendFile, discard, removeIfAbandoned
from glancetx.store.interface import (
    BadLocation,
    IStore,
    LocationNotFound,
    StoredImage,
    StoreError,
    StoreUnavailable,
    UploadFailed,
)

#: Size of one read for downloads.
READ_SIZE = 1024 * 1024
#: The least a download reads at once (Glance's chunk).
MIN_READ_SIZE = 64 * 1024
#: What the downloads read through this process's memory (those that
#: cannot go out with sendfile: under TLS, or past its slots) may hold in
#: all.  Each holds its last read until its client takes it, and one
#: whose client stops reading holds it until client_socket_timeout (900
#: seconds) closes it: 1,200 such clients held 1.2 GiB.
READ_BUDGET = 64 * 1024 * 1024


@attr.s(eq=False)
class ReadSizes:
    """
    How much each download reads at once: L{READ_SIZE} while what the
    downloads hold leaves room in L{READ_BUDGET}, then what room there
    is, down to L{MIN_READ_SIZE}; so all of them hold the budget and
    L{MIN_READ_SIZE} each at most.  A download holds its last read until
    it reads the next (its client has taken it) or ends.
    """

    budget: int = attr.ib(default=READ_BUDGET)
    held: int = attr.ib(default=0)

    def take(self) -> int:
        size = max(MIN_READ_SIZE, min(READ_SIZE, self.budget - self.held))
        self.held += size
        return size

    def give(self, size: int) -> None:
        self.held -= size


def _writeAll(file: AppendFile, chunks: List[bytes]) -> None:
    """
    One disk job: append C{chunks} to the image file.
    """
    file.append(chunks)


@implementer(IConsumer)
class _FileWriter:
    """
    A consumer whose chunks a L{Drain} appends to the file on the disk pool
    (one job at a time, so writes stay in order), pushing back on its
    producer with the high and low marks of its share of the upload memory
    budget.  When the writer runs dry, the file may flush early
    (L{AppendFile.flushBehind}).
    """

    def __init__(self, file: AppendFile, reactor, pool,
                 share: Optional[BudgetShare] = None) -> None:
        self._share = share if share is not None else fixedShare()
        self._drain = Drain(reactor, pool, lambda chunks: _writeAll(file, chunks), self._share,
                            idle=file.flushBehind)
        self._drain.onDrained = self._drained
        self._drain.onFailed = self._writeFailed
        self._producer: Optional[IPushProducer] = None
        self._paused = False
        self.failed: Deferred = Deferred()
        #: Bytes given to the writer (all written, once L{drain} has fired).
        self.written = 0

    def registerProducer(self, producer, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        if self._drain.error is not None:
            return
        self._drain.put(data)
        self.written += len(data)
        if (
            self._drain.backlog >= self._share.high()
            and not self._paused
            and self._producer is not None
        ):
            self._paused = True
            self._producer.pauseProducing()

    def _drained(self) -> None:
        if self._paused and self._drain.backlog <= self._share.low() and self._producer:
            self._paused = False
            self._producer.resumeProducing()

    def _writeFailed(self, reason: Failure) -> None:
        if self._producer is not None:
            self._producer.stopProducing()
        self.failed.errback(reason)

    def drain(self) -> Deferred:
        """
        Fire when every byte written so far is in the file.
        """
        return self._drain.flush()

    def abandon(self) -> Deferred:
        """
        Write nothing more; fire once no disk job uses the file.
        """
        return self._drain.abandon()


@implementer(IBodyProducer, IPushProducer)
@attr.s(eq=False)
class _FileReader:
    """
    Pushes a file's bytes to a consumer, one thread-pool read ahead of the
    consumer, pausing when the consumer says so.  A file shorter than the
    length it promised fails the Deferred instead of ending quietly.

    It is given the file already open (the download opened it before its
    answer's head, so a delete racing it cannot cut the body short) and
    closes it when done.
    """

    _fileobj = attr.ib()
    length: int = attr.ib()
    _reactor = attr.ib()
    _pool = attr.ib()
    _consumer = attr.ib(default=None)
    _done: Optional[Deferred] = attr.ib(default=None)
    _remaining: int = attr.ib(default=0)
    _paused: bool = attr.ib(default=False)
    _reading: bool = attr.ib(default=False)
    _stopped: bool = attr.ib(default=False)
    #: Shared by a store's downloads.
    _sizes: ReadSizes = attr.ib(factory=ReadSizes)
    #: What this download holds of them: its last read's size.
    _holding: int = attr.ib(default=0)

    @property
    def sendfileFile(self):
        """
        The open file itself, so a plain-TCP download can go out with
        sendfile (at explicit offsets: its position is not used).  Whoever
        sends it stops this producer after, which closes it.
        """
        return self._fileobj

    def startProducing(self, consumer) -> Deferred:
        self._consumer = consumer
        self._remaining = self.length
        done = self._done = Deferred()
        self._readNext()
        return done

    def _readNext(self) -> None:
        if self._stopped or self._paused or self._reading:
            return
        if self._remaining == 0:
            self._finish(None)
            return
        self._reading = True
        self._sizes.give(self._holding)
        self._holding = self._sizes.take()
        d = deferToThreadPool(self._reactor, self._pool, self._fileobj.read,
                              min(self._holding, self._remaining))
        d.addCallbacks(self._gotData, self._readFailed)

    def _gotData(self, data: bytes) -> None:
        self._reading = False
        if self._stopped:
            self._close()
            return
        if not data:
            self._finish(Failure(StoreError("stored image is shorter than its size")))
            return
        self._remaining -= len(data)
        self._consumer.write(data)
        self._readNext()

    def _readFailed(self, reason: Failure) -> None:
        self._reading = False
        self._finish(Failure(StoreError("reading the stored image failed")))

    def _finish(self, result) -> None:
        self._stopped = True
        self._close()
        d, self._done = self._done, None
        if d is not None:
            if result is None:
                d.callback(None)
            else:
                d.errback(result)

    def _close(self) -> None:
        self._sizes.give(self._holding)
        self._holding = 0
        f, self._fileobj = self._fileobj, None
        if f is not None:
            deferToThreadPool(self._reactor, self._pool, f.close)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._readNext()

    def stopProducing(self) -> None:
        self._stopped = True
        self._done = None
        # The consumer (a request) and this reader refer to each other
        # until the request's connection is collected.
        self._consumer = None
        if not self._reading:
            self._close()


#: A disk, or a quota, with no room left.
_FULL = (errno.ENOSPC, errno.EDQUOT)


def _writeFailed(error: OSError, what: str) -> Exception:
    """
    What a failed write of an image's file is to the upload: no room left
    is Glance's 413 (the client's to deal with, not a store that is down
    for it to try again at once); anything else is the store's failure.
    """
    if error.errno in _FULL:
        return UploadFailed(413, "Image storage media is full: %s" % (error.strerror,))
    return StoreError("%s: %s" % (what, error.strerror))


@implementer(IStore)
@attr.s(eq=False)
class FilesystemStore:
    """
    Image files named by image id in C{directory}.
    """

    log = Logger()
    name = "file"
    #: A failed upload's file is removed at once, on this machine.
    sweptAfterFailure = False
    schemes = ("file",)
    writable = True

    directory: str = attr.ib(converter=os.path.abspath)
    _reactor = attr.ib()
    _pool = attr.ib()
    #: Upload memory shared with the other stages of every upload in flight.
    _budget: SharedBudget = attr.ib(factory=lambda: SharedBudget(total=0))
    #: Write around the page cache where the filesystem allows (see
    #: L{glancetx.store.appendfile}).
    directIO: bool = attr.ib(default=True)
    #: Reads each image written around the cache into it once its upload
    #: has ended (L{glancetx.store.cachewarm.CacheWarmer}); None for none.
    warmer = attr.ib(default=None)
    #: Flush a file written around the cache as it goes, in the writer's
    #: idle moments (L{glancetx.store.appendfile}), not only at the end.
    earlyFlush: bool = attr.ib(default=True)
    _readSizes: ReadSizes = attr.ib(factory=ReadSizes, init=False)

    def _run(self, f, *args, **kwargs) -> Deferred:
        return deferToThreadPool(self._reactor, self._pool, f, *args, **kwargs)

    def _pathFor(self, location: str) -> str:
        prefix = "file://"
        if not location.startswith(prefix):
            raise BadLocation("not a file location")
        path = os.path.abspath(location[len(prefix):])
        if os.path.dirname(path) != self.directory:
            raise BadLocation("file location outside the store directory")
        return path

    def prepare(self) -> None:
        """
        Create the directory (start-up time, before the reactor runs), and
        remove temporary files a crashed process left behind.
        """
        try:
            os.makedirs(self.directory, exist_ok=True)
            # Glance's store refused a directory it cannot write to at
            # start, as this does; every upload would otherwise get a 503.
            probe = os.path.join(self.directory, ".glancetx-probe-" + uuid.uuid4().hex)
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
            entries = os.listdir(self.directory)
        except OSError as e:
            raise ConfigError("filesystem_store_datadir: cannot write in %s: %s"
                              % (self.directory, e.strerror))
        for entry in entries:
            if ".part-" not in entry:
                continue
            part = os.path.join(self.directory, entry)
            try:
                # Not one another process sharing the directory still writes.
                removeIfAbandoned(part)
            except OSError as e:
                self.log.warn("could not remove the partial file {part} of an upload"
                              " that did not finish: {why}", part=part, why=e.strerror)

    @fromCoroutine
    async def add(self, image_id: str, body) -> StoredImage:
        final = self._finalPath(image_id)
        temp = "%s.part-%s" % (final, uuid.uuid4().hex)
        try:
            file = await self._run(AppendFile.create, temp, self.directIO,
                                   earlyFlush=EARLY_FLUSH if self.earlyFlush else 0)
        except OSError as e:
            raise _writeFailed(e, "cannot create image file")
        share = self._budget.join()
        writer = _FileWriter(file, self._reactor, self._pool, share)
        writer.registerProducer(body, True)
        try:
            await firstOf(body.startProducing(writer), writer.failed)
            writer.unregisterProducer()
            await writer.drain()
            # Whether the bytes went around the cache; the commit writes
            # the last part-block through it.
            aroundCache = file.direct
            await self._run(_commit, file, temp, final)
        except BaseException as e:
            # A disk job may still be writing: the file is closed after it.
            await writer.abandon()
            kept = await self._run(_discard, file, temp, final)
            error = _writeFailed(e, "writing the image failed") if isinstance(e, OSError) else e
            if kept is not None:
                # The upload's own error is what its client hears; what
                # stays is a reaper's to remove (see IStore.add).
                self.log.warn("could not remove the partial file of image {image_id}: {why}",
                              image_id=image_id, why=kept.strerror)
                error.leftInStore = True
            raise error
        finally:
            share.leave()
        if aroundCache and self.warmer is not None:
            self.warmer.warm(final)
        return StoredImage(location="file://" + final, size=writer.written)

    def _finalPath(self, image_id: str) -> str:
        """
        Where an image's file lives: in the directory itself, never beside it.
        """
        final = os.path.join(self.directory, image_id)
        if os.path.dirname(final) != self.directory:
            raise BadLocation("bad image id")
        return final

    @fromCoroutine
    async def removeAbandoned(self, image_id: str, retry: bool = True) -> None:
        try:
            await self._run(_removeAbandoned, self._finalPath(image_id))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _removalRefused(e, "cannot remove what the upload of image %s left"
                                  % (image_id,))

    @fromCoroutine
    async def get(self, location: str):
        """
        A reader of the file, opened now: an image deleted after this, while
        its answer's head goes out, is still served whole from it.
        """
        path = self._pathFor(location)
        try:
            f, size = await self._run(_openWithSize, path)
        except FileNotFoundError:
            raise LocationNotFound("no image file")
        except OSError as e:
            raise StoreError("opening the stored image failed: %s" % (e.strerror,))
        return _FileReader(f, size, self._reactor, self._pool, sizes=self._readSizes)

    @fromCoroutine
    async def get_size(self, location: str) -> int:
        path = self._pathFor(location)
        try:
            st = await self._run(os.stat, path)
        except FileNotFoundError:
            raise LocationNotFound("no image file")
        return st.st_size

    @fromCoroutine
    async def delete(self, location: str) -> None:
        path = self._pathFor(location)
        try:
            await self._run(_unlinkQuietly, path)
        except OSError as e:
            raise _removalRefused(e, "cannot remove the image file")


def _removalRefused(error: OSError, what: str) -> StoreUnavailable:
    """
    A disk that refuses a removal (gone read-only, its permissions
    changed) may take it later, once an operator has mended it: so it is
    the store being unavailable, which a scrubber or reaper retries.
    """
    return StoreUnavailable("%s: %s" % (what, error.strerror))


def _openWithSize(path: str):
    f = open(path, "rb", buffering=0)
    return f, os.fstat(f.fileno()).st_size


def _commit(file: AppendFile, temp: str, final: str) -> None:
    """
    Make the written file durable, then give it its real name.
    """
    # Renamed while still open and claimed, so that no other process's
    # sweep can take it for a dead one's leftover in between.
    file.sync()
    os.rename(temp, final)
    # From here a failure leaves the file under its final name, which the
    # caller's discard removes too.
    file.close()
    dirfd = os.open(os.path.dirname(final), os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def _discard(file: Optional[AppendFile], temp: str, final: str) -> Optional[OSError]:
    """
    Close and remove the file of an upload that failed, under its
    temporary name or, if the commit got as far as the rename, its final
    one (no other upload writes an image's file: one at a time, and only
    into a queued image).  Returns the error that kept a file in place.
    """
    kept = None
    for f, path in ((file, temp), (None, final)):
        try:
            discard(f, path)
        except OSError as e:
            kept = e
    return kept


def _removeAbandoned(final: str) -> None:
    """
    A dead upload's temporary files (unless a live writer holds one), and
    its file if it was renamed into place before the registry heard of it.
    """
    directory, name = os.path.split(final)
    partial = name + ".part-"
    with os.scandir(directory) as entries:
        names = [e.name for e in entries if e.name.startswith(partial)]
    for part in names:
        removeIfAbandoned(os.path.join(directory, part))
    _unlinkQuietly(final)


def _unlinkQuietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
