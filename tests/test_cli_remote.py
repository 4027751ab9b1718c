"""
The real glance CLI against glancetx with S3 (moto, and Swift's S3 API) and
Swift as the default store: the same tests as on the filesystem store, with
the stored objects checked in the bucket or container itself.
"""

import json
import urllib.request
import uuid

from tests.server import GlanceServer
from tests import test_cli
from tests.test_remote_api import KEY, USER, _boto3, _removeBucket, _serverURL


class _S3CLIMixin:
    urlVariable: str

    async def _startServer(self):
        url = self.server_s3_url = _serverURL(self, self.urlVariable)
        self.s3 = _boto3(url, USER, KEY)
        self.bucket = "glancetx-cli-" + uuid.uuid4().hex[:16]
        self.s3.create_bucket(Bucket=self.bucket)
        self.addCleanup(_removeBucket, self.s3, self.bucket)
        self.server = await GlanceServer(self, {
            "default_store": "s3", "stores": "file,http,s3",
            "s3_store_host": url, "s3_store_access_key": USER,
            "s3_store_secret_key": KEY, "s3_store_bucket": self.bucket,
            "s3_store_large_object_size": 5, "s3_store_large_object_chunk_size": 5,
        }).start()

    def storedImageFiles(self) -> list:
        # Blocking, in a test only: the server under test is another process.
        listing = self.s3.list_objects_v2(Bucket=self.bucket)
        return sorted(o["Key"] for o in listing.get("Contents", []))

    @test_cli.async_test
    async def test_locationWithCredentials(self):
        """
        C{image-create --location s3+http://AK:SK@host/bucket/object} and
        C{--copy-from} the same: the client percent-encodes the C{@} (and
        the C{%3A} in Swift's C{account:user}), and the server reads the
        location as the user typed it.  It was refused as not naming the
        configured store.
        """
        import hashlib
        import os
        from urllib.parse import quote
        data = os.urandom(100000)
        # Blocking, in a test only.
        self.s3.put_object(Bucket=self.bucket, Key="outside", Body=data)
        host = self.server_s3_url.partition("://")[2]
        location = "s3+http://%s:%s@%s/%s/outside" % (
            quote(USER, safe=""), quote(KEY, safe=""), host, self.bucket)
        shown = await self.show("image-create", "--name", "registered", "--disk-format", "raw",
                                "--container-format", "bare", "--location", location)
        self.assertEqual((shown["status"], shown["size"]), ("active", str(len(data))))
        shown = await self.show("image-create", "--name", "copied", "--disk-format", "raw",
                                "--container-format", "bare", "--copy-from", location)
        from twisted.internet import reactor
        from twisted.internet.task import deferLater
        for _ in range(100):
            meta = await self.head(shown["id"])
            if meta["x-image-meta-status"] not in ("queued", "saving"):
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(meta["x-image-meta-status"], "active")
        self.assertEqual(meta["x-image-meta-checksum"], hashlib.md5(data).hexdigest())


class MotoS3CLITests(_S3CLIMixin, test_cli.CLITests):
    urlVariable = "GLANCETX_MOTO_URL"


class SwiftS3CLITests(_S3CLIMixin, test_cli.CLITests):
    urlVariable = "GLANCETX_SWIFT_S3_URL"


class SwiftCLITests(test_cli.CLITests):
    async def _startServer(self):
        self.authUrl = _serverURL(self, "GLANCETX_SWIFT_AUTH_URL")
        self.container = "glancetx-cli-" + uuid.uuid4().hex[:16]
        self.server = await GlanceServer(self, {
            "default_store": "swift", "stores": "file,http,swift",
            "swift_store_auth_address": self.authUrl, "swift_store_user": USER,
            "swift_store_key": KEY, "swift_store_container": self.container,
            "swift_store_create_container_on_put": "true",
            "swift_store_large_object_size": 5, "swift_store_large_object_chunk_size": 5,
        }).start()
        self.addCleanup(self._removeContainers)

    def _swift(self, method, path=""):
        req = urllib.request.Request(self.authUrl, headers={
            "X-Auth-User": USER, "X-Auth-Key": KEY})
        with urllib.request.urlopen(req, timeout=10) as r:
            storage, token = r.headers["X-Storage-Url"], r.headers["X-Auth-Token"]
        req = urllib.request.Request(storage + path, method=method,
                                     headers={"X-Auth-Token": token})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def storedImageFiles(self) -> list:
        body = self._swift("GET", "/%s?format=json" % (self.container,))
        return sorted(o["name"] for o in json.loads(body)) if body else []

    def _removeContainers(self):
        for container in (self.container, self.container + "_segments"):
            body = self._swift("GET", "/%s?format=json" % (container,))
            for o in json.loads(body) if body else []:
                self._swift("DELETE", "/%s/%s" % (container, o["name"]))
            self._swift("DELETE", "/" + container)
