import ctypes
import errno
import fcntl
import os
import random

from twisted.trial.unittest import SkipTest, TestCase

from glancetx.store import appendfile
from glancetx.store.appendfile import ALIGN, AppendFile, StagingBuffers, discard


def _unevenChunks(seed: int, total: int):
    """
    Chunks of awkward sizes, as a socket hands them over.
    """
    rnd = random.Random(seed)
    chunks = []
    while total > 0:
        n = min(total, rnd.choice([1, 7, 511, 4095, 4097, 65536, 262144 + 3, 300001]))
        chunks.append(rnd.randbytes(n))
        total -= n
    return chunks


class AppendFileTests(TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "image.part")
        # Small buffers, so a few hundred KiB crosses many of them.
        self.staging = StagingBuffers(64 * 1024)

    def create(self, direct=True):
        if direct:
            self.requireDirectIO()
        f = AppendFile.create(self.path, direct, self.staging)
        self.addCleanup(f.close)
        return f

    def requireDirectIO(self):
        """
        Skip unless this filesystem takes O_DIRECT, asked without the code
        under test.
        """
        probe = os.path.join(self.dir, "probe")
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT))
        except OSError:
            raise SkipTest("this filesystem refuses O_DIRECT")
        finally:
            if os.path.exists(probe):
                os.unlink(probe)

    def contents(self):
        with open(self.path, "rb") as f:
            return f.read()

    def writeJobs(self, f, chunks, jobs):
        """
        Append C{chunks} in C{jobs} disk jobs of uneven size.
        """
        step = max(1, len(chunks) // jobs)
        for i in range(0, len(chunks), step):
            f.append(chunks[i:i + step])

    def test_directWritesAroundThePageCache(self):
        """
        The file is open with O_DIRECT while it is written, and the bytes,
        unaligned chunks carried across jobs and buffers, come out exact.
        """
        chunks = _unevenChunks(1, 700001)
        f = self.create()
        self.assertTrue(fcntl.fcntl(f.fd, fcntl.F_GETFL) & os.O_DIRECT)
        self.writeJobs(f, chunks, 9)
        self.assertEqual(f.offset % ALIGN, 0)
        self.assertTrue(f.direct)
        f.commit()
        self.assertEqual(self.contents(), b"".join(chunks))

    def test_exactMultipleNeedsNoTail(self):
        f = self.create()
        data = os.urandom(3 * 64 * 1024)
        f.append([data])
        f.commit()
        self.assertEqual(self.contents(), data)

    def test_onlyATail(self):
        f = self.create()
        f.append([b"abc"])
        f.append([b"", b"de"])
        self.assertEqual(f.offset, 0)
        f.commit()
        self.assertEqual(self.contents(), b"abcde")

    def test_oneStagingBufferForSequentialJobs(self):
        """
        Jobs give their buffer back, so one upload's many jobs use one.
        """
        f = self.create()
        self.writeJobs(f, _unevenChunks(2, 400000), 20)
        f.commit()
        self.assertEqual(self.staging.made, 1)

    def test_buffered(self):
        chunks = _unevenChunks(3, 300000)
        f = AppendFile.create(self.path, False, self.staging)
        self.assertFalse(fcntl.fcntl(f.fd, fcntl.F_GETFL) & os.O_DIRECT)
        self.writeJobs(f, chunks, 5)
        self.assertEqual(f.offset, 300000)
        f.commit()
        self.assertEqual(self.contents(), b"".join(chunks))
        self.assertEqual(self.staging.made, 0)

    def test_openRefused(self):
        """
        A filesystem that refuses O_DIRECT at open gets buffered writes.
        """
        realOpen = os.open

        def refuseDirect(path, flags, *a):
            if flags & os.O_DIRECT:
                raise OSError(errno.EINVAL, "Invalid argument")
            return realOpen(path, flags, *a)
        self.patch(os, "open", refuseDirect)
        f = AppendFile.create(self.path, True, self.staging)
        self.addCleanup(f.close)
        self.assertFalse(f.direct)
        f.append([b"x" * 5000])
        f.commit()
        self.assertEqual(self.contents(), b"x" * 5000)

    def test_firstWriteRefused(self):
        """
        A filesystem that takes the flag but refuses the first direct write
        gets the same bytes written buffered.
        """
        f = self.create()
        realWrite = os.write
        refused = []

        def refuseOnce(fd, data):
            if not refused:
                refused.append(len(data))
                raise OSError(errno.EINVAL, "Invalid argument")
            return realWrite(fd, data)
        self.patch(os, "write", refuseOnce)
        f.append([b"a" * 10, b"b" * 70000])
        f.append([b"c" * 100])
        self.assertFalse(f.direct)
        self.assertFalse(fcntl.fcntl(f.fd, fcntl.F_GETFL) & os.O_DIRECT)
        f.commit()
        self.assertEqual(refused, [64 * 1024])
        self.assertEqual(self.contents(), b"a" * 10 + b"b" * 70000 + b"c" * 100)

    def test_laterErrorsRaise(self):
        """
        Only a refusal before anything is written falls back: a later
        error (a full disk, say) fails the upload.
        """
        f = self.create()
        f.append([b"a" * 70000])
        self.patch(os, "write", lambda fd, data: (_ for _ in ()).throw(
            OSError(errno.ENOSPC, "No space left on device")))
        e = self.assertRaises(OSError, f.append, [b"b" * 70000])
        self.assertEqual(e.errno, errno.ENOSPC)
        self.assertEqual(self.staging.made, 1)  # the buffer came back

    def test_commitFsyncs(self):
        synced = []
        realFsync = os.fsync
        self.patch(appendfile.os, "fsync", lambda fd: synced.append(fd) or realFsync(fd))
        f = self.create()
        fd = f.fd
        f.append([b"q" * 5000])
        f.commit()
        self.assertEqual(synced, [fd])
        self.assertEqual(f.fd, -1)

    def recordFlushes(self):
        flushed = []
        realFdatasync = os.fdatasync
        self.patch(appendfile.os, "fdatasync",
                   lambda fd: flushed.append(fd) or realFdatasync(fd))
        return flushed

    def test_flushBehind(self):
        """
        A direct file flushes once C{earlyFlush} bytes are unflushed, and
        counts from what it flushed last.
        """
        flushed = self.recordFlushes()
        f = self.create()
        f.earlyFlush = 128 * 1024
        f.append([b"a" * (100 * 1024)])
        f.flushBehind()
        self.assertEqual(flushed, [])
        f.append([b"b" * (40 * 1024)])
        f.flushBehind()
        self.assertEqual(flushed, [f.fd])
        f.append([b"c" * (100 * 1024)])
        f.flushBehind()
        self.assertEqual(flushed, [f.fd])
        f.commit()
        self.assertEqual(self.contents(), b"a" * (100 * 1024) + b"b" * (40 * 1024) + b"c" * (100 * 1024))

    def test_flushBehindOff(self):
        flushed = self.recordFlushes()
        f = self.create()
        f.append([b"a" * (300 * 1024)])
        f.flushBehind()
        self.assertEqual(flushed, [])

    def test_flushBehindBuffered(self):
        """
        A buffered file's writeback is already under way: no early flush.
        """
        flushed = self.recordFlushes()
        f = self.create(direct=False)
        f.earlyFlush = 4096
        f.append([b"a" * (300 * 1024)])
        f.flushBehind()
        self.assertEqual(flushed, [])

    def test_flushBehindFails(self):
        """
        A failed flush raises: the upload fails now, not on an fsync that
        might not see the error again.
        """
        f = self.create()
        f.earlyFlush = 4096
        f.append([b"a" * 8192])
        self.patch(appendfile.os, "fdatasync", lambda fd: (_ for _ in ()).throw(
            OSError(errno.EIO, "Input/output error")))
        e = self.assertRaises(OSError, f.flushBehind)
        self.assertEqual(e.errno, errno.EIO)

    def test_createPassesEarlyFlush(self):
        f = AppendFile.create(self.path, False, self.staging, earlyFlush=12345)
        self.addCleanup(f.close)
        self.assertEqual(f.earlyFlush, 12345)

    def test_discard(self):
        f = self.create()
        f.append([b"q" * 5000])
        discard(f, self.path)
        self.assertFalse(os.path.exists(self.path))
        self.assertEqual(f.fd, -1)
        discard(None, self.path)  # nothing there: no error


def _address(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def _hugePagesOffered() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            setting = f.read()
    except OSError:
        return False
    return "[never]" not in setting


def _anonHugeKiB(address: int) -> int:
    """
    The AnonHugePages of the mapping that holds C{address}, from
    /proc/self/smaps.
    """
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and head == "AnonHugePages:":
                return int(line.split()[1])
    return 0


class StagingBuffersTests(TestCase):
    def test_alignedAndDistinct(self):
        """
        Buffers are the asked size, start on an O_DIRECT boundary, and no
        two lent at once share a byte.
        """
        staging = StagingBuffers(1024 * 1024)
        bufs = [staging.take() for _ in range(5)]
        spans = sorted((_address(b), _address(b) + len(b)) for b in bufs)
        for b in bufs:
            self.assertEqual(len(b), 1024 * 1024)
            self.assertEqual(_address(b) % ALIGN, 0)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            self.assertLessEqual(end, start)
        self.assertEqual(staging.made, 5)

    def test_givenBackIsReused(self):
        staging = StagingBuffers(1024 * 1024)
        first = staging.take()
        staging.give(first)
        self.assertIs(staging.take(), first)
        self.assertEqual(staging.made, 1)

    def test_sizeMustBeAligned(self):
        self.assertRaises(ValueError, StagingBuffers, ALIGN + 1)

    def test_adviceRefused(self):
        """
        Where the kernel refuses the huge-page advice, buffers are ordinary
        memory and work the same.
        """
        self.patch(appendfile, "_MADV_HUGEPAGE", 0x7FFF)  # no such advice: EINVAL
        buf = StagingBuffers(64 * 1024).take()
        buf[:5] = b"hello"
        self.assertEqual(bytes(buf[:5]), b"hello")
        self.assertEqual(_address(buf) % ALIGN, 0)

    def test_hugePageBacked(self):
        """
        Where transparent huge pages are on, a buffer is one huge page: one
        segment per direct write instead of one per 4 KiB page.
        """
        if not _hugePagesOffered() or appendfile._MADV_HUGEPAGE is None:
            raise SkipTest("no transparent huge pages on this kernel")
        buf = StagingBuffers(1024 * 1024).take()
        self.assertEqual(_address(buf) % appendfile.HUGE_PAGE, 0)
        buf[:] = b"x" * len(buf)  # the first touch faults the page in
        self.assertGreaterEqual(_anonHugeKiB(_address(buf)), 2048)


class WriteChunksTests(TestCase):
    """
    The buffered path's gathered writes, when the kernel takes less than
    it was given (a signal, the last blocks of a full disk).
    """

    def writeAll(self, chunks, most: int):
        realWritev = os.writev
        calls = []

        def shortWritev(fd, buffers):
            calls.append(len(buffers))
            return realWritev(fd, [b"".join(buffers)[:most]])

        self.patch(os, "writev", shortWritev)
        path = self.mktemp()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            total = appendfile._writeChunks(fd, chunks)
        finally:
            os.close(fd)
        with open(path, "rb") as f:
            return total, f.read(), calls

    def test_partialWritesKeepTheirTails(self):
        """
        Every byte lands once, in order, when each call writes only part of
        a chunk or stops between chunks.
        """
        chunks = [b"abcdefghij", b"k", b"", b"lmnopqrstuvwxyz0123"]
        total, written, calls = self.writeAll(chunks, 7)
        self.assertEqual((total, written), (30, b"".join(chunks)))
        self.assertEqual(len(calls), 5)

    def test_moreChunksThanOneCallTakes(self):
        """
        Past IOV_MAX chunks, the calls go on from where the last one ended.
        """
        chunks = _unevenChunks(7, 3 * 1024 * 1024)
        chunks += [b"%d" % i for i in range(appendfile._IOV_MAX + 5)]
        total, written, calls = self.writeAll(chunks, 1000003)
        self.assertEqual(written, b"".join(chunks))
        self.assertEqual(total, len(written))
        self.assertLessEqual(max(calls), appendfile._IOV_MAX)
