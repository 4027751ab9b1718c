"""
The real C{twistd glance} under a few hundred random requests
(L{tests.randomrequests}): one answer each, no 5xx, no traceback, and a
store that holds exactly the active images' bytes.
"""

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests import dbs, randomrequests
from tests.server import GlanceServer
from tests.test_api import SharedDatabaseMixin, async_test

REQUESTS = 400


class RandomRequestTests(TestCase):
    timeout = 300
    options: dict = {}

    async def check(self, glance, seed: int, identity: bool = False) -> None:
        counts, found = await deferToThread(randomrequests.run, glance.port, seed, REQUESTS,
                                            identity)
        self.assertEqual(found, [], glance.log()[-4000:])
        self.assertNotIn("Traceback", glance.log())
        # The requests got past parsing to the API, not only refusals.
        self.assertGreater(counts["200"] + counts["201"] + counts["204"], REQUESTS // 20, counts)

    @async_test
    async def test_embedded(self):
        glance = await GlanceServer(self).start()
        await self.check(glance, seed=1)
        self.assertEqual(randomrequests.storeProblems(glance.dataDir), [])

    @async_test
    async def test_keystoneHeaders(self):
        glance = await GlanceServer(self, {"auth_strategy": "keystone"}).start()
        await self.check(glance, seed=2, identity=True)
        self.assertEqual(randomrequests.storeProblems(glance.dataDir), [])

    @async_test
    async def test_postgresql(self):
        glance = await SharedDatabaseMixin.server(self)
        await self.check(glance, seed=3)
        self.assertEqual(await self.sharedStoreProblems(glance), [])

    @async_test
    async def test_mysql(self):
        glance = await SharedDatabaseMixin.server(self)
        await self.check(glance, seed=4)
        self.assertEqual(await self.sharedStoreProblems(glance), [])

    def sharedStoreProblems(self, glance):
        return deferToThread(randomrequests.storeProblems, glance.dataDir, self._databaseURL)

    # SharedDatabaseMixin.server asks for these two.
    _databases = {"test_postgresql": dbs.postgresURL, "test_mysql": dbs.mysqlURL}

    def databaseURL(self):
        return self._databases[self._testMethodName](self)
