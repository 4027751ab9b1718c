"""
The store contract, as one mixin every driver's test case runs.

A subclass provides C{makeStore()} (may return a Deferred) and
C{leftovers()} (a Deferred or list naming any bytes the store still holds for
images that were never completed: partial files, open multipart uploads,
orphan segments), C{leaveAbandonedUpload(store, imageId)} (what an upload
leaves when its process dies: partial bytes, and whole bytes the registry
never heard of) and C{holds(store, imageId)} (whether bytes are stored
under an image's own name).
"""

import hashlib
import os

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, maybeDeferred
from zope.interface.verify import verifyObject

from glancetx.store.interface import IStore, LocationNotFound, UploadFailed
from tests.bodies import BytesBody, readAll


class StoreContractMixin:
    """
    Behaviour every writable IStore keeps.  Mixed into a TestCase.
    """

    #: Bytes for the "large" case; drivers with a large-object threshold set
    #: it below this so the segmented path runs.
    largeSize = 3 * 1024 * 1024 + 17

    def makeStore(self):
        raise NotImplementedError()

    def leftovers(self):
        raise NotImplementedError()

    def leaveAbandonedUpload(self, store, imageId: str):
        raise NotImplementedError()

    def holds(self, store, imageId: str):
        raise NotImplementedError()

    def imageId(self) -> str:
        return os.urandom(16).hex()

    async def _store(self):
        if not hasattr(self, "_theStore"):
            self._theStore = await maybeDeferred(self.makeStore)
        return self._theStore

    async def _roundTrip(self, data: bytes, knownLength: bool = True):
        store = await self._store()
        body = BytesBody(reactor, data, knownLength=knownLength)
        stored = await store.add(self.imageId(), body)
        self.assertEqual(stored.size, len(data))
        self.assertEqual(await store.get_size(stored.location), len(data))
        producer = await store.get(stored.location)
        self.assertEqual(producer.length, len(data))
        got = await readAll(reactor, producer)
        self.assertEqual(hashlib.md5(got).hexdigest(), hashlib.md5(data).hexdigest())
        return store, stored

    def test_provides(self):
        async def go():
            store = await self._store()
            verifyObject(IStore, store)
            self.assertTrue(store.writable)
        return ensureDeferred(go())

    def test_roundTripSmall(self):
        return ensureDeferred(self._roundTrip(b"hello image " * 1000))

    def test_roundTripEmpty(self):
        return ensureDeferred(self._roundTrip(b""))

    def test_roundTripLarge(self):
        return ensureDeferred(self._roundTrip(os.urandom(self.largeSize)))

    def test_roundTripUnknownLength(self):
        return ensureDeferred(self._roundTrip(os.urandom(self.largeSize), knownLength=False))

    def test_delete(self):
        async def go():
            store, stored = await self._roundTrip(b"x" * 5000)
            await store.delete(stored.location)
            with self.assertRaises(LocationNotFound):
                await store.get(stored.location)
            # Deleting what is gone is not an error.
            await store.delete(stored.location)
        return ensureDeferred(go())

    def test_failedBodyLeavesNothing(self):
        async def go():
            store = await self._store()
            data = os.urandom(self.largeSize)
            body = BytesBody(reactor, data, failAfter=len(data) // 2)
            with self.assertRaises(UploadFailed):
                await store.add(self.imageId(), body)
            self.assertEqual(list(await maybeDeferred(self.leftovers)), [])
        return ensureDeferred(go())

    def test_failedBodyUnknownLengthLeavesNothing(self):
        async def go():
            store = await self._store()
            data = os.urandom(self.largeSize)
            body = BytesBody(reactor, data, knownLength=False, failAfter=len(data) - 10)
            with self.assertRaises(UploadFailed):
                await store.add(self.imageId(), body)
            self.assertEqual(list(await maybeDeferred(self.leftovers)), [])
        return ensureDeferred(go())

    def test_removeAbandonedLeavesNothing(self):
        """
        What an upload left when its process died goes once its image is
        killed; other images stay, and finding nothing is not an error.
        """
        async def go():
            store, kept = await self._roundTrip(b"kept " * 1000)
            before = list(await maybeDeferred(self.leftovers))
            image = self.imageId()
            await maybeDeferred(self.leaveAbandonedUpload, store, image)
            self.assertTrue(await maybeDeferred(self.holds, store, image))
            await store.removeAbandoned(image)
            self.assertEqual(list(await maybeDeferred(self.leftovers)), before)
            self.assertFalse(await maybeDeferred(self.holds, store, image))
            await store.removeAbandoned(image)
            self.assertEqual(await store.get_size(kept.location), 5000)
            # As a reaper asks, raising rather than retrying in memory.
            other = self.imageId()
            await maybeDeferred(self.leaveAbandonedUpload, store, other)
            await store.removeAbandoned(other, retry=False)
            self.assertFalse(await maybeDeferred(self.holds, store, other))
            await store.removeAbandoned(other, retry=False)
            self.assertEqual(await store.get_size(kept.location), 5000)
        return ensureDeferred(go())
