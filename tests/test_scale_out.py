"""
Scaled out: two real C{twistd glance} processes that share one database
and one object store, as an operator runs them behind a load balancer.
What one server writes, the other serves and deletes; a delete through one
ends the other's upload in flight without leaving bytes behind; their
scrubbers share the work of a delayed delete; and random requests from
parallel clients, spread over both, leave the store holding exactly the
active images' bytes.

PostgreSQL with S3 (moto), and MariaDB with Swift; the servers come from
the environment as for L{tests.test_remote_api}.
"""

import json
import os
import re
import uuid

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests import dbs, randomrequests
from tests.test_api import SharedDatabaseMixin, async_test
from tests.test_remote_api import (BIG, MiB, _RawUpload, _S3Mixin, _SwiftMixin, eventually,
                                   sleep)


class _ScaleOutMixin(SharedDatabaseMixin):
    """
    Tests for two servers on one database and one store.  C{self.glance}
    is the server the next request goes to.
    """

    async def twoServers(self, **options):
        first = await self.storeServer(**options)
        second = await self.storeServer(**options)
        return first, second

    async def storingUpload(self, server, imageId: str, name: str, headers=None) -> _RawUpload:
        """
        A chunked upload of image C{imageId} through C{server} that goes on
        sending, once its first parts or segments have reached the store.
        """
        upload = _RawUpload(dict({"x-image-meta-id": imageId, "x-image-meta-name": name,
                                  "x-image-meta-disk_format": "raw",
                                  "x-image-meta-container_format": "bare"}, **(headers or {})),
                            limit=2048 * MiB)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port)
        await endpoint.connect(Factory.forProtocol(lambda: upload))
        self.addCleanup(lambda: upload.transport.abortConnection())
        self.assertTrue(await eventually(self.partsStarted, 60, 0.1),
                        "no part or segment reached the store")
        return upload

    def checkLogs(self, *servers) -> None:
        for glance in servers:
            log = glance.log()
            self.assertNotIn("Traceback", log)
            self.assertNotIn("Unhandled", log)

    @async_test
    async def test_writtenThroughOneServedByTheOther(self):
        """
        An image uploaded through one server is listed, served and deleted
        through the other, and is gone for both.
        """
        a, b = await self.twoServers()
        data = os.urandom(BIG)
        self.glance = a
        image = await self.create(data)
        self.glance = b
        await self.checkRoundTrip(image, data)
        resp, body = await self.request("GET", "/v1/images/detail", expect=200)
        self.assertIn(image["id"], body.decode())
        await self.checkDeleted(image["id"])
        self.glance = a
        await self.request("HEAD", "/v1/images/" + image["id"], expect=404)
        self.checkLogs(a, b)

    @async_test
    async def test_deleteThroughTheOtherEndsUpload(self):
        """
        An image deleted through one server while the other is storing its
        bytes: that upload is answered 409 when its body ends, and neither
        an object nor an open multipart upload or segment is left.
        """
        a, b = await self.twoServers()
        imageId = str(uuid.uuid4())
        upload = await self.storingUpload(a, imageId, "raced", {"Connection": "close"})

        self.glance = b
        self.assertEqual(await self.status(imageId), "saving")
        await self.request("DELETE", "/v1/images/" + imageId, expect=200)
        self.assertEqual(await self.status(imageId), None)
        # The client ends its body at a chunk boundary.
        upload.stopSending()
        upload.transport.write(b"0\r\n\r\n")
        timeout = reactor.callLater(60, upload.transport.abortConnection)
        answer = await upload.ended
        if timeout.active():
            timeout.cancel()
        self.assertTrue(answer.startswith(b"HTTP/1.1 409 "), answer[:300])

        async def explained():
            # The message may arrive after the head.
            return b"was deleted during the upload" in upload.answer

        self.assertEqual(await eventually(explained, 10, 0.05), True, upload.answer)
        self.assertEqual(await eventually(self.storeIsEmpty, 30), True,
                         await self.storedNames())
        self.assertEqual(await eventually(self.noLeftovers, 30), True, await self.leftovers())
        self.glance = a
        self.assertEqual(await self.status(imageId), None)
        self.checkLogs(a, b)

    @async_test
    async def test_uploadOfADeadServerEndsThroughTheOther(self):
        """
        A server killed (SIGKILL) while storing an image's parts cannot end
        its upload; the other server kills the image once the dead one's
        upload lease runs out, and removes the parts or segments it left.
        """
        a, b = await self.twoServers(upload_lease_seconds=3)
        imageId = str(uuid.uuid4())
        upload = await self.storingUpload(a, imageId, "orphaned")
        a.process.signalProcess("KILL")
        await a.watcher.ended
        upload.stopSending()
        self.glance = b
        self.assertEqual(await self.status(imageId), "saving")
        self.assertNotEqual(await self.leftovers(), [])
        self.assertTrue(await eventually(lambda: self.statusIs(imageId, "killed"), 30, 0.2),
                        b.log())
        self.assertEqual(await eventually(self.noLeftovers, 30), True, await self.leftovers())
        self.assertEqual(await eventually(self.storeIsEmpty, 30), True,
                         await self.storedNames())
        self.assertIn("image %s killed: upload abandoned" % (imageId,), b.log())
        self.checkLogs(b)

    @async_test
    async def test_scrubbersShareDelayedDeletes(self):
        """
        With delayed delete, images deleted through one server become
        pending_delete; the scrubbers of both servers then remove every
        image's bytes, each image once, and each becomes deleted.
        """
        a, b = await self.twoServers(delayed_delete="true", scrub_time=0, wakeup_time=1)
        self.glance = a
        images = [await self.create(os.urandom(size))
                  for size in (1000, 2000, 3000, 4000, 5000, BIG)]
        self.assertEqual(len(await self.storedNames()), len(images))
        self.glance = b
        for image in images:
            await self.request("DELETE", "/v1/images/" + image["id"], expect=200)
        self.assertEqual(await eventually(self.storeIsEmpty, 60, 0.5), True,
                         await self.storedNames())
        self.assertEqual(await eventually(self.noLeftovers, 30), True, await self.leftovers())

        async def allDeleted():
            resp, body = await self.request(
                "GET", "/v1/images/detail?changes-since=2000-01-01T00:00:00", expect=200)
            statuses = {i["id"]: i["status"] for i in json.loads(body)["images"]}
            return all(statuses.get(i["id"]) == "deleted" for i in images)

        self.assertEqual(await eventually(allDeleted, 30), True)
        scrubbed = sum(int(n) for glance in (a, b)
                       for n in re.findall(r"scrubbed (\d+) deleted images", glance.log()))
        self.assertEqual(scrubbed, len(images))
        self.checkLogs(a, b)

    @async_test
    async def test_randomRequestsAcrossServers(self):
        """
        L{tests.randomrequests} from four clients at once, each request to
        either server: one answer each, no 5xx, no traceback in either log,
        and afterwards only active images have objects, with no open
        upload left.
        """
        a, b = await self.twoServers()
        counts, found = await deferToThread(randomrequests.runMany, [a.port, b.port], 11, 100, 4)
        self.assertEqual(found, [])
        self.assertGreater(counts["200"] + counts["201"], 20, counts)
        await sleep(0.5)
        self.glance = a
        await self.checkOnlyActiveStored()
        self.checkLogs(a, b)


class PostgreSQLS3ScaleOutTests(_ScaleOutMixin, _S3Mixin, TestCase):
    timeout = 300
    urlVariable = "GLANCETX_MOTO_URL"

    def databaseURL(self):
        return dbs.postgresURL(self)


class MySQLSwiftScaleOutTests(_ScaleOutMixin, _SwiftMixin, TestCase):
    timeout = 300

    def databaseURL(self):
        return dbs.mysqlURL(self)
