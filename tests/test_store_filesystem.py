import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SkipTest, TestCase

from glancetx.budget import SharedBudget
from glancetx.store import filesystem
from glancetx.store.filesystem import FilesystemStore
from glancetx.store.interface import BadLocation, StoreError, UploadFailed
from tests.bodies import BytesBody, CollectingConsumer, PushBody, RecordingProducer
from tests.store_contract import StoreContractMixin
from tests.test_drain import FakeReactor, recordJobs, runJob


MiB = 1024 * 1024


class FilesystemStoreTests(StoreContractMixin, TestCase):
    def makeStore(self, budget=None):
        self.dir = self.mktemp()
        pool = ThreadPool(1, 2, name="test-disk")
        pool.start()
        self.addCleanup(pool.stop)
        store = FilesystemStore(self.dir, reactor, pool, budget or SharedBudget(total=0))
        store.prepare()
        return store

    def leftovers(self):
        return [n for n in os.listdir(self.dir) if ".part-" in n]

    def test_directoryItCannotWriteIn(self):
        """
        A store directory that is a file, or that cannot be written to, is
        refused at start in one line naming the option, as Glance's store
        refused it: it was a traceback, or a server whose every upload got
        a 503.  Nothing is left behind by the check.
        """
        from glancetx.errors import ConfigError
        path = os.path.abspath(self.mktemp())
        with open(path, "w"):
            pass
        store = FilesystemStore(path, reactor, None, SharedBudget(total=0))
        e = self.assertRaises(ConfigError, store.prepare)
        self.assertEqual(str(e), "filesystem_store_datadir: cannot write in %s: File exists"
                         % (path,))
        self.makeStore()
        self.assertEqual(os.listdir(self.dir), [])

    def leaveAbandonedUpload(self, store, imageId):
        for name in (imageId + ".part-1", imageId + ".part-2", imageId):
            with open(os.path.join(self.dir, name), "wb") as f:
                f.write(b"x" * 1000)

    def holds(self, store, imageId):
        return os.path.exists(os.path.join(self.dir, imageId))

    def test_removeAbandonedSparesLiveWriters(self):
        """
        A part file whose writer still holds its lock is not an abandoned
        one (the registry said the upload died, but the lock says more
        surely that it did not), and neither is another image's.
        """
        from glancetx.store.appendfile import AppendFile
        store = self.makeStore()
        live = os.path.join(self.dir, "img.part-1")
        writing = AppendFile.create(live, direct=False)
        self.addCleanup(writing.close)
        other = os.path.join(self.dir, "img2.part-1")
        with open(other, "wb") as f:
            f.write(b"x")

        async def go():
            await store.removeAbandoned("img")
            self.assertEqual(sorted(self.leftovers()), ["img.part-1", "img2.part-1"])
            with self.assertRaises(BadLocation):
                await store.removeAbandoned("../img")
        return ensureDeferred(go())

    def test_locationOutsideDirectoryRefused(self):
        store = self.makeStore()
        self.assertRaises(BadLocation, store._pathFor, "file:///etc/passwd")
        self.assertRaises(BadLocation, store._pathFor, "file://" + self.dir + "/../x")

    def test_prepareRemovesStaleParts(self):
        store = self.makeStore()
        with open(os.path.join(self.dir, "abc.part-123"), "w") as f:
            f.write("x")
        store.prepare()
        self.assertEqual(self.leftovers(), [])

    def test_prepareWithAPartItCannotRemove(self):
        """
        A dead upload's part file that the start's sweep cannot remove
        (another user's, on a shared directory) is left, and said in the
        log; the start goes on.  It was a traceback, and no start.
        """
        from twisted.logger import globalLogPublisher
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        store = self.makeStore()
        with open(os.path.join(self.dir, "abc.part-123"), "w") as f:
            f.write("x")
        realUnlink = os.unlink

        def refuse(path, *args, **kwargs):
            if path.endswith(".part-123"):
                raise OSError(13, "Permission denied")
            return realUnlink(path, *args, **kwargs)
        self.patch(filesystem.os, "unlink", refuse)
        store.prepare()
        self.assertEqual(self.leftovers(), ["abc.part-123"])
        said = [e for e in logged if e.get("log_level") is not None
                and e["log_level"].name == "warn"]
        self.assertEqual(len(said), 1, logged)
        self.assertIn("abc.part-123", said[0]["part"])
        self.assertEqual(said[0]["why"], "Permission denied")

    def test_prepareSparesPartsBeingWritten(self):
        """
        Processes sharing one image directory (NFS) each sweep it when they
        start: a part file another process is still writing (it holds a
        lock on it) is left alone, and one whose writer died is removed.
        """
        from glancetx.store.appendfile import AppendFile
        store = self.makeStore()
        live = os.path.join(self.dir, "live.part-1")
        writing = AppendFile.create(live, direct=False)
        self.addCleanup(writing.close)
        with open(os.path.join(self.dir, "dead.part-2"), "w") as f:
            f.write("x")
        store.prepare()
        self.assertEqual(self.leftovers(), ["live.part-1"])

    async def _addHolding(self, budget, body):
        """
        Add C{body} and report how many held the budget while it was written.
        """
        store = self.makeStore(budget)
        seen = []
        write = filesystem._writeAll

        def spy(*args):
            seen.append(budget.holders)
            return write(*args)
        self.patch(filesystem, "_writeAll", spy)
        try:
            await store.add(os.urandom(16).hex(), body)
        finally:
            self.assertEqual(budget.holders, 0)
        return seen

    def test_shareHeldWhileWritingOnly(self):
        """
        The writer holds a share of the upload budget while it writes, and
        gives it back when the image is stored, or when the upload fails.
        """
        async def go():
            budget = SharedBudget()
            seen = await self._addHolding(budget, BytesBody(reactor, b"x" * 300000))
            self.assertEqual(set(seen), {1})
            body = BytesBody(reactor, b"x" * 300000, failAfter=200000)
            with self.assertRaises(UploadFailed):
                await self._addHolding(budget, body)
        return ensureDeferred(go())

    def _addWarmed(self, directIO, body):
        """
        Store C{body} in a store that writes around the cache or not, and
        return what its warmer was asked to read.
        """
        warmed = []

        class RecordingWarmer:
            def warm(self, path):
                warmed.append(path)

        store = self.makeStore()
        store.directIO = directIO
        store.warmer = RecordingWarmer()

        async def go():
            imageId = os.urandom(16).hex()
            try:
                await store.add(imageId, body)
            except UploadFailed:
                pass
            return os.path.join(store.directory, imageId), warmed
        return ensureDeferred(go())

    def test_newImageWarmedWhenWrittenAroundTheCache(self):
        """
        An image written around the page cache is handed to the warmer once
        it is stored under its name; the bytes of a filesystem that refused
        O_DIRECT went through the cache already, and are not.
        """
        from glancetx.store.appendfile import AppendFile
        created = []
        realCreate = AppendFile.create

        def create(path, direct=True, *args, **kwargs):
            f = realCreate(path, direct, *args, **kwargs)
            created.append(f.direct)
            return f
        self.patch(AppendFile, "create", staticmethod(create))

        async def go():
            final, warmed = await self._addWarmed(True, BytesBody(reactor, b"x" * 300000))
            self.assertEqual(warmed, [final] if created[0] else [])
            self.assertTrue(os.path.exists(final))
        return ensureDeferred(go())

    async def storedReader(self, size: int):
        """
        An image of C{size} bytes stored, and a reader of it (the download
        path that TLS clients, and clients beyond the sendfile pool, take).
        """
        store = self.makeStore()
        data = os.urandom(size)
        stored = await store.add(self.imageId(), BytesBody(reactor, data))
        return data, os.path.join(self.dir, os.path.basename(stored.location)), \
            await store.get(stored.location)

    def test_manyDownloadsReadLess(self):
        """
        Downloads read through memory share a budget: 1 MiB reads while
        what they hold leaves room, then what room is left, down to 64
        KiB; so clients that stop reading (each holding its last read
        until it is closed) hold the budget and 64 KiB each at most, not
        1 MiB each.
        """
        async def go():
            store = self.makeStore()
            data = os.urandom(3 * filesystem.READ_SIZE)
            stored = await store.add(self.imageId(), BytesBody(reactor, data))
            store._readSizes.budget = 2 * filesystem.READ_SIZE

            async def stalled(count):
                # Readers whose clients take their first read and no more.
                readers, firsts = [], []
                for _ in range(count):
                    reader = await store.get(stored.location)
                    got = Deferred()

                    class Stalls(CollectingConsumer):
                        def write(self, chunk, got=got, reader=reader):
                            reader.pauseProducing()
                            got.callback(len(chunk))
                    reader.startProducing(Stalls())
                    readers.append(reader)
                    firsts.append(got)
                sizes = [await got for got in firsts]
                for reader in readers:
                    reader.stopProducing()
                return sizes
            self.assertEqual(await stalled(2), [filesystem.READ_SIZE] * 2)
            self.assertEqual(store._readSizes.held, 0)
            self.assertEqual(await stalled(40), [filesystem.READ_SIZE] * 2
                             + [filesystem.MIN_READ_SIZE] * 38)
            self.assertEqual(store._readSizes.held, 0)
            store._readSizes.budget = 2 * filesystem.READ_SIZE + 1000
            self.assertEqual(await stalled(3), [filesystem.READ_SIZE] * 2
                             + [filesystem.MIN_READ_SIZE])
            store._readSizes.budget = filesystem.READ_SIZE + 100000
            self.assertEqual(await stalled(3), [filesystem.READ_SIZE, 100000,
                                                filesystem.MIN_READ_SIZE])
            self.assertEqual(store._readSizes.held, 0)
            # A download alone reads the whole file in 1 MiB reads.
            reader = await store.get(stored.location)
            consumer = CollectingConsumer()
            await reader.startProducing(consumer)
            self.assertEqual([len(c) for c in consumer.chunks], [filesystem.READ_SIZE] * 3)
            self.assertEqual(store._readSizes.held, 0)
        return ensureDeferred(go())

    def test_readerRefusesAShortFile(self):
        """
        A file that turns out shorter than its recorded size fails the
        download rather than ending it as if it were whole.
        """
        async def go():
            data, path, reader = await self.storedReader(3 * filesystem.READ_SIZE)
            os.truncate(path, filesystem.READ_SIZE + 5)
            consumer = CollectingConsumer()
            with self.assertRaises(StoreError) as e:
                await reader.startProducing(consumer)
            self.assertIn("shorter than its size", str(e.exception))
            self.assertEqual(consumer.value(), data[:filesystem.READ_SIZE + 5])
        return ensureDeferred(go())

    def test_readerServesAFileDeletedAfterItOpened(self):
        """
        An image deleted while its answer's head goes out is still served
        whole: the reader opened its file when it was made.
        """
        async def go():
            data, path, reader = await self.storedReader(3 * filesystem.READ_SIZE)
            os.unlink(path)
            consumer = CollectingConsumer()
            await reader.startProducing(consumer)
            self.assertEqual(consumer.value(), data)
            self.assertEqual(reader.sendfileFile.closed if reader.sendfileFile else True, True)
        return ensureDeferred(go())

    def test_readerReadErrorIsAStoreError(self):
        class Failing:
            closed = False

            def read(self, n):
                raise OSError(5, "Input/output error")

            def close(self):
                self.closed = True

        async def go():
            data, path, reader = await self.storedReader(1000)
            reader.sendfileFile.close()
            reader._fileobj = Failing()
            with self.assertRaises(StoreError) as e:
                await reader.startProducing(CollectingConsumer())
            self.assertIn("reading the stored image failed", str(e.exception))
        return ensureDeferred(go())

    def test_openErrorIsAStoreError(self):
        async def go():
            store = self.makeStore()
            stored = await store.add(self.imageId(), BytesBody(reactor, b"abc"))
            path = os.path.join(self.dir, os.path.basename(stored.location))
            os.remove(path)
            os.mkdir(path)
            with self.assertRaises(StoreError) as e:
                await store.get(stored.location)
            self.assertIn("opening the stored image failed", str(e.exception))
        return ensureDeferred(go())

    def test_readerPausesResumesAndStops(self):
        """
        A paused reader reads nothing more until it is resumed; a stopped
        one reads nothing more at all.
        """
        async def go():
            data, path, reader = await self.storedReader(4 * filesystem.READ_SIZE)
            consumer = CollectingConsumer()
            consumer.write = lambda chunk: (consumer.chunks.append(chunk),
                                            reader.pauseProducing())
            done = reader.startProducing(consumer)
            await deferLater(reactor, 0.05, lambda: None)
            self.assertEqual(len(consumer.chunks), 1)
            reader.resumeProducing()
            await deferLater(reactor, 0.05, lambda: None)
            self.assertEqual(len(consumer.chunks), 2)
            consumer.write = consumer.chunks.append
            reader.resumeProducing()
            await done
            self.assertEqual(consumer.value(), data)

            _, _, reader = await self.storedReader(4 * filesystem.READ_SIZE)
            consumer = CollectingConsumer()
            consumer.write = lambda chunk: (consumer.chunks.append(chunk),
                                            reader.stopProducing())
            reader.startProducing(consumer)
            await deferLater(reactor, 0.05, lambda: None)
            reader.resumeProducing()
            await deferLater(reactor, 0.05, lambda: None)
            self.assertEqual(len(consumer.chunks), 1)
        return ensureDeferred(go())

    def test_diskErrorIsAStoreError(self):
        """
        A disk that refuses the bytes fails the upload with the store's own
        error, saying why, and leaves nothing behind.
        """
        from glancetx.store import appendfile

        def broken(self, chunks):
            raise OSError(5, "Input/output error")
        self.patch(appendfile.AppendFile, "append", broken)
        store = self.makeStore()

        async def go():
            with self.assertRaises(StoreError) as caught:
                await store.add(os.urandom(16).hex(), BytesBody(reactor, b"x" * (3 * MiB)))
            self.assertIn("Input/output error", str(caught.exception))
            self.assertEqual(os.listdir(self.dir), [])
        return ensureDeferred(go())

    def test_failureAfterTheRenameLeavesNothing(self):
        """
        A commit that fails once the file has its final name (the
        directory cannot be opened to make the name durable: no
        descriptors left) removes it: the failed upload's discard knew only
        the temporary name, so the file stayed.
        """
        realOpen = os.open
        store = self.makeStore()
        directory = os.path.abspath(self.dir)

        def noDescriptors(path, *args, **kwargs):
            if os.path.abspath(path) == directory:
                raise OSError(24, "Too many open files")
            return realOpen(path, *args, **kwargs)
        self.patch(filesystem.os, "open", noDescriptors)

        async def go():
            with self.assertRaises(StoreError):
                await store.add(os.urandom(16).hex(), BytesBody(reactor, b"x" * (3 * MiB)))
            self.assertEqual(os.listdir(self.dir), [])
        return ensureDeferred(go())

    def unremovable(self, errno_=30, strerror="Read-only file system"):
        """
        Make every removal in the store's directory fail, as on a disk that
        went read-only; returns a function that ends that.
        """
        realUnlink = os.unlink
        directory = os.path.abspath(self.dir)

        def refuse(path, *args, **kwargs):
            if os.path.dirname(os.path.abspath(path)) == directory:
                raise OSError(errno_, strerror)
            return realUnlink(path, *args, **kwargs)
        self.patch(filesystem.os, "unlink", refuse)
        return lambda: self.patch(filesystem.os, "unlink", realUnlink)

    def test_partialFileThatCannotBeRemoved(self):
        """
        A failed upload whose partial file cannot be removed (the disk went
        read-only under it) still fails with its own error, and says that
        it left bytes behind, for a reaper to remove later: the removal's
        error replaced the upload's, a 500 with a traceback, and the file
        stayed until the next start.
        """
        from glancetx.store import appendfile

        def broken(self, chunks):
            raise OSError(5, "Input/output error")
        self.patch(appendfile.AppendFile, "append", broken)
        store = self.makeStore()
        removable = self.unremovable()
        imageId = os.urandom(16).hex()

        async def go():
            with self.assertRaises(StoreError) as caught:
                await store.add(imageId, BytesBody(reactor, b"x" * (3 * MiB)))
            self.assertIn("Input/output error", str(caught.exception))
            self.assertTrue(getattr(caught.exception, "leftInStore", False))
            self.assertEqual(len(self.leftovers()), 1)
            removable()
            await store.removeAbandoned(imageId, retry=False)
            self.assertEqual(os.listdir(self.dir), [])
        return ensureDeferred(go())

    def test_removalsRefusedAreTheStoreBeingUnavailable(self):
        """
        A removal the disk refuses (read-only, permissions) is the store
        being unavailable, with the reason in words: an image deleted then
        goes back to pending_delete for the scrubber, and a reaper keeps
        its reminder, where before the bytes were forgotten and the log
        said only "13".
        """
        from glancetx.store.interface import StoreUnavailable
        store = self.makeStore()
        imageId = os.urandom(16).hex()

        async def go():
            stored = await store.add(imageId, BytesBody(reactor, b"abc"))
            with open(os.path.join(self.dir, imageId + ".part-1"), "wb"):
                pass
            self.unremovable(13, "Permission denied")
            with self.assertRaises(StoreUnavailable) as caught:
                await store.delete(stored.location)
            self.assertIn("Permission denied", str(caught.exception))
            with self.assertRaises(StoreUnavailable) as caught:
                await store.removeAbandoned(imageId, retry=False)
            self.assertIn("Permission denied", str(caught.exception))
            self.assertEqual(sorted(os.listdir(self.dir)), [imageId, imageId + ".part-1"])
        return ensureDeferred(go())

    def test_fullDiskIsTheClients413(self):
        """
        A disk (or quota) with no room left is Glance's 413 "Image storage
        media is full", not a store that is down, which a client would
        try again at once; nothing is left behind.  So too when the file
        cannot even be made.
        """
        from glancetx.store import appendfile
        realAppend, realCreate = appendfile.AppendFile.append, appendfile.AppendFile.create

        async def go():
            for code, where in ((28, "append"), (122, "append"), (28, "create")):
                def full(*args, **kwargs):
                    raise OSError(code, os.strerror(code))
                self.patch(appendfile.AppendFile, "append",
                           full if where == "append" else realAppend)
                self.patch(appendfile.AppendFile, "create",
                           staticmethod(full if where == "create" else realCreate))
                store = self.makeStore()
                with self.assertRaises(UploadFailed) as caught:
                    await store.add(os.urandom(16).hex(), BytesBody(reactor, b"x" * (3 * MiB)))
                self.assertEqual(caught.exception.code, 413)
                self.assertEqual(caught.exception.message,
                                 "Image storage media is full: %s" % (os.strerror(code),))
                self.assertEqual(os.listdir(self.dir), [])
        return ensureDeferred(go())

    def _flushesOfAdd(self, earlyFlush):
        """
        Store 10 MiB written around the cache, early flushes on or off, and
        return the early flushes, whether the file was direct, and the
        stored bytes.
        """
        from glancetx.store import appendfile
        flushes, created = [], []
        realFdatasync, realCreate = os.fdatasync, appendfile.AppendFile.create

        def create(*args, **kwargs):
            f = realCreate(*args, **kwargs)
            created.append(f)
            return f
        self.patch(appendfile.AppendFile, "create", staticmethod(create))
        self.patch(appendfile.os, "fdatasync", lambda fd: flushes.append(fd) or realFdatasync(fd))
        store = self.makeStore()
        store.earlyFlush = earlyFlush
        data = os.urandom(MiB) * 10

        async def go():
            imageId = os.urandom(16).hex()
            await store.add(imageId, BytesBody(reactor, data))
            with open(os.path.join(store.directory, imageId), "rb") as f:
                return flushes, created[0].direct, f.read()
        return ensureDeferred(go()), data

    def test_earlyFlush(self):
        """
        A file written around the cache is flushed before its end, in its
        writer's idle moments, and its bytes are all there.
        """
        d, data = self._flushesOfAdd(True)

        def check(result):
            flushes, direct, stored = result
            self.assertEqual(stored, data)
            if not direct:
                raise SkipTest("this filesystem refuses O_DIRECT")
            self.assertTrue(1 <= len(flushes) <= 2, flushes)
        return d.addCallback(check)

    def test_earlyFlushOff(self):
        d, data = self._flushesOfAdd(False)

        def check(result):
            flushes, direct, stored = result
            self.assertEqual(stored, data)
            self.assertEqual(flushes, [])
        return d.addCallback(check)

    def test_bufferedImageNotWarmed(self):
        """
        With direct I/O off, the bytes went through the cache: nothing to
        warm.
        """
        async def go():
            final, warmed = await self._addWarmed(False, BytesBody(reactor, b"x" * 300000))
            self.assertTrue(os.path.exists(final))
            self.assertEqual(warmed, [])
        return ensureDeferred(go())

    def test_failedUploadNotWarmed(self):
        """
        An upload that fails leaves no image to warm.
        """
        async def go():
            body = BytesBody(reactor, b"x" * 300000, failAfter=200000)
            final, warmed = await self._addWarmed(True, body)
            self.assertFalse(os.path.exists(final))
            self.assertEqual(warmed, [])
        return ensureDeferred(go())

    def makeWriter(self):
        """
        A writer on a recording file, its disk jobs run by hand, with a
        4 MiB share (high 4 MiB, low 1 MiB) and a producer that records.
        """
        jobs = recordJobs(self)
        file = RecordingFile()
        writer = filesystem._FileWriter(file, FakeReactor(), None,
                                        SharedBudget(total=4 * 1024 * 1024).join())
        producer = RecordingProducer()
        writer.registerProducer(producer, True)
        return jobs, file, writer, producer

    def test_pausesAtShareAndResumes(self):
        """
        The producer is paused once the writer holds its share, not before,
        and resumed once the disk has caught up.
        """
        jobs, file, writer, producer = self.makeWriter()
        chunk = b"y" * (1024 * 1024)
        for _ in range(3):
            writer.write(chunk)
        self.assertEqual(len(jobs), 1)  # started at the low mark
        self.assertEqual(producer.calls, [])
        writer.write(chunk)
        self.assertEqual(producer.calls, ["pause"])
        runJob(jobs)
        self.assertEqual(producer.calls, ["pause", "resume"])
        # The disk ran dry once the four were written.
        self.assertEqual(file.appended, [[chunk]] * 4 + ["idle"])
        self.assertEqual(writer.written, 4 * len(chunk))

    def test_shortWritesWaitForLowMark(self):
        """
        Short writes wait for the share's low mark (a megabyte) before a
        disk job takes them; the short tail goes when the writer is drained.
        """
        jobs, file, writer, producer = self.makeWriter()
        piece = b"z" * (256 * 1024)
        for _ in range(3):
            writer.write(piece)
        self.assertEqual(jobs, [])
        writer.write(piece)
        self.assertEqual(len(jobs), 1)
        runJob(jobs)
        self.assertEqual(file.appended, [[piece] * 4, "idle"])
        writer.write(b"tail")
        self.assertEqual(jobs, [])
        drained = writer.drain()
        self.assertNoResult(drained)
        runJob(jobs)
        self.successResultOf(drained)
        self.assertEqual(file.appended[-2:], [[b"tail"], "idle"])
        self.assertEqual(writer.written, 4 * len(piece) + 4)

    def test_diskErrorStopsTheProducer(self):
        jobs, file, writer, producer = self.makeWriter()
        file.error = OSError(28, "No space left on device")
        writer.write(b"w" * (2 * 1024 * 1024))
        runJob(jobs)
        self.assertEqual(producer.calls, ["stop"])
        self.failureResultOf(writer.failed, OSError)
        self.failureResultOf(writer.drain(), OSError)
        writer.write(b"more")  # ignored
        self.assertEqual(jobs, [])


class DiscardAfterDiskJobTests(TestCase):
    """
    A failed upload's file is closed only once no disk job uses it: a job
    still writing to a closed descriptor could write into whatever file
    the system gave that number to next.
    """

    def test_bodyFailsWhileADiskJobRuns(self):
        from glancetx import drain
        storeJobs = recordJobs(self, filesystem)
        diskJobs = recordJobs(self, drain)
        directory = self.mktemp()
        store = FilesystemStore(directory, FakeReactor(), None, SharedBudget(total=0))
        store.prepare()
        body = PushBody()
        added = store.add("0123456789abcdef", body)
        runJob(storeJobs)  # the file is created
        body.consumer.write(b"x" * MiB)
        self.assertEqual(len(diskJobs), 1)  # a disk job is under way
        body.done.errback(UploadFailed(400, "the client went away"))
        self.assertEqual(storeJobs, [])  # the file is not discarded yet
        runJob(diskJobs)
        self.assertEqual(len(storeJobs), 1)
        runJob(storeJobs)  # now it is
        self.failureResultOf(added, UploadFailed)
        self.assertEqual(os.listdir(directory), [])


class RecordingFile:
    def __init__(self):
        self.appended = []
        self.error = None

    def append(self, chunks):
        if self.error is not None:
            raise self.error
        self.appended.append(list(chunks))

    def flushBehind(self):
        self.appended.append("idle")
