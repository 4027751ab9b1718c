import os

from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from glancetx.store.filesystem import FilesystemStore
from glancetx.store.interface import BadLocation
from tests.store_contract import StoreContractMixin


class FilesystemStoreTests(StoreContractMixin, TestCase):
    def makeStore(self):
        self.dir = self.mktemp()
        pool = ThreadPool(1, 2, name="test-disk")
        pool.start()
        self.addCleanup(pool.stop)
        store = FilesystemStore(self.dir, reactor, pool)
        store.prepare()
        return store

    def leftovers(self):
        return [n for n in os.listdir(self.dir) if ".part-" in n]

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
