"""
The v1 API end to end: the real twistd glance on loopback, driven with treq.
"""

import hashlib
import json
import os

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import FileBodyProducer

from tests.server import GlanceServer


def async_test(f):
    def wrapper(self):
        return ensureDeferred(f(self))
    wrapper.__name__ = f.__name__
    return wrapper


RAW = {"x-image-meta-disk_format": "raw", "x-image-meta-container_format": "bare"}


class APITestsMixin:
    options: dict = {}

    async def server(self, env=None, dataDir=None, **options):
        opts = dict(self.options)
        opts.update(options)
        self.glance = await GlanceServer(self, opts, env=env, dataDir=dataDir).start()
        return self.glance

    def http(self):
        if not hasattr(self, "_http"):
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool
            self._http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(
                reactor, persistent=False)))
        return self._http

    def url(self, path):
        return self.glance.url + path

    async def request(self, method, path, headers=None, data=None, expect=None):
        h = {"Content-Type": "application/octet-stream"} if data is not None else {}
        h.update(headers or {})
        resp = await self.http().request(method, self.url(path), headers=h, data=data)
        body = await resp.content()
        if expect is not None:
            why = body
            if resp.code >= 500 and getattr(self, "glance", None) is not None:
                why = body + b"\nserver log:\n" + self.glance.log()[-6000:].encode()
            self.assertEqual(resp.code, expect, why)
        return resp, body

    async def create(self, data=None, headers=None, expect=201):
        h = {"x-image-meta-name": "test"}
        if data is not None:
            h.update(RAW)
        h.update(headers or {})
        resp, body = await self.request("POST", "/v1/images", h, data, expect)
        return json.loads(body)["image"] if resp.code == 201 else (resp, body)

    async def startUpload(self, name: bytes):
        """
        A raw connection that starts a 10 MB upload of an image called
        C{name}, sends 100 KB of it and goes quiet.
        """
        from twisted.internet.protocol import ClientCreator, Protocol
        proto = await ClientCreator(reactor, Protocol).connectTCP("127.0.0.1", self.glance.port)
        proto.transport.write(
            b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
            b"Content-Type: application/octet-stream\r\nx-image-meta-name: " + name + b"\r\n"
            b"x-image-meta-disk_format: raw\r\nx-image-meta-container_format: bare\r\n\r\n"
            + b"z" * 100000)
        return proto

    def header(self, resp, name):
        values = resp.headers.getRawHeaders(name)
        return values[0] if values else None


class APITests(APITestsMixin, TestCase):
    timeout = 120

    @async_test
    async def test_versions(self):
        await self.server()
        resp, body = await self.request("GET", "/versions", expect=200)
        doc = json.loads(body)
        self.assertEqual([v["id"] for v in doc["versions"]], ["v1.1", "v1.0"])
        self.assertEqual(doc["versions"][0]["links"][0]["href"], self.glance.url + "/v1/")
        await self.request("GET", "/", expect=300)
        await self.request("GET", "/whatever", expect=300)
        await self.request("GET", "/v1/nonsense", expect=404)

    @async_test
    async def test_versionedPathsServeV1(self):
        """
        Glance served /v1.0/... and /v1.1/... as /v1/... (both ids of the
        version document mean v1); an upload through either streams too.
        Another version is unknown: the version document.
        """
        await self.server()
        h = dict(RAW, **{"x-image-meta-name": "aliased"})
        resp, body = await self.request("POST", "/v1.1/images", h, b"abc", expect=201)
        image = json.loads(body)["image"]
        self.assertEqual((image["status"], image["size"]), ("active", 3))
        resp, body = await self.request("GET", "/v1.0/images/" + image["id"], expect=200)
        self.assertEqual(body, b"abc")
        resp, body = await self.request("GET", "/v1.1/images/detail", expect=200)
        self.assertEqual([i["id"] for i in json.loads(body)["images"]], [image["id"]])
        await self.request("PUT", "/v1.0/images/" + image["id"],
                           {"x-image-meta-name": "renamed"}, expect=200)
        await self.request("GET", "/v1.1/nonsense", expect=404)
        await self.request("GET", "/v1.2/images", expect=300)
        await self.request("GET", "/v1.1x/images", expect=300)

    @async_test
    async def test_anIdInCapitalsFindsItsImage(self):
        """
        An id given in capitals is stored lower-cased, like every id; the
        form the client sent still names the image everywhere.
        """
        await self.server()
        given = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
        image = await self.create(b"abc", {"x-image-meta-id": given})
        self.assertEqual(image["id"], given.lower())
        path = "/v1/images/" + given
        await self.request("HEAD", path, expect=200)
        resp, body = await self.request("GET", path, expect=200)
        self.assertEqual(body, b"abc")
        await self.request("PUT", path, {"x-image-meta-name": "renamed"}, expect=200)
        await self.request("PUT", path + "/members/tenant2", expect=204)
        await self.request("GET", path + "/members/tenant2", expect=200)
        await self.create(b"def")
        resp, body = await self.request("GET", "/v1/images?sort_key=id&sort_dir=asc"
                                        "&marker=" + given, expect=200)
        await self.request("DELETE", path, expect=200)
        await self.request("HEAD", "/v1/images/" + given.lower(), expect=404)

    @async_test
    async def test_unknownPathsWithAnyMethod(self):
        """
        A path no resource has is not there for any method: 404 under /v1,
        the version document elsewhere, as for a GET.  A 405 (with Allow)
        is for a path that exists.
        """
        await self.server()
        image = await self.create(b"abc")
        for method in ("PUT", "POST", "DELETE", "PATCH"):
            for path in ("/v1/nonsense", "/v1/images/%s/bogus" % image["id"], "/v1.1/x/y"):
                resp, body = await self.request(method, path)
                self.assertEqual(resp.code, 404, (method, path, body))
                self.assertIsNone(resp.headers.getRawHeaders("allow"))
            resp, body = await self.request(method, "/whatever")
            self.assertEqual(resp.code, 300, (method, body))
            self.assertIn(b"v1.1", body)
        resp, body = await self.request("POST", "/v1/images/" + image["id"])
        self.assertEqual(resp.code, 405)
        self.assertEqual(resp.headers.getRawHeaders("allow"), ["DELETE, GET, HEAD, PUT"])
        resp, body = await self.request("DELETE", "/v1/images")
        self.assertEqual(resp.code, 405)
        self.assertEqual(resp.headers.getRawHeaders("allow"), ["GET, HEAD, POST"])
        # "detail" is the detailed list, never an image id.
        for method in ("POST", "PUT", "DELETE"):
            resp, body = await self.request(method, "/v1/images/detail")
            self.assertEqual(resp.code, 405, method)
            self.assertEqual(resp.headers.getRawHeaders("allow"), ["GET, HEAD"])

    @async_test
    async def test_uploadDownloadRoundTrip(self):
        await self.server()
        data = os.urandom(3 * 1024 * 1024 + 5)
        image = await self.create(data, {"x-image-meta-property-distro": "Debian"})
        self.assertEqual(image["status"], "active")
        self.assertEqual(image["size"], len(data))
        self.assertEqual(image["checksum"], hashlib.md5(data).hexdigest())
        self.assertEqual(image["properties"], {"distro": "Debian"})
        self.assertNotIn("location", image)
        resp, body = await self.request("GET", "/v1/images/" + image["id"], expect=200)
        self.assertEqual(body, data)
        self.assertEqual(resp.length, len(data))
        self.assertEqual(self.header(resp, "etag"), image["checksum"])
        self.assertEqual(self.header(resp, "x-image-meta-property-distro"), "Debian")
        self.assertEqual(self.header(resp, "content-type"), "application/octet-stream")
        self.assertIsNone(self.header(resp, "x-image-meta-location"))

    @async_test
    async def test_chunkedUpload(self):
        await self.server()
        data = os.urandom(2 * 1024 * 1024)
        from io import BytesIO
        body = FileBodyProducer(BytesIO(data))
        body.length = None  # unknown length: the Agent sends it chunked
        from twisted.web.iweb import UNKNOWN_LENGTH
        body.length = UNKNOWN_LENGTH
        image = await self.create(body)
        self.assertEqual(image["size"], len(data))
        self.assertEqual(image["checksum"], hashlib.md5(data).hexdigest())

    @async_test
    async def test_reserveThenUpload(self):
        await self.server()
        image = await self.create(headers=RAW)
        self.assertEqual(image["status"], "queued")
        resp, body = await self.request("PUT", "/v1/images/" + image["id"], {}, b"abc",
                                         expect=200)
        self.assertEqual(json.loads(body)["image"]["status"], "active")
        # Only a queued image takes a body.
        resp, body = await self.request("PUT", "/v1/images/" + image["id"], {}, b"abc",
                                        expect=409)

    @async_test
    async def test_sizeMismatchKills(self):
        await self.server()
        image = await self.create(headers=dict(RAW, **{"x-image-meta-size": "10"}))
        resp, body = await self.request("PUT", "/v1/images/" + image["id"], {},
                                        b"x" * 11, expect=400)
        self.assertIn(b"size", body)
        resp, _ = await self.request("HEAD", "/v1/images/" + image["id"], expect=200)
        self.assertEqual(self.header(resp, "x-image-meta-status"), "killed")
        self.assertEqual(os.listdir(os.path.join(self.glance.dataDir, "images")), [])

    @async_test
    async def test_checksumMismatchKills(self):
        await self.server()
        resp, body = await self.create(b"hello", {"x-image-meta-checksum": "0" * 32},
                                       expect=400)
        self.assertIn(b"checksum", body)
        resp, body = await self.request("GET", "/v1/images/detail?status=killed", expect=200)
        self.assertEqual(len(json.loads(body)["images"]), 1)
        self.assertEqual(os.listdir(os.path.join(self.glance.dataDir, "images")), [])

    @async_test
    async def test_sizeCap(self):
        await self.server(image_size_cap=1000)
        resp, body = await self.create(b"x" * 1001, expect=413)
        from io import BytesIO
        from twisted.web.iweb import UNKNOWN_LENGTH
        chunked = FileBodyProducer(BytesIO(b"y" * 5000))
        chunked.length = UNKNOWN_LENGTH
        resp, body = await self.create(chunked, expect=413)
        resp, body = await self.request("GET", "/v1/images/detail?status=killed", expect=200)
        self.assertEqual(len(json.loads(body)["images"]), 1)
        self.assertEqual(os.listdir(os.path.join(self.glance.dataDir, "images")), [])

    @async_test
    async def test_badInput(self):
        await self.server()
        # Each case is refused for its own reason: every one but the format
        # cases names both formats, or the missing format would be the
        # refusal instead.
        cases = [
            ({"x-image-meta-bogus": "1"}, None, 400, "Unknown image metadata header"),
            ({"x-image-meta-size": "abc"}, None, 400, "not an integer"),
            ({"x-image-meta-size": "9" * 20}, None, 400, "too large"),
            ({"x-image-meta-size": str(2 ** 41)}, None, 413, "larger than"),
            ({"x-image-meta-is_public": "maybe"}, None, 400, "Invalid boolean"),
            ({"x-image-meta-min_ram": "-1"}, None, 400, "must not be negative"),
            ({"x-image-meta-min_ram": str(2 ** 31)}, None, 400, "min_ram"),
            ({"x-image-meta-disk_format": "floppy"}, None, 400, "disk format"),
            ({"x-image-meta-disk_format": "ami", "x-image-meta-container_format": "bare"},
             None, 400, "must match"),
            ({"x-image-meta-name": "n" * 256}, None, 400, "name too long"),
            ({"x-image-meta-id": "not-a-uuid"}, None, 400, "must be a UUID"),
            ({"x-image-meta-status": "active"}, None, 403, "status"),
            ({"x-image-meta-checksum": "xyz"}, None, 400, "Invalid checksum"),
            ({"x-image-meta-store": "nowhere"}, None, 400, "Store for scheme nowhere"),
            ({"x-image-meta-location": "file:///etc/passwd"}, None, 400,
             "External sources are not supported: 'file'"),
            ({"x-image-meta-location": "/etc/passwd"}, None, 400,
             "External sources are not supported: 'no scheme'"),
            ({"x-image-meta-location": "gopher://x/y"}, None, 400,
             "scheme 'gopher' is not supported"),
            ({"x-glance-api-copy-from": "file:///etc/passwd"}, None, 400,
             "External sources are not supported: 'file'"),
            ({"x-glance-api-copy-from": "gopher://x/y"}, None, 400,
             "scheme 'gopher' is not supported"),
            ({"x-image-meta-location": "smb:user:SEKRIT@host/share?u=http://x/"}, None, 400,
             "External sources are not supported: 'no scheme'"),
            ({"x-glance-api-copy-from": "user:SEKRIT@127.0.0.1/x?next=http://a/"}, None, 400,
             "External sources are not supported: 'no scheme'"),
            ({"x-image-meta-location": "http://x/y", "x-glance-api-copy-from": "http://x/y"},
             None, 400, "only one way"),
            ({"Content-Type": "text/plain"}, b"abc", 400, "application/octet-stream"),
            ({"x-image-meta-disk_format": ""}, b"abc", 400, "disk_format is required"),
            ({"x-image-meta-container_format": ""}, b"abc", 400,
             "container_format is required"),
        ]
        for headers, data, code, why in cases:
            h = dict(RAW)
            h.update(headers)
            resp, body = await self.request("POST", "/v1/images", h, data)
            self.assertEqual(resp.code, code, (headers, body))
            self.assertIn(why.encode(), body, headers)
            self.assertNotIn(b"Traceback", body)
            self.assertNotIn(b"SEKRIT", body.upper())
        # Nothing was stored, and no image was made.
        self.assertEqual(os.listdir(os.path.join(self.glance.dataDir, "images")), [])
        for status in ("queued", "saving", "active", "killed"):
            resp, body = await self.request("GET", "/v1/images/detail?status=" + status,
                                            expect=200)
            self.assertEqual(json.loads(body)["images"], [], status)
        for path, code in [("/v1/images?limit=x", 400), ("/v1/images?limit=-1", 400),
                           ("/v1/images?sort_key=evil", 400), ("/v1/images?sort_dir=up", 400),
                           ("/v1/images?marker=nope", 400), ("/v1/images?size_min=x", 400),
                           ("/v1/images/detail?changes-since=yesterday", 400),
                           ("/v1/images?changes-since=9999-12-31T23:59:59-23:59", 400),
                           ("/v1/images/detail?changes-since=0001-01-01T00:00:00%2B23:59",
                            400),
                           ("/v1/images/detail?protected=perhaps", 400),
                           ("/v1/images/" + "f" * 300, 404),
                           # Not ASCII: a 503 where MySQL's id column is latin1.
                           ("/v1/images/%F0%9F%98%80", 404),
                           ("/v1/images/detail?marker=%F0%9F%98%80", 400),
                           ("/v1/images/%ff%fe", 400)]:
            resp, body = await self.request("GET", path)
            self.assertEqual(resp.code, code, (path, body))
        # An empty id is no id: refused, not a 500.
        await self.request("POST", "/v1/images", {"x-image-meta-id": ""}, expect=400)
        resp, body = await self.request("PATCH", "/v1/images")
        self.assertEqual(resp.code, 405)
        self.assertIn("GET", resp.headers.getRawHeaders("allow")[0])
        resp, body = await self.request("PUT", "/v1/images/x/members", {}, b"{not json")
        self.assertEqual(resp.code, 400)
        image = await self.create()
        for data in (b"[" * 100000 + b"]" * 100000,
                     b'{"memberships": [{"member_id": "\\ud800", "can_share": false}]}'):
            resp, body = await self.request("PUT", "/v1/images/%s/members" % (image["id"],),
                                            {}, data)
            self.assertEqual(resp.code, 400, (data[:80], body))
        resp, body = await self.request("POST", "/v1/images", {
            "x-image-meta-location": "http://" + "a" * 70 + ".com/x"})
        self.assertEqual(resp.code, 400, body)
        resp, body = await self.request("GET", "/v1/images", {"Accept": "application/json"})
        self.assertEqual(resp.code, 200)
        resp, body = await self.request("GET", "/v1/images?limit=x",
                                        {"Accept": "application/json"}, expect=400)
        self.assertEqual(json.loads(body), {"error": {"code": 400, "message":
                                                      "limit param must be an integer"}})
        self.assertEqual(resp.length, len(body))
        # Nothing above was a server error.
        self.assertNotIn("Traceback", self.glance.log())

    @async_test
    async def test_listsFiltersAndPaging(self):
        await self.server()
        made = []
        for i in range(7):
            made.append(await self.create(b"x" * (i + 1), {
                "x-image-meta-name": "img%d" % (i % 3),
                "x-image-meta-property-kind": "odd" if i % 2 else "even"}))
        resp, body = await self.request("GET", "/v1/images?limit=3&sort_key=size&sort_dir=asc",
                                        expect=200)
        page = json.loads(body)["images"]
        self.assertEqual([i["size"] for i in page], [1, 2, 3])
        self.assertEqual(set(page[0]), {"id", "name", "disk_format", "container_format",
                                        "checksum", "size"})
        resp, body = await self.request(
            "GET", "/v1/images?limit=3&sort_key=size&sort_dir=asc&marker=" + page[-1]["id"],
            expect=200)
        self.assertEqual([i["size"] for i in json.loads(body)["images"]], [4, 5, 6])
        resp, body = await self.request("GET", "/v1/images/detail?property-kind=odd",
                                        expect=200)
        self.assertEqual(sorted(i["size"] for i in json.loads(body)["images"]), [2, 4, 6])
        resp, body = await self.request("GET", "/v1/images/detail?name=img1&size_min=3",
                                        expect=200)
        self.assertEqual([i["size"] for i in json.loads(body)["images"]], [5])
        resp, body = await self.request("HEAD", "/v1/images/detail", expect=200)
        self.assertEqual(body, b"")

    @async_test
    async def test_updateAndDelete(self):
        await self.server()
        image = await self.create(b"abc", {"x-image-meta-property-a": "1",
                                           "x-image-meta-property-b": "2"})
        path = "/v1/images/" + image["id"]
        resp, body = await self.request("PUT", path, {"x-image-meta-name": "renamed",
                                                      "x-image-meta-property-c": "3"},
                                        expect=200)
        got = json.loads(body)["image"]
        self.assertEqual(got["name"], "renamed")
        self.assertEqual(got["properties"], {"c": "3"})
        resp, body = await self.request("PUT", path, {"x-glance-registry-purge-props": "false",
                                                      "x-image-meta-property-d": "4"},
                                        expect=200)
        self.assertEqual(json.loads(body)["image"]["properties"], {"c": "3", "d": "4"})
        await self.request("PUT", path, {"x-image-meta-size": "99"}, expect=403)
        await self.request("PUT", path, {"x-image-meta-status": "queued"}, expect=403)
        await self.request("PUT", path, {"x-image-meta-disk_format": "qcow2"}, expect=403)
        await self.request("PUT", path, {"x-image-meta-location": "http://example.com/x"},
                           expect=400)
        await self.request("PUT", path, {"x-image-meta-protected": "true"}, expect=200)
        await self.request("DELETE", path, expect=403)
        await self.request("PUT", path, {"x-image-meta-protected": "false"}, expect=200)
        resp, body = await self.request("DELETE", path, expect=200)
        # An empty body of known length, as Glance sent; not chunked.
        self.assertEqual((body, resp.length), (b"", 0))
        await self.request("HEAD", path, expect=404)
        await self.request("GET", path, expect=404)
        await self.request("DELETE", path, expect=404)
        self.assertEqual(os.listdir(os.path.join(self.glance.dataDir, "images")), [])

    @async_test
    async def test_members(self):
        await self.server(image_member_quota=2)
        image = await self.create(b"abc")
        base = "/v1/images/%s/members" % (image["id"],)
        await self.request("PUT", base + "/tenant2", expect=204)
        await self.request("PUT", base + "/tenant3", {},
                           json.dumps({"member": {"can_share": True}}).encode(), expect=204)
        resp, body = await self.request("GET", base, expect=200)
        self.assertEqual(json.loads(body), {"members": [
            {"member_id": "tenant2", "can_share": False},
            {"member_id": "tenant3", "can_share": True}]})
        await self.request("PUT", base + "/tenant4", expect=413)
        resp, body = await self.request("GET", base + "/tenant3", expect=200)
        self.assertEqual(json.loads(body)["member"]["can_share"], True)
        resp, body = await self.request("GET", "/v1/shared-images/tenant2", expect=200)
        self.assertEqual(json.loads(body), {"shared_images": [
            {"image_id": image["id"], "can_share": False}]})
        await self.request("PUT", base, {}, json.dumps({"memberships": [
            {"member_id": "tenant9", "can_share": False}]}).encode(), expect=204)
        resp, body = await self.request("GET", base, expect=200)
        self.assertEqual([m["member_id"] for m in json.loads(body)["members"]], ["tenant9"])
        await self.request("PUT", base, {}, json.dumps({"memberships": [
            {"member_id": "a"}, {"member_id": "b"}, {"member_id": "c"}]}).encode(), expect=413)
        await self.request("PUT", base, {}, json.dumps({"nope": 1}).encode(), expect=400)
        for bad, why in [({"member_id": "a\0b"}, b"NUL"),
                         ({"member_id": "m" * 256}, b"member_id string"),
                         ({"member_id": "  "}, b"member_id string"),
                         ({"member_id": 5}, b"member_id string"),
                         ({"member_id": "t", "can_share": "yes"}, b"true or false")]:
            resp, body = await self.request("PUT", base, {}, json.dumps(
                {"memberships": [bad]}).encode(), expect=400)
            self.assertIn(why, body, bad)
        resp, body = await self.request("PUT", base + "/" + "m" * 256, expect=400)
        self.assertIn(b"too long", body)
        for bad in [{"member": {"can_share": "yes"}}, {"member": {"can_share": 1}}]:
            resp, body = await self.request("PUT", base + "/tenant5", {},
                                            json.dumps(bad).encode(), expect=400)
            self.assertIn(b"true or false", body)
        # None of the refusals above changed the members.
        resp, body = await self.request("GET", base, expect=200)
        self.assertEqual([m["member_id"] for m in json.loads(body)["members"]], ["tenant9"])
        await self.request("DELETE", base + "/tenant9", expect=204)
        await self.request("DELETE", base + "/tenant9", expect=404)
        await self.request("GET", base + "/tenant9", expect=404)
        # A member whose id holds a "/" is named in a path as "%2F", as
        # it can be in a body; a blank one is refused in either.
        await self.request("PUT", base, {}, json.dumps({"memberships": [
            {"member_id": "a/b"}]}).encode(), expect=204)
        resp, body = await self.request("GET", base + "/a%2Fb", expect=200)
        self.assertEqual(json.loads(body)["member"]["member_id"], "a/b")
        resp, body = await self.request("GET", "/v1/shared-images/a%2Fb", expect=200)
        self.assertEqual([i["image_id"] for i in json.loads(body)["shared_images"]],
                         [image["id"]])
        await self.request("DELETE", base + "/a%2Fb", expect=204)
        await self.request("PUT", base + "/c%2Fd", expect=204)
        resp, body = await self.request("GET", base, expect=200)
        self.assertEqual([m["member_id"] for m in json.loads(body)["members"]], ["c/d"])
        for blank in ("%20", "%20%20"):
            resp, body = await self.request("PUT", base + "/" + blank, expect=400)
            self.assertIn(b"blank", body)
        resp, body = await self.request("PUT", base + "/a%00b", expect=400)
        self.assertIn(b"NUL", body)

    @async_test
    async def test_writesAnswerWithTheChecksumAsETag(self):
        """
        A create or update that leaves the image with a checksum answers
        with it as the ETag, as Glance v1 did; one without has none.
        """
        import hashlib
        await self.server()
        resp, body = await self.request("POST", "/v1/images", dict(RAW), b"abc", expect=201)
        image = json.loads(body)["image"]
        self.assertEqual(self.header(resp, "etag"), hashlib.md5(b"abc").hexdigest())
        resp, body = await self.request(
            "PUT", "/v1/images/" + image["id"], {"x-image-meta-name": "n"}, expect=200)
        self.assertEqual(self.header(resp, "etag"), hashlib.md5(b"abc").hexdigest())
        resp, body = await self.request("POST", "/v1/images", {"x-image-meta-name": "q"},
                                        expect=201)
        self.assertIsNone(self.header(resp, "etag"))
        queued = json.loads(body)["image"]
        resp, body = await self.request("PUT", "/v1/images/" + queued["id"], dict(RAW),
                                        b"defg", expect=200)
        self.assertEqual(self.header(resp, "etag"), hashlib.md5(b"defg").hexdigest())

    @async_test
    async def test_canShareNotGivenIsKept(self):
        """
        A membership written again without can_share keeps the one it has,
        whether one member is PUT (with no body, or none for it) or the
        whole list is; a new member without it cannot share.  So Glance
        v1's registry did; replacing the list with curl once took every
        member's right to share away.
        """
        await self.server()
        image = await self.create(b"abc")
        base = "/v1/images/%s/members" % (image["id"],)

        async def members():
            resp, body = await self.request("GET", base, expect=200)
            return [(m["member_id"], m["can_share"]) for m in json.loads(body)["members"]]
        await self.request("PUT", base + "/t1", {},
                           json.dumps({"member": {"can_share": True}}).encode(), expect=204)
        await self.request("PUT", base + "/t1", expect=204)
        await self.request("PUT", base + "/t1", {}, json.dumps({"member": {}}).encode(),
                           expect=204)
        self.assertEqual(await members(), [("t1", True)])
        await self.request("PUT", base, {}, json.dumps({"memberships": [
            {"member_id": "t1"}, {"member_id": "t2"}]}).encode(), expect=204)
        self.assertEqual(await members(), [("t1", True), ("t2", False)])
        await self.request("PUT", base, {}, json.dumps({"memberships": [
            {"member_id": "t1", "can_share": False}, {"member_id": "t2", "can_share": True}]}
        ).encode(), expect=204)
        self.assertEqual(await members(), [("t1", False), ("t2", True)])

    @async_test
    async def test_textNoDatabaseStores(self):
        """
        Text no database column can hold (a NUL character, which PostgreSQL
        refuses; an owner longer than its column) is a 400 on every
        database, not a 500 on some.
        """
        await self.server()
        iid = (await self.create(headers=RAW))["id"]
        for method, path in [
                ("GET", "/v1/images/%00"), ("HEAD", "/v1/images/a%00b"),
                ("DELETE", "/v1/images/%00"), ("GET", "/v1/images/%00/members"),
                ("PUT", "/v1/images/%s/members/a%%00b" % (iid,)),
                ("DELETE", "/v1/images/%s/members/a%%00b" % (iid,)),
                ("GET", "/v1/shared-images/%00"), ("GET", "/v1/images?name=%00"),
                ("GET", "/v1/images/detail?property-a=%00"),
                ("GET", "/v1/images/detail?property-%00=a"), ("GET", "/v1/images?marker=%00"),
                ("GET", "/v1/images?status=%00")]:
            await self.request(method, path, expect=400)
        body = json.dumps({"memberships": [{"member_id": "a\u0000b"}]}).encode()
        await self.request("PUT", "/v1/images/%s/members" % (iid,),
                           {"Content-Type": "application/json"}, body, expect=400)
        resp, body = await self.request("PUT", "/v1/images/" + iid,
                                        {"x-image-meta-owner": "o" * 256}, expect=400)
        self.assertIn(b"owner", body.lower())
        await self.request("PUT", "/v1/images/" + iid, {"x-image-meta-owner": "o" * 255},
                           expect=200)

    @async_test
    async def test_propertyQuota(self):
        await self.server(image_property_quota=2)
        await self.create(headers={"x-image-meta-property-a": "1",
                                   "x-image-meta-property-b": "2",
                                   "x-image-meta-property-c": "3"}, expect=413)
        image = await self.create(headers={"x-image-meta-property-a": "1"})
        await self.request("PUT", "/v1/images/" + image["id"], {
            "x-glance-registry-purge-props": "false",
            "x-image-meta-property-b": "2", "x-image-meta-property-c": "3"}, expect=413)

    @async_test
    async def test_truncatedStoreFileIsNotPassedOffAsWhole(self):
        """
        If the stored file is shorter than the image's size, the download
        breaks off: the client never gets a complete-looking short body.
        """
        await self.server()
        data = os.urandom(4 * 1024 * 1024)
        image = await self.create(data)
        path = os.path.join(self.glance.dataDir, "images", image["id"])
        with open(path, "r+b") as f:
            f.truncate(1024 * 1024)
        resp, body = await self.request("GET", "/v1/images/" + image["id"], expect=503)
        self.assertNotIn(b"\x00" * 16, body)
        self.assertLess(len(body), 200)
        # The server goes on serving.
        await self.request("GET", "/versions", expect=200)

    @async_test
    async def test_missingStoreFileIsA404(self):
        """
        An active image whose file is gone from the store: its metadata is
        still served, its data is a 404 that says so, not a 500.
        """
        await self.server()
        image = await self.create(b"hello")
        os.remove(os.path.join(self.glance.dataDir, "images", image["id"]))
        resp, body = await self.request("GET", "/v1/images/" + image["id"], expect=404)
        self.assertIn(b"was not found in the store", body)
        await self.request("HEAD", "/v1/images/" + image["id"], expect=200)
        self.assertNotIn("Traceback", self.glance.log())

    @async_test
    async def test_identityConflicts(self):
        """
        An id that is taken is a 409; an id never changes; the data of an
        image that has none yet is a 404.
        """
        await self.server()
        queued = await self.create()
        path = "/v1/images/" + queued["id"]
        resp, body = await self.request("POST", "/v1/images",
                                        {"x-image-meta-id": queued["id"]}, expect=409)
        self.assertIn(b"already exists", body)
        resp, body = await self.request("PUT", path,
                                        {"x-image-meta-id": "0" * 8 + "-0000-0000-0000-" + "0" * 12},
                                        expect=403)
        self.assertIn(b"cannot change", body)
        await self.request("PUT", path, {"x-image-meta-id": queued["id"],
                                         "x-image-meta-name": "same id"}, expect=200)
        resp, body = await self.request("GET", path, expect=404)
        self.assertIn(b"is not active", body)

    @async_test
    async def test_clientGoneMidDownload(self):
        await self.server()
        image = await self.create(os.urandom(8 * 1024 * 1024))
        from twisted.internet.protocol import ClientCreator, Protocol
        from twisted.internet.task import deferLater
        proto = await ClientCreator(reactor, Protocol).connectTCP("127.0.0.1", self.glance.port)
        proto.transport.write(b"GET /v1/images/%s HTTP/1.1\r\nHost: x\r\n\r\n"
                              % (image["id"].encode(),))
        await deferLater(reactor, 0.2, lambda: None)
        proto.transport.abortConnection()
        await deferLater(reactor, 0.5, lambda: None)
        resp, body = await self.request("GET", "/v1/images/" + image["id"], expect=200)
        self.assertEqual(len(body), 8 * 1024 * 1024)
        self.assertNotIn("Traceback", self.glance.log())

    @async_test
    async def test_shutdownMidDownloadSaysSo(self):
        """
        A download the server cuts short because it is stopping says so in
        one line ("the server is shutting down"); it was logged as a
        warning that it "broke off: Stopped()", as if the store had failed.
        """
        await self.server()
        from twisted.internet.protocol import ClientCreator, Protocol
        from twisted.internet.task import deferLater
        image = await self.create(os.urandom(64 * 1024 * 1024))

        class Stalled(Protocol):
            def dataReceived(self, data):
                self.transport.pauseProducing()

        proto = await ClientCreator(reactor, Stalled).connectTCP("127.0.0.1", self.glance.port)
        proto.transport.write(b"GET /v1/images/%s HTTP/1.1\r\nHost: x\r\n\r\n"
                              % (image["id"].encode(),))
        await deferLater(reactor, 0.5, lambda: None)
        await self.glance.stop()
        proto.transport.abortConnection()
        log = self.glance.log()
        self.assertIn("download of %s cut short: the server is shutting down" % (image["id"],),
                      log)
        self.assertNotIn("broke off", log)

    @async_test
    async def test_halfClosedClientIsAnswered(self):
        """
        A client that shuts its side for writing once it has sent its
        request (shutdown(SHUT_WR)) gets its answer, then the connection
        closes; it got none, though an upload it had sent whole went
        active.  A request cut off by the half-close gets no answer.
        """
        import socket

        from twisted.internet.threads import deferToThread
        await self.server()
        port = self.glance.port

        def exchange(request):
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
                answer = b""
                while True:
                    data = sock.recv(65536)
                    if not data:
                        return answer
                    answer += data

        answer = await deferToThread(exchange, b"GET /versions HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        data = os.urandom(100000)
        answer = await deferToThread(exchange, (
            b"POST /v1/images HTTP/1.1\r\nHost: x\r\nx-image-meta-name: half\r\n"
            b"x-image-meta-disk-format: raw\r\nx-image-meta-container-format: bare\r\n"
            b"content-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n"
            % (len(data),)) + data)
        self.assertTrue(answer.startswith(b"HTTP/1.1 201 "), answer)
        self.assertIn(hashlib.md5(data).hexdigest().encode(), answer)
        answer = await deferToThread(exchange, b"GET /versions HTTP/1.1\r\nHost: x\r\n")
        self.assertEqual(answer, b"")
        answer = await deferToThread(exchange, (
            b"POST /v1/images HTTP/1.1\r\nHost: x\r\nx-image-meta-name: cut\r\n"
            b"x-image-meta-disk-format: raw\r\nx-image-meta-container-format: bare\r\n"
            b"content-type: application/octet-stream\r\ncontent-length: 100\r\n\r\nabc"))
        self.assertNotIn(b"HTTP/1.1 201 ", answer)
        self.assertNotIn("Traceback", self.glance.log())

    @async_test
    async def test_stalledSendfileDownloadSaysSo(self):
        """
        A download by sendfile whose client reads nothing for
        client_socket_timeout ends with one line at info that says so, as
        one through memory does; it was a warning that it "broke off:
        Stalled()", the words of a store that failed.
        """
        await self.server(client_socket_timeout="1")
        from twisted.internet.protocol import ClientCreator, Protocol
        from twisted.internet.task import deferLater
        image = await self.create(os.urandom(64 * 1024 * 1024))

        class Stalled(Protocol):
            def dataReceived(self, data):
                self.transport.pauseProducing()

        proto = await ClientCreator(reactor, Stalled).connectTCP("127.0.0.1", self.glance.port)
        self.addCleanup(proto.transport.abortConnection)
        proto.transport.write(b"GET /v1/images/%s HTTP/1.1\r\nHost: x\r\n\r\n"
                              % (image["id"].encode(),))
        said = "download of %s ended: its client read nothing for 1 seconds" % (image["id"],)
        for _ in range(200):
            if said in self.glance.log():
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertIn(said, self.glance.log())
        self.assertNotIn("broke off", self.glance.log())

    @async_test
    async def test_shutdownMidUploadKills(self):
        """
        A server told to stop (SIGTERM) while an upload streams in drops
        that upload's connection, marks the image killed and removes its
        partial bytes before it exits: nothing is left in C{saving}.
        """
        await self.server()
        from twisted.internet.task import deferLater
        proto = await self.startUpload(b"cut")
        for _ in range(200):
            resp, body = await self.request("GET", "/v1/images/detail?name=cut", expect=200)
            images = json.loads(body)["images"]
            if images and images[0]["status"] == "saving":
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(images[0]["status"], "saving", self.glance.log())
        await self.glance.stop()
        # Started again on the same database: the image was killed.
        await self.server(dataDir=self.glance.dataDir)
        resp, body = await self.request("HEAD", "/v1/images/" + images[0]["id"], expect=200)
        self.assertEqual(self.header(resp, "x-image-meta-status"), "killed")
        self.assertEqual(os.listdir(os.path.join(self.glance.dataDir, "images")), [])
        proto.transport.loseConnection()

    async def statusOf(self, name: str):
        resp, body = await self.request("GET", "/v1/images/detail?name=" + name, expect=200)
        images = json.loads(body)["images"]
        return images[0]["status"] if images else None

    async def waitForStatus(self, name: str, status: str, seconds: float) -> None:
        from twisted.internet.task import deferLater
        for _ in range(int(seconds / 0.05)):
            if await self.statusOf(name) == status:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(await self.statusOf(name), status, self.glance.log())

    @async_test
    async def test_clientGoneMidUploadKills(self):
        """
        A client that disconnects part way leaves a killed image and no
        bytes on disk.
        """
        await self.server()
        proto = await self.startUpload(b"gone")
        # Wait until the bytes are flowing into the store, then vanish.
        await self.waitForStatus("gone", "saving", 10)
        proto.transport.abortConnection()
        await self.waitForStatus("gone", "killed", 10)
        self.assertEqual(os.listdir(os.path.join(self.glance.dataDir, "images")), [])

    @async_test
    async def test_uploadOfAKilledServerEndsKilled(self):
        """
        A server killed in the middle of an upload (SIGKILL: it cannot end
        the upload itself) leaves the image saving only until its upload
        lease runs out; then the next server on the same database kills it,
        and no partial file stays.  While the server lived, it kept the
        lease however long the upload took.
        """
        first = await self.server(upload_lease_seconds=3)
        proto = await self.startUpload(b"orphan")
        self.addCleanup(proto.transport.abortConnection)
        await self.waitForStatus("orphan", "saving", 10)
        # While its server lives, the upload outlasts its lease: renewed.
        from twisted.internet.task import deferLater
        await deferLater(reactor, 7, lambda: None)
        self.assertEqual(await self.statusOf("orphan"), "saving")
        images = os.path.join(first.dataDir, "images")
        self.assertEqual(len([n for n in os.listdir(images) if ".part-" in n]), 1)
        first.process.signalProcess("KILL")
        await first.watcher.ended
        await self.server(dataDir=first.dataDir, upload_lease_seconds=3)
        self.assertEqual(await self.statusOf("orphan"), "saving")
        await self.waitForStatus("orphan", "killed", 20)
        self.assertEqual(os.listdir(images), [])
        self.assertIn("upload abandoned: its upload lease ran out", self.glance.log())
        self.assertNotIn("Traceback", self.glance.log())


class SharedDatabaseMixin:
    """
    The same API tests with the registry in a shared database, its schema
    made by the real C{glancetx-manage db sync} command first.
    """

    def databaseURL(self):
        raise NotImplementedError()

    async def server(self, **options):
        from twisted.internet.utils import getProcessOutputAndValue
        # One database per test, however many servers the test starts.
        if not hasattr(self, "_databaseURL"):
            self._databaseURL = self.databaseURL()
        url = self._databaseURL
        conf = os.path.abspath(self.mktemp())
        with open(conf, "w") as f:
            f.write("[DEFAULT]\nsql_connection = %s\n" % (url,))
        manage = os.path.join(os.path.dirname(os.path.abspath(__import__("sys").executable)),
                              "glancetx-manage")
        out, err, code = await getProcessOutputAndValue(
            manage, ["--config", conf, "db", "sync"], env=dict(os.environ))
        self.assertEqual(code, 0, out + err)
        options["sql_connection"] = url
        return await APITests.server(self, **options)


class PostgreSQLAPITests(SharedDatabaseMixin, APITests):
    def databaseURL(self):
        from tests import dbs
        return dbs.postgresURL(self)


class MySQLAPITests(SharedDatabaseMixin, APITests):
    def databaseURL(self):
        from tests import dbs
        return dbs.mysqlURL(self)


class BaseURLTests(SynchronousTestCase):
    def test_noHostHeaderIPv6(self):
        """
        Without a Host header (HTTP/1.0) the links name the address the
        client reached, an IPv6 one in brackets: "http://::1:9292/v1/" was
        no URL at all.
        """
        from twisted.internet.address import IPv4Address, IPv6Address
        from twisted.web.test.requesthelper import DummyRequest

        from glancetx.web.app import _baseURL
        request = DummyRequest([b""])
        request.isSecure = lambda: False
        request.getHost = lambda: IPv6Address("TCP", "::1", 9292)
        self.assertEqual(_baseURL(request), "http://[::1]:9292")
        request.getHost = lambda: IPv4Address("TCP", "127.0.0.1", 9292)
        self.assertEqual(_baseURL(request), "http://127.0.0.1:9292")
