"""
The real python-glanceclient CLI (C{glance --os-image-api-version 1 ...}),
run as a subprocess against the real C{twistd glance} on loopback.

The CLI comes from another virtualenv: its C{glance} executable is named by
the environment variable C{GLANCETX_GLANCE_CLI}.  Without it these tests are
skipped, except on CI (C{CI=true}), where its absence is a failure.

About the CLI's standard input: glanceclient treats any stdin that is not a
terminal as image data (C{image-create} uploads it; C{image-update} of an
active image refuses to run), and with stdin closed C{image-update} crashes
(C{sys.stdin} is None).  So a command that sends no data gets a pseudo
terminal as its stdin, just like a user at a shell, and a command that
uploads from stdin gets a pipe that the test writes the bytes into.
"""

import hashlib
import json
import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from tests.server import GlanceServer

CLI_ENV = "GLANCETX_GLANCE_CLI"

#: No CLI command should take anywhere near this long.
CLI_DEADLINE = 60


def async_test(f):
    def wrapper(self):
        return ensureDeferred(f(self))
    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper


def findCLI(testCase) -> str:
    """
    The path of the C{glance} executable, or skip (fail on CI) without one.
    """
    path = os.environ.get(CLI_ENV)
    if not path:
        problem = "%s is not set: it must name python-glanceclient's glance executable" % (
            CLI_ENV,)
    elif not (os.path.isfile(path) and os.access(path, os.X_OK)):
        problem = "%s=%r is not an executable file" % (CLI_ENV, path)
    else:
        return path
    if os.environ.get("CI") == "true":
        testCase.fail("CI=true but the glance CLI is unavailable: " + problem)
    raise SkipTest(problem)


def cliEnvironment() -> dict:
    """
    The test's environment without anything that could point the CLI
    elsewhere (OS_* settings) or into this project's Python (PYTHONPATH).
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OS_") and k not in ("PYTHONPATH", "PYTHONHOME")}
    env["LC_ALL"] = env["LANG"] = "C.UTF-8"
    return env


class CLIResult:
    def __init__(self, argv, out: bytes, err: bytes, code, signal):
        self.argv = argv
        self.out = out.decode("utf-8", "replace")
        self.err = err.decode("utf-8", "replace")
        self.code = code
        self.signal = signal

    def __repr__(self):
        return "<glance %s: exit %r signal %r\n--- stdout\n%s--- stderr\n%s>" % (
            " ".join(self.argv), self.code, self.signal, self.out, self.err)


class _CLIProtocol(ProcessProtocol):
    def __init__(self, stdin):
        self.stdin = stdin
        self.out = []
        self.err = []
        self.ended = Deferred()

    def connectionMade(self) -> None:
        if self.stdin is not None:
            self.transport.write(self.stdin)
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason) -> None:
        self.ended.callback((b"".join(self.out), b"".join(self.err),
                             reason.value.exitCode, reason.value.signal))


def parseTable(text: str) -> list:
    """
    The rows of the first prettytable in C{text}, as lists of stripped cells,
    header row first.
    """
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|"):
            rows.append([cell.strip() for cell in line[1:-1].split("|")])
    return rows


def parseShow(text: str) -> dict:
    """
    C{image-show}/C{image-create}/C{image-update} output: Property -> Value.
    """
    rows = parseTable(text)
    if not rows or rows[0] != ["Property", "Value"]:
        raise AssertionError("not a Property/Value table:\n" + text)
    return {k: v for k, v in rows[1:]}


def parseList(text: str) -> list:
    """
    C{image-list}/C{member-list} output: one dict per row, keyed by header.
    """
    rows = parseTable(text)
    if not rows:
        raise AssertionError("no table in:\n" + text)
    return [dict(zip(rows[0], row)) for row in rows[1:]]


class CLITests(TestCase):
    timeout = 120

    def setUp(self):
        self.cli = findCLI(self)
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)
        return ensureDeferred(self._startServer())

    async def _startServer(self):
        self.server = await GlanceServer(self).start()

    # -- helpers ---------------------------------------------------------------

    async def glance(self, *args, stdin=None) -> CLIResult:
        """
        Run C{glance --os-image-api-version 1 ... <args>}.  C{stdin}: bytes
        to pipe in, or None for a terminal with nothing typed.
        """
        argv = [self.cli, "--os-image-api-version", "1",
                "--os-image-url", self.server.url, "--os-auth-token", "x"] + list(args)
        proto = _CLIProtocol(stdin)
        ptyFDs = None
        if stdin is None:
            ptyFDs = os.openpty()
            childFDs = {0: ptyFDs[1], 1: "r", 2: "r"}
        else:
            childFDs = {0: "w", 1: "r", 2: "r"}
        try:
            process = reactor.spawnProcess(proto, self.cli, argv, env=cliEnvironment(),
                                           path=self.tmp, childFDs=childFDs)
        finally:
            if ptyFDs is not None:
                os.close(ptyFDs[1])

        def tooSlow():
            try:
                process.signalProcess("KILL")
            except Exception:
                pass
        killer = reactor.callLater(CLI_DEADLINE, tooSlow)
        try:
            out, err, code, signal = await proto.ended
        finally:
            if killer.active():
                killer.cancel()
            if ptyFDs is not None:
                os.close(ptyFDs[0])
        result = CLIResult(list(args), out, err, code, signal)
        self.assertIsNone(signal, result)
        return result

    async def ok(self, *args, stdin=None) -> CLIResult:
        result = await self.glance(*args, stdin=stdin)
        self.assertEqual(result.code, 0, result)
        self.assertNotIn("Traceback", result.err, result)
        return result

    async def show(self, *args, stdin=None) -> dict:
        return parseShow((await self.ok(*args, stdin=stdin)).out)

    async def imageList(self) -> list:
        rows = parseList((await self.ok("image-list")).out)
        for row in rows:
            self.assertEqual(set(row), {"ID", "Name", "Disk Format", "Container Format",
                                        "Size", "Status"}, row)
        return rows

    def http(self):
        if not hasattr(self, "_http"):
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool
            self._http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(
                reactor, persistent=False)))
        return self._http

    async def request(self, method, path, expect=None):
        resp = await self.http().request(method, self.server.url + path)
        body = await resp.content()
        if expect is not None:
            self.assertEqual(resp.code, expect, body)
        return resp, body

    async def head(self, imageId) -> dict:
        """
        The image's metadata headers (lower-cased names) from a direct HEAD.
        """
        resp, _ = await self.request("HEAD", "/v1/images/" + imageId, expect=200)
        return {k.decode("ascii").lower(): v[0].decode("utf-8")
                for k, v in resp.headers.getAllRawHeaders()}

    async def allImages(self) -> list:
        """
        Every image record, deleted and killed ones included.
        """
        resp, body = await self.request(
            "GET", "/v1/images/detail?changes-since=2000-01-01T00:00:00&limit=1000",
            expect=200)
        return json.loads(body)["images"]

    def writeImage(self, name="image.bin", size=3 * 1024 * 1024 + 17):
        data = os.urandom(size)
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path, data

    def storedImageFiles(self) -> list:
        images = os.path.join(self.server.dataDir, "images")
        return sorted(os.listdir(images)) if os.path.isdir(images) else []

    async def assertNoServerTraceback(self):
        """
        The server logged no traceback.  An unhandled failure in a Deferred
        is only logged when the Deferred is garbage-collected, so first give
        the server some work (and so allocations) and a moment.
        """
        for _ in range(40):
            await self.request("GET", "/v1/images/detail", expect=200)
        await deferLater(reactor, 0.5, lambda: None)
        lines = self.server.log().splitlines()
        bad = [i for i, line in enumerate(lines)
               if "Traceback" in line or "Unhandled error" in line or "#critical]" in line]
        if bad:
            self.fail("the server logged an error:\n" + "\n".join(lines[bad[0]:bad[0] + 20]))

    # -- tests -----------------------------------------------------------------

    @async_test
    async def test_createFromFile(self):
        """
        C{image-create --file} with properties, min-ram and is-public makes
        an active image whose size and checksum are those of the file.
        """
        path, data = self.writeImage()
        shown = await self.show(
            "image-create", "--name", "from-file", "--disk-format", "qcow2",
            "--container-format", "bare", "--file", path, "--property", "k=v",
            "--property", "distro=Debian", "--min-ram", "512", "--is-public", "True")
        checksum = hashlib.md5(data).hexdigest()
        self.assertEqual(shown["status"], "active")
        self.assertEqual(shown["name"], "from-file")
        self.assertEqual(shown["size"], str(len(data)))
        self.assertEqual(shown["checksum"], checksum)
        self.assertEqual(shown["disk_format"], "qcow2")
        self.assertEqual(shown["container_format"], "bare")
        self.assertEqual(shown["min_ram"], "512")
        self.assertEqual(shown["min_disk"], "0")
        self.assertEqual(shown["is_public"], "True")
        self.assertEqual(shown["protected"], "False")
        self.assertEqual(shown["Property 'k'"], "v")
        self.assertEqual(shown["Property 'distro'"], "Debian")
        self.assertRegex(shown["id"], r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                                      r"[0-9a-f]{12}$")
        self.assertNotIn("location", shown)

        # The server agrees, and holds exactly these bytes.
        meta = await self.head(shown["id"])
        self.assertEqual(meta["x-image-meta-status"], "active")
        self.assertEqual(meta["x-image-meta-size"], str(len(data)))
        self.assertEqual(meta["x-image-meta-checksum"], checksum)
        self.assertEqual(meta["etag"], checksum)
        self.assertEqual(meta["x-image-meta-min_ram"], "512")
        self.assertEqual(meta["x-image-meta-is_public"].lower(), "true")
        self.assertEqual(meta["x-image-meta-property-k"], "v")
        self.assertEqual(meta["x-image-meta-property-distro"], "Debian")
        self.assertNotIn("x-image-meta-location", meta)
        resp, body = await self.request("GET", "/v1/images/" + shown["id"], expect=200)
        self.assertEqual(hashlib.md5(body).hexdigest(), checksum)
        self.assertEqual(len(body), len(data))
        self.assertEqual(self.storedImageFiles(), [shown["id"]])

    @async_test
    async def test_copyFromIPv6Origin(self):
        """
        C{image-create --copy-from http://[::1]:PORT/...}: the client
        percent-encodes the brackets (%5B, %5D), which the server puts
        back; it answered "not an http location".
        """
        from twisted.web.server import Site
        from twisted.web.static import Data
        data = os.urandom(300 * 1024)
        image = Data(data, "application/octet-stream")
        image.isLeaf = True
        origin = reactor.listenTCP(0, Site(image), interface="::1")
        self.addCleanup(origin.stopListening)
        await self.server.stop()
        self.server = await GlanceServer(self, {"copy_from_allowed_networks": "::1/128"}).start()
        shown = await self.show(
            "image-create", "--name", "v6", "--disk-format", "raw", "--container-format",
            "bare", "--copy-from", "http://[::1]:%d/img" % (origin.getHost().port,))
        for _ in range(100):
            meta = await self.head(shown["id"])
            if meta["x-image-meta-status"] != "queued" and meta["x-image-meta-status"] != "saving":
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(meta["x-image-meta-status"], "active")
        self.assertEqual(meta["x-image-meta-checksum"], hashlib.md5(data).hexdigest())

    @async_test
    async def test_createFromStdin(self):
        """
        Data piped into C{image-create} (its size unknown to the client, so
        sent chunked with no x-image-meta-size) is stored whole.
        """
        _, data = self.writeImage(size=2 * 1024 * 1024 + 3)
        result = await self.ok("--debug", "image-create", "--name", "piped",
                               "--disk-format", "raw", "--container-format", "bare",
                               stdin=data)
        # The client really did not announce a size: the server had to count.
        posts = [line for line in result.err.splitlines()
                 if line.startswith("curl") and "-X POST" in line]
        self.assertTrue(posts, result)
        for line in posts:
            self.assertNotIn("x-image-meta-size", line.lower())
        shown = parseShow(result.out)
        self.assertEqual(shown["status"], "active")
        self.assertEqual(shown["size"], str(len(data)))
        self.assertEqual(shown["checksum"], hashlib.md5(data).hexdigest())
        self.assertEqual(shown["is_public"], "False")
        meta = await self.head(shown["id"])
        self.assertEqual(meta["x-image-meta-size"], str(len(data)))
        self.assertEqual(meta["etag"], hashlib.md5(data).hexdigest())
        resp, body = await self.request("GET", "/v1/images/" + shown["id"], expect=200)
        self.assertTrue(body == data, "downloaded bytes differ from those piped in")

    @async_test
    async def test_listShowUpdateDownload(self):
        path, data = self.writeImage()
        first = await self.show("image-create", "--name", "first", "--disk-format", "raw",
                                "--container-format", "bare", "--file", path,
                                "--property", "a=1", "--property", "b=2")
        second = await self.show("image-create", "--name", "second", "--disk-format", "iso",
                                 "--container-format", "bare", stdin=b"tiny image")

        # image-list shows both, with their sizes and formats.
        rows = {row["ID"]: row for row in await self.imageList()}
        self.assertEqual(set(rows), {first["id"], second["id"]})
        self.assertEqual(rows[first["id"]], {
            "ID": first["id"], "Name": "first", "Disk Format": "raw",
            "Container Format": "bare", "Size": str(len(data)), "Status": "active"})
        self.assertEqual(rows[second["id"]], {
            "ID": second["id"], "Name": "second", "Disk Format": "iso",
            "Container Format": "bare", "Size": "10", "Status": "active"})

        # image-show, by id and by name.
        for ref in (first["id"], "first"):
            shown = await self.show("image-show", ref)
            self.assertEqual(shown["id"], first["id"])
            self.assertEqual(shown["name"], "first")
            self.assertEqual(shown["size"], str(len(data)))
            self.assertEqual(shown["checksum"], hashlib.md5(data).hexdigest())
            self.assertEqual(shown["Property 'a'"], "1")
            self.assertEqual(shown["Property 'b'"], "2")
            self.assertEqual(shown["status"], "active")

        # image-update --name --property keeps the other properties...
        updated = await self.show("image-update", "--name", "renamed", "--property", "c=3",
                                  first["id"])
        self.assertEqual(updated["name"], "renamed")
        self.assertEqual({k: v for k, v in updated.items() if k.startswith("Property '")},
                         {"Property 'a'": "1", "Property 'b'": "2", "Property 'c'": "3"})
        meta = await self.head(first["id"])
        self.assertEqual(meta["x-image-meta-name"], "renamed")
        self.assertEqual({k: v for k, v in meta.items()
                          if k.startswith("x-image-meta-property-")},
                         {"x-image-meta-property-a": "1", "x-image-meta-property-b": "2",
                          "x-image-meta-property-c": "3"})
        # ...and changes neither the bytes' size nor their checksum.
        self.assertEqual(meta["x-image-meta-size"], str(len(data)))
        self.assertEqual(meta["etag"], hashlib.md5(data).hexdigest())

        # --purge-props removes every property not named.
        purged = await self.show("image-update", "--purge-props", "--property", "a=one",
                                 "renamed")
        self.assertEqual({k: v for k, v in purged.items() if k.startswith("Property '")},
                         {"Property 'a'": "one"})
        meta = await self.head(first["id"])
        self.assertEqual({k: v for k, v in meta.items()
                          if k.startswith("x-image-meta-property-")},
                         {"x-image-meta-property-a": "one"})
        shown = await self.show("image-show", first["id"])
        self.assertEqual(shown["name"], "renamed")
        self.assertNotIn("Property 'b'", shown)

        # The other image was not touched.
        self.assertEqual((await self.head(second["id"]))["x-image-meta-name"], "second")

        # image-download --file writes exactly the bytes uploaded.
        out = os.path.join(self.tmp, "out")
        result = await self.ok("image-download", "--file", out, first["id"])
        with open(out, "rb") as f:
            self.assertTrue(f.read() == data, "downloaded file differs from the original")
        self.assertEqual(result.out.strip(), "")
        out2 = os.path.join(self.tmp, "out2")
        await self.ok("image-download", "--file", out2, "second")
        with open(out2, "rb") as f:
            self.assertEqual(f.read(), b"tiny image")

    @async_test
    async def test_members(self):
        image = await self.show("image-create", "--name", "shared", "--disk-format", "raw",
                                "--container-format", "bare", stdin=b"shared bytes")
        imageId = image["id"]
        await self.ok("member-create", imageId, "tenant2")
        await self.ok("member-create", "--can-share", imageId, "tenant3")

        rows = parseList((await self.ok("member-list", "--image-id", imageId)).out)
        self.assertEqual(sorted((r["Image ID"], r["Member ID"], r["Can Share"]) for r in rows),
                         [(imageId, "tenant2", ""), (imageId, "tenant3", "True")])
        resp, body = await self.request("GET", "/v1/images/%s/members" % (imageId,),
                                        expect=200)
        self.assertEqual(sorted(json.loads(body)["members"], key=lambda m: m["member_id"]),
                         [{"member_id": "tenant2", "can_share": False},
                          {"member_id": "tenant3", "can_share": True}])

        # The tenant's side: what is shared with tenant3.
        rows = parseList((await self.ok("member-list", "--tenant-id", "tenant3")).out)
        self.assertEqual([(r["Image ID"], r["Member ID"], r["Can Share"]) for r in rows],
                         [(imageId, "tenant3", "True")])

        await self.ok("member-delete", imageId, "tenant2")
        rows = parseList((await self.ok("member-list", "--image-id", imageId)).out)
        self.assertEqual([(r["Member ID"], r["Can Share"]) for r in rows],
                         [("tenant3", "True")])
        await self.request("GET", "/v1/images/%s/members/tenant2" % (imageId,), expect=404)
        resp, body = await self.request("GET", "/v1/shared-images/tenant2", expect=200)
        self.assertEqual(json.loads(body), {"shared_images": []})

        # Deleting a member that is not there fails visibly.
        result = await self.glance("member-delete", imageId, "tenant2")
        self.assertNotEqual(result.code, 0, result)
        await self.assertNoServerTraceback()

    @async_test
    async def test_delete(self):
        path, data = self.writeImage()
        doomed = await self.show("image-create", "--name", "doomed", "--disk-format", "raw",
                                 "--container-format", "bare", "--file", path)
        kept = await self.show("image-create", "--name", "kept", "--disk-format", "raw",
                               "--container-format", "bare", stdin=b"keep me")
        self.assertEqual(self.storedImageFiles(), sorted([doomed["id"], kept["id"]]))

        result = await self.ok("image-delete", doomed["id"])
        self.assertEqual(result.out.strip(), "")

        result = await self.glance("image-show", doomed["id"])
        self.assertNotEqual(result.code, 0, result)
        self.assertIn(doomed["id"], result.err)
        self.assertEqual(result.out.strip(), "")
        # Nor can it be found by name.
        result = await self.glance("image-show", "doomed")
        self.assertNotEqual(result.code, 0, result)

        self.assertEqual([row["ID"] for row in await self.imageList()], [kept["id"]])
        await self.request("HEAD", "/v1/images/" + doomed["id"], expect=404)
        await self.request("GET", "/v1/images/" + doomed["id"], expect=404)
        # The record remains, deleted, and the bytes are gone.
        byId = {i["id"]: i for i in await self.allImages()}
        self.assertEqual(byId[doomed["id"]]["status"], "deleted")
        self.assertEqual(byId[doomed["id"]]["deleted"], True)
        self.assertEqual(self.storedImageFiles(), [kept["id"]])

        # Deleting it again fails visibly.
        result = await self.glance("image-delete", doomed["id"])
        self.assertNotEqual(result.code, 0, result)
        await self.assertNoServerTraceback()

    @async_test
    async def test_badDiskFormat(self):
        """
        An unknown disk format is refused with a message naming it, with or
        without data, and leaves no image and no server traceback behind.
        """
        path, _ = self.writeImage(size=512 * 1024)
        for extra in (["--file", path], []):
            result = await self.glance("image-create", "--name", "bad", "--disk-format",
                                       "floppy", "--container-format", "bare", *extra)
            self.assertNotEqual(result.code, 0, result)
            self.assertIn("floppy", result.err, result)
            self.assertIn("disk format", result.err.lower(), result)
            self.assertNotIn("Traceback", result.err, result)
            self.assertEqual(result.out.strip(), "", result)
        self.assertEqual(await self.allImages(), [])
        self.assertEqual(await self.imageList(), [])
        self.assertEqual(self.storedImageFiles(), [])

        # Same for a container format, and the server still works afterwards.
        result = await self.glance("image-create", "--name", "bad", "--disk-format", "raw",
                                   "--container-format", "crate", "--file", path)
        self.assertNotEqual(result.code, 0, result)
        self.assertIn("crate", result.err, result)
        self.assertEqual(await self.allImages(), [])
        good = await self.show("image-create", "--name", "good", "--disk-format", "raw",
                               "--container-format", "bare", "--file", path)
        self.assertEqual(good["status"], "active")
        self.assertEqual([i["name"] for i in await self.allImages()], ["good"])
        await self.assertNoServerTraceback()

    @async_test
    async def test_reserveThenUpload(self):
        """
        C{image-create} without data reserves a queued image; C{image-update
        --file} then uploads its bytes.
        """
        reserved = await self.show("image-create", "--name", "later", "--disk-format", "raw",
                                   "--container-format", "bare", "--property", "stage=1")
        imageId = reserved["id"]
        self.assertEqual(reserved["status"], "queued")
        self.assertEqual(reserved["checksum"], "None")
        self.assertIn(reserved["size"], ("0", "None"))
        meta = await self.head(imageId)
        self.assertEqual(meta["x-image-meta-status"], "queued")
        self.assertNotIn("etag", meta)
        self.assertEqual(self.storedImageFiles(), [])
        rows = await self.imageList()
        self.assertEqual([(r["ID"], r["Status"]) for r in rows], [(imageId, "queued")])

        path, data = self.writeImage()
        updated = await self.show("image-update", "--file", path, imageId)
        checksum = hashlib.md5(data).hexdigest()
        self.assertEqual(updated["id"], imageId)
        self.assertEqual(updated["status"], "active")
        self.assertEqual(updated["size"], str(len(data)))
        self.assertEqual(updated["checksum"], checksum)
        self.assertEqual(updated["name"], "later")
        # The update named no property, and the CLI does not purge by default.
        self.assertEqual(updated["Property 'stage'"], "1")
        meta = await self.head(imageId)
        self.assertEqual(meta["x-image-meta-status"], "active")
        self.assertEqual(meta["x-image-meta-size"], str(len(data)))
        self.assertEqual(meta["etag"], checksum)
        self.assertEqual(self.storedImageFiles(), [imageId])

        out = os.path.join(self.tmp, "out")
        await self.ok("image-download", "--file", out, imageId)
        with open(out, "rb") as f:
            self.assertTrue(f.read() == data, "downloaded file differs from the upload")

        # Now active, it takes no more data: the CLI refuses before sending.
        result = await self.glance("image-update", "--file", path, imageId)
        self.assertNotEqual(result.code, 0, result)
        self.assertIn("active", result.err, result)
        await self.assertNoServerTraceback()
