"""
An image file being written: appended to by disk-thread jobs, then made
durable.  Only disk threads call in here, one job of a file at a time.

Where the filesystem takes it, the file is written around the page cache
(C{O_DIRECT}).  On this project's two-core machines, writing 1 GiB through
the page cache, with the early writeback and the fsync that make it
durable before the image turns active, cost 0.4-2.5 s of kernel CPU (the
copy into the cache, then the writeback, both on the cores that also hash
and read the socket); written with C{O_DIRECT} from an aligned buffer the
same gigabyte cost about 0.15 s, and the fsync found nothing left to
write.  An image of many gigabytes also no longer pushes every other file
out of the page cache (Swift drops large objects from it for the same
reason).

C{O_DIRECT} wants the buffer's address, the file offset and the length
aligned to the device's block.  Bytes read off a socket are not, so each job
copies its chunks into an aligned staging buffer (a memcpy: a few
hundredths of a second per GiB) and writes whole blocks; the last part-block
of the image is written without C{O_DIRECT} when it is committed.  A
filesystem that refuses C{O_DIRECT} (tmpfs, some network filesystems) gets
buffered writes with early writeback instead.

The staging buffers are cut from transparent huge pages where the kernel
gives them.  A direct write hands the device one segment per physically
contiguous run of the buffer; an ordinary 1 MiB buffer is 128 to 256
scattered pages.  On this project's virtual disks (virtio, at most 254
segments a request) the cost of a write grew with its segments: 1 MiB
direct writes ran at ~450 MiB/s from a buffer of 256 separate pages, ~950
from one whose pages came in pairs, and ~3,000 from a huge page, which is
one segment.  Which kind a process got was luck, fixed for its life, so
identical servers wrote at 400 or 1,000 MiB/s for as long as they ran.

A direct write is not yet durable: a virtual disk's host may hold it in
its own cache until the guest flushes.  On this project's Firecracker
machines the 1 MiB direct writes of a whole gigabyte returned in 0.3 s,
and the fsync before the image turned active then waited 0.5-0.9 s while
the host wrote it all out, with the hashing long finished: a third of the
upload's time.  The device serves one request at a time, so flushing
sooner costs the same device time, but it can be spent while MD5, the
slower stage, still runs.  So a direct file may flush early
(L{AppendFile.flushBehind}) whenever its writer has nothing queued and a
few MiB are unflushed: each flush is short enough (about 1 ms per MiB
there) for the upload budget to absorb.  Measured there, 12 uploads of
1 GiB a side: 510 MiB/s (485-541) against 378 (344-547).  Flushing on a
fixed schedule instead, whatever the writer's queue held, gained less and
not every time, and on another such machine, where each flush held the
writes behind it for 10-50 ms, it lost (274-286 against 287-307);
C{filesystem_store_early_flush} turns early flushes off.
"""

import ctypes
import errno
import fcntl
import mmap
import os
from typing import List, Optional, Sequence

#: The alignment C{O_DIRECT} needs: a multiple of any device's logical
#: block (512 bytes or 4 KiB) and the size of a memory page.
ALIGN = 4096
#: One direct write.  Measured here: 256 KiB writes ran at ~1.3 GB/s, 1 MiB
#: ones at 1.6-2.0 GB/s, several times what an upload needs.
STAGING_SIZE = 1024 * 1024
#: The least a direct file leaves unflushed before it flushes early: more
#: than a few flushes' fixed cost, less than the upload budget absorbs.
#: Measured on the machine of the docstring: 2 MiB as fast, 8 MiB 9% slower.
EARLY_FLUSH = 4 * 1024 * 1024
#: Linux's IOV_MAX; os.writev refuses longer lists.
_IOV_MAX = 1024
#: Absent from Python builds for systems without it.
_O_DIRECT = getattr(os, "O_DIRECT", 0)


def _loadSyncFileRange():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        f = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    f.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    f.restype = ctypes.c_int
    return f


#: Linux's sync_file_range(2), for buffered writes: it starts writeback of
#: what was just written without waiting for it, so the disk works while
#: the rest of the image arrives and the fsync before the rename finds
#: little left to do.
_syncFileRange = _loadSyncFileRange()
_SYNC_FILE_RANGE_WRITE = 2


#: The huge page size the staging memory is laid out for (x86-64, arm64
#: with 4 KiB pages).  Elsewhere the advice is merely not taken.
HUGE_PAGE = 2 * 1024 * 1024
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)


def hugePageRegion(size: int) -> memoryview:
    """
    At least C{size} bytes of private anonymous memory, starting on a huge
    page boundary and advised to be backed by huge pages.  (Python's
    C{mmap(-1, n)} is shared memory, which the kernel backs with huge pages
    only when shmem is configured to; private memory follows the usual
    C{transparent_hugepage} setting, C{madvise} or C{always} on most
    distributions.)
    """
    length = -(-size // HUGE_PAGE) * HUGE_PAGE
    region = mmap.mmap(-1, length + HUGE_PAGE,
                       flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = (-ctypes.addressof(ctypes.c_char.from_buffer(region))) % HUGE_PAGE
    if _MADV_HUGEPAGE is not None:
        try:
            region.madvise(_MADV_HUGEPAGE, start, length)
        except OSError:
            pass  # no transparent huge pages here: ordinary pages
    # The pages before C{start} and after the end are never touched, so
    # they cost address space, not memory.
    return memoryview(region)[start:start + length]


class StagingBuffers:
    """
    Aligned buffers lent to one job at a time.  A job returns its buffer
    when it ends, so there are never more lent than the disk jobs running
    at once (one for a lone upload, at most the disk pool's size however
    many uploads there are) and their memory does not grow with the
    uploads.  Buffers are cut from huge-page regions, two 1 MiB buffers to
    a region, and a huge page is resident whole once touched, so a lone
    upload makes 2 MiB resident, not 1.
    """

    def __init__(self, size: int = STAGING_SIZE) -> None:
        if size % ALIGN:
            raise ValueError("staging buffers must be a multiple of %d bytes" % (ALIGN,))
        self.size = size
        self._free: List[memoryview] = []
        self._unused: List[memoryview] = []
        #: Buffers lent for the first time so far.
        self.made = 0

    def take(self) -> memoryview:
        # list.pop and list.extend are atomic: jobs on other threads share
        # the lists, and two that find both empty each cut a region.
        try:
            return self._free.pop()
        except IndexError:
            pass
        try:
            buf = self._unused.pop()
        except IndexError:
            region = hugePageRegion(self.size)
            pieces = [region[i:i + self.size]
                      for i in range(0, len(region) - self.size + 1, self.size)]
            buf = pieces.pop(0)
            self._unused.extend(reversed(pieces))
        self.made += 1
        return buf

    def give(self, buf: memoryview) -> None:
        self._free.append(buf)


_staging = StagingBuffers()


class AppendFile:
    """
    One new file, appended to in order by disk jobs and committed (or
    discarded) at the end.
    """

    def __init__(self, fd: int, direct: bool, staging: StagingBuffers = _staging,
                 earlyFlush: int = 0) -> None:
        self.fd = fd
        self.direct = direct
        self._staging = staging
        #: Unflushed bytes that make L{flushBehind} flush; 0 for never.
        self.earlyFlush = earlyFlush
        #: Written so far (the file's length).
        self.offset = 0
        #: Written and flushed (or being flushed) so far.
        self._flushed = 0
        #: The part-block a direct file has not written yet.
        self._carry = b""

    @classmethod
    def create(cls, path: str, direct: bool = True,
               staging: StagingBuffers = _staging, earlyFlush: int = 0) -> "AppendFile":
        """
        Create C{path}, which must not exist, for writing: with C{O_DIRECT}
        when C{direct} is asked for and the filesystem takes it.
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        file = None
        if direct and _O_DIRECT:
            try:
                file = cls(os.open(path, flags | _O_DIRECT, 0o640), True, staging, earlyFlush)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
        if file is None:
            file = cls(os.open(path, flags, 0o640), False, staging, earlyFlush)
        _claim(file.fd)
        return file

    def append(self, chunks: Sequence[bytes]) -> None:
        """
        Write C{chunks} after what is already written.
        """
        if self.direct:
            try:
                self._appendDirect(chunks)
                return
            except OSError as e:
                # Some filesystems accept the flag at open and refuse the
                # write; nothing has been written when the first one does.
                if e.errno != errno.EINVAL or self.offset:
                    raise
                self._stopDirect()
        self._appendBuffered(chunks)

    def flushBehind(self) -> None:
        """
        Flush a direct file now if at least C{earlyFlush} bytes are
        unflushed, so that the host's cache is written out while the upload
        still arrives rather than in the fsync at its end.  (A buffered
        file already starts its writeback as it goes.)  A failed flush
        raises, which fails the upload: its error is not left for the
        final fsync, which might not see it again.
        """
        if self.direct and self.earlyFlush and self.offset - self._flushed >= self.earlyFlush:
            self._flushed = self.offset
            os.fdatasync(self.fd)

    def sync(self) -> None:
        """
        Write what is left and make the whole file durable; the file stays
        open (and claimed) until L{close}.
        """
        if self._carry:
            self._stopDirect()
            self._appendBuffered([])
        os.fsync(self.fd)

    def commit(self) -> None:
        """
        L{sync}, then close.
        """
        try:
            self.sync()
        finally:
            self.close()

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def _stopDirect(self) -> None:
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~_O_DIRECT)
        self.direct = False

    def _appendBuffered(self, chunks: Sequence[bytes]) -> None:
        carry, self._carry = self._carry, b""
        pieces = [carry, *chunks] if carry else list(chunks)
        total = _writeChunks(self.fd, pieces)
        if _syncFileRange is not None and total:
            _syncFileRange(self.fd, self.offset, total, _SYNC_FILE_RANGE_WRITE)
        self.offset += total

    def _appendDirect(self, chunks: Sequence[bytes]) -> None:
        staged = self._staging.take()
        try:
            fill = len(self._carry)
            staged[:fill] = self._carry
            size = len(staged)
            for chunk in chunks:
                piece = memoryview(chunk)
                while piece:
                    n = min(len(piece), size - fill)
                    staged[fill:fill + n] = piece[:n]
                    fill += n
                    piece = piece[n:]
                    if fill == size:
                        self._writeStaged(staged)
                        fill = 0
            whole = fill - fill % ALIGN
            if whole:
                self._writeStaged(staged[:whole])
            self._carry = bytes(staged[whole:fill])
        finally:
            self._staging.give(staged)

    def _writeStaged(self, view: memoryview) -> None:
        while view:
            n = os.write(self.fd, view)
            self.offset += n
            view = view[n:]


def _writeChunks(fd: int, chunks: List[bytes]) -> int:
    """
    Write every chunk, in order, with as few system calls as possible and
    no copy; return how many bytes that was.
    """
    views = [memoryview(c) for c in chunks]
    total = sum(len(v) for v in views)
    first = 0
    while first < len(views):
        written = os.writev(fd, views[first:first + _IOV_MAX])
        # Skip what was written; keep the unwritten tail of a partial write.
        while written:
            size = len(views[first])
            if written >= size:
                written -= size
                first += 1
            else:
                views[first] = views[first][written:]
                written = 0
    return total


def _claim(fd: int) -> None:
    """
    Hold an exclusive lock on a file being written, for as long as it is
    open: a process that sweeps the directory for the leftovers of a dead
    one (L{removeIfAbandoned}) then knows this file is not one.  Locks go
    with the descriptor, so a process that dies releases its own.  Where
    the filesystem has no locks, nothing is held.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            raise


def removeIfAbandoned(path: str) -> bool:
    """
    Remove a partly written file unless its writer is still alive (holds
    its lock, see L{_claim}).  Whether it was removed.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
        os.unlink(path)
        return True
    finally:
        os.close(fd)


def discard(file: Optional[AppendFile], path: str) -> None:
    """
    Close and remove a file that will not be committed.  A removal the
    disk refuses raises (the caller decides what stays behind).
    """
    if file is not None:
        try:
            file.close()
        except OSError:
            pass
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
