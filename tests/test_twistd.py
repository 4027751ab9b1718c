"""
The real twistd command line: start-up errors and the daemonized mode.
"""

import os
import signal

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase
from treq.client import HTTPClient
from twisted.web.client import Agent, HTTPConnectionPool

from tests.server import TWISTD, GlanceServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def residentFraction(path: str) -> float:
    """
    How much of a file is in the page cache (mincore(2) on a mapping of
    it that is never touched).
    """
    import ctypes
    import mmap
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    view = (ctypes.c_char * size).from_buffer(mapping)
    try:
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vector = (ctypes.c_ubyte * pages)()
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mincore(ctypes.c_void_p(ctypes.addressof(view)), ctypes.c_size_t(size), vector):
            raise OSError(ctypes.get_errno(), "mincore")
        return sum(v & 1 for v in vector) / pages
    finally:
        del view
        mapping.close()


class TwistdTests(TestCase):
    timeout = 60

    def conf(self, text):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_badOptionIsOneLine(self):
        async def go():
            for text, name in [("[DEFAULT]\nimgae_size_cap = 5\n", "imgae_size_cap"),
                               ("[DEFAULT]\nimage_size_cap = lots\n", "image_size_cap"),
                               ("[DEFAULT]\nauth_strategy = magic\n", "auth_strategy"),
                               ("[DEFAULT]\nsql_connection = postgresql://x@127.0.0.1:1/x\n",
                                "sql_connection"),
                               ("[DEFAULT]\npolicy_file = /nonexistent.json\n", "policy_file")]:
                out, err, code = await getProcessOutputAndValue(
                    TWISTD, ["-n", "--pidfile=", "glance", "--port", "tcp:0",
                             "--data-dir", os.path.abspath(self.mktemp()),
                             "--config", self.conf(text)], env=dict(os.environ))
                self.assertNotEqual(code, 0)
                text = (out + err).decode()
                self.assertNotIn("Traceback", text)
                lines = [l for l in text.splitlines() if name in l]
                self.assertEqual(len(lines), 1, text)
                self.assertNotIn("Usage:", text)
        return ensureDeferred(go())

    def test_badPortIsOneLine(self):
        """
        A --port Twisted cannot parse stops the start with one line naming
        --port: an IPv6 address whose colons are not escaped (saying so),
        an unknown endpoint type, a missing certificate.  Each was a
        40-line traceback.
        """
        async def go():
            for port, why in [("tcp:0:interface=::1", "escape an IPv6 address's colons"),
                              ("bogus:1234", "Unknown endpoint type"),
                              ("ssl:0:privateKey=/nonexistent.pem", "nonexistent.pem")]:
                out, err, code = await getProcessOutputAndValue(
                    TWISTD, ["-n", "--pidfile=", "glance", "--port", port,
                             "--data-dir", os.path.abspath(self.mktemp())],
                    env=dict(os.environ))
                self.assertNotEqual(code, 0)
                text = (out + err).decode()
                self.assertNotIn("Traceback", text)
                lines = [l for l in text.splitlines() if "--port" in l]
                self.assertEqual(len(lines), 1, text)
                self.assertIn(why, lines[0])
        return ensureDeferred(go())

    def test_startChecksAreOneLine(self):
        """
        A data directory that is a file, a store directory that is one, an
        access log that cannot be opened and a port another process holds
        each stop the start with one line naming what is wrong; each was a
        traceback.
        """
        async def go():
            import socket
            base = os.path.abspath(self.mktemp())
            os.makedirs(base)
            afile = os.path.join(base, "afile")
            with open(afile, "w"):
                pass
            taken = socket.socket()
            self.addCleanup(taken.close)
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = "tcp:%d:interface=127.0.0.1" % (taken.getsockname()[1],)
            for dataDir, text, port, why in [
                    (afile, "", "tcp:0", "--data-dir: %s is not a directory" % (afile,)),
                    (os.path.join(afile, "sub"), "", "tcp:0",
                     "sql_connection: cannot create the directory of"),
                    (os.path.join(base, "d1"), "filesystem_store_datadir = %s\n" % (afile,),
                     "tcp:0", "filesystem_store_datadir: cannot write in"),
                    (os.path.join(base, "d2"), "access_log = /proc/nowhere.log\n", "tcp:0",
                     "access_log: cannot open /proc/nowhere.log"),
                    (os.path.join(base, "d3"), "", busy, "--port: cannot listen on")]:
                out, err, code = await getProcessOutputAndValue(
                    TWISTD, ["-n", "--pidfile=", "glance", "--port", port,
                             "--data-dir", dataDir, "--config", self.conf("[DEFAULT]\n" + text)],
                    env=dict(os.environ))
                self.assertNotEqual(code, 0)
                output = (out + err).decode()
                self.assertNotIn("Traceback", output)
                self.assertEqual([l for l in output.splitlines() if why in l],
                                 ["twistd glance: " + output.split("twistd glance: ")[-1].strip()],
                                 output)
        return ensureDeferred(go())

    def test_hangUpKeepsServing(self):
        """
        SIGHUP is answered with one line, and the server goes on serving:
        it died at once, without a word, its uploads left C{saving}.
        """
        async def go():
            glance = await GlanceServer(self).start()
            os.kill(glance.pid(), signal.SIGHUP)
            for _ in range(100):
                if "Received SIGHUP" in glance.log():
                    break
                await deferLater(reactor, 0.05, lambda: None)
            http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
            resp = await http.get(glance.url + "/versions")
            self.assertIn(b"v1.1", await resp.content())
            self.assertIn("glancetx reloads nothing", glance.log())
            self.assertNoResult(glance.watcher.ended)
        return ensureDeferred(go())

    def test_accessLogFile(self):
        """
        With access_log set, request lines go to that file (combined log
        format), not to the twistd log.
        """
        async def go():
            glance = await GlanceServer(self, {"access_log": "access.log"}).start()
            http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
            resp = await http.get(glance.url + "/versions?probe=1")
            await resp.content()
            path = os.path.join(glance.dataDir, "access.log")
            for _ in range(50):
                if os.path.exists(path) and os.path.getsize(path):
                    break
                await deferLater(reactor, 0.1, lambda: None)
            with open(path) as f:
                lines = f.read().splitlines()
            self.assertEqual(len(lines), 1, lines)
            self.assertIn('"GET /versions?probe=1 HTTP/1.1" 200', lines[0])
            self.assertNotIn("/versions?probe=1", glance.log())
        return ensureDeferred(go())

    def test_warmCacheReadsNewImages(self):
        """
        An image written around the page cache is not in it after its
        upload, unless C{filesystem_store_warm_cache} is on: then the server
        reads it in on its own soon after.
        """
        async def upload(options):
            glance = await GlanceServer(self, options).start()
            http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
            resp = await http.post(glance.url + "/v1/images", data=os.urandom(8 * 1024 * 1024),
                                   headers={"x-image-meta-name": "warm",
                                            "x-image-meta-disk_format": "raw",
                                            "x-image-meta-container_format": "bare",
                                            "Content-Type": "application/octet-stream"})
            self.assertEqual(resp.code, 201)
            image = (await resp.json())["image"]
            return glance, os.path.join(glance.dataDir, "images", image["id"])

        async def cachedSoon(path):
            for _ in range(100):
                if residentFraction(path) == 1.0:
                    return True
                await deferLater(reactor, 0.1, lambda: None)
            return False

        async def go():
            glance, path = await upload({})
            if residentFraction(path) > 0.5:
                raise SkipTest("this filesystem does not take O_DIRECT: every image is cached")
            await deferLater(reactor, 1, lambda: None)
            self.assertLess(residentFraction(path), 0.5)
            await glance.stop()
            glance, path = await upload({"filesystem_store_warm_cache": "true"})
            self.assertTrue(await cachedSoon(path))
            await glance.stop()
            self.assertNotIn("Traceback", glance.log())
        return ensureDeferred(go())

    def test_unixSocketPort(self):
        """
        A port that is not plain TCP goes through strports (with TLS
        support loaded as usual): here a UNIX socket.
        """
        async def go():
            from twisted.internet.endpoints import UNIXClientEndpoint
            from twisted.web.iweb import IAgentEndpointFactory
            from zope.interface import implementer

            base = os.path.abspath(self.mktemp())
            os.makedirs(base)
            pidfile, sock = os.path.join(base, "g.pid"), os.path.join(base, "g.sock")
            out, err, code = await getProcessOutputAndValue(
                TWISTD, ["--pidfile", pidfile, "--logfile", os.path.join(base, "g.log"),
                         "glance", "--port", "unix:" + sock,
                         "--data-dir", os.path.join(base, "data")],
                env=dict(os.environ), path=base)
            self.assertEqual(code, 0, out + err)
            for _ in range(100):
                if os.path.exists(pidfile) and os.path.exists(sock):
                    break
                await deferLater(reactor, 0.1, lambda: None)
            pid = int(open(pidfile).read())
            self.addCleanup(lambda: os.path.exists(pidfile) and os.kill(pid, signal.SIGTERM))

            @implementer(IAgentEndpointFactory)
            class ToSocket:
                def endpointForURI(self, uri):
                    return UNIXClientEndpoint(reactor, sock)

            http = HTTPClient(Agent.usingEndpointFactory(
                reactor, ToSocket(), pool=HTTPConnectionPool(reactor, persistent=False)))
            resp = await http.get("http://glance/versions")
            self.assertEqual(resp.code, 200)
            self.assertIn(b"v1.1", await resp.content())
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not os.path.exists(pidfile):
                    break
                await deferLater(reactor, 0.1, lambda: None)
        return ensureDeferred(go())

    def test_tlsPort(self):
        """
        An ssl: port is served over TLS: with a port that is not plain TCP
        nothing is hidden from the reactor.
        """
        async def go():
            from twisted.internet.ssl import Certificate
            from twisted.web.client import BrowserLikePolicyForHTTPS

            from glancetx.lazytls import HTTPEndpoints
            from tests.tlscerts import makeCertificates

            certDir = os.path.abspath(self.mktemp())
            caPath, serverPEM = makeCertificates(certDir)
            keyPath = os.path.join(certDir, "server.pem")
            with open(keyPath, "wb") as f:
                f.write(serverPEM)
            glance = await GlanceServer(
                self, port="ssl:0:interface=127.0.0.1:privateKey=" + keyPath,
                scheme="https").start()
            with open(caPath, "rb") as f:
                policy = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(f.read()))
            http = HTTPClient(Agent.usingEndpointFactory(
                reactor, HTTPEndpoints(reactor, policy),
                pool=HTTPConnectionPool(reactor, persistent=False)))
            resp = await http.get("https://localhost:%d/versions" % (glance.port,))
            self.assertEqual(resp.code, 200)
            self.assertIn(b"https://localhost:%d/v1/" % (glance.port,), await resp.content())
        return ensureDeferred(go())

    def test_serveScript(self):
        """
        The README's first command, scripts/serve, sets up its virtualenv and
        serves the v1 API on SQLite and a local directory.
        """
        async def go():
            serve = os.path.join(REPO, "scripts", "serve")
            glance = await GlanceServer(self, command=["/bin/bash", serve]).start()
            http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
            resp = await http.get(glance.url + "/v1/images")
            self.assertEqual((resp.code, await resp.json()), (200, {"images": []}))
            self.assertTrue(os.path.exists(os.path.join(glance.dataDir, "glance.sqlite")))
        return ensureDeferred(go())
    test_serveScript.timeout = 600  # a new checkout's first run installs glancetx

    def test_secondSigtermDuringShutdown(self):
        """
        A second SIGTERM while the shutdown still waits (here for a broker
        that refuses connections, with an event queued) is one line in the
        log, not the critical ReactorNotRunning traceback Twisted's handler
        gives, and the shutdown ends as it would have.
        """
        async def go():
            glance = await GlanceServer(self, options={
                "notification_driver": "messagingv2",
                "transport_url": "rabbit://guest:guest@127.0.0.1:1/"}).start()
            http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
            resp = await http.post(glance.url + "/v1/images",
                                   headers={"x-image-meta-name": "queued event"})
            self.assertEqual(resp.code, 201)
            await resp.content()
            os.kill(glance.pid(), signal.SIGTERM)
            for _ in range(100):
                if "Received SIGTERM, shutting down." in glance.log():
                    break
                await deferLater(reactor, 0.05, lambda: None)
            self.assertNoResult(glance.watcher.ended)
            os.kill(glance.pid(), signal.SIGTERM)
            await glance.watcher.ended
            log = glance.log()
            self.assertIn("Received SIGTERM again: still shutting down.", log)
            self.assertNotIn("Traceback", log)
            self.assertIn("notifications were not sent before shutdown", log)
            self.assertIn("Server Shut Down.", log)
        return ensureDeferred(go())

    def test_daemonized(self):
        async def go():
            base = os.path.abspath(self.mktemp())
            os.makedirs(base)
            pidfile, logfile = os.path.join(base, "g.pid"), os.path.join(base, "g.log")
            import socket
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            out, err, code = await getProcessOutputAndValue(
                TWISTD, ["--pidfile", pidfile, "--logfile", logfile, "glance",
                         "--port", "tcp:%d:interface=127.0.0.1" % port,
                         "--data-dir", os.path.join(base, "data")],
                env=dict(os.environ), path=base)
            self.assertEqual(code, 0, out + err)
            for _ in range(100):
                if os.path.exists(pidfile):
                    break
                await deferLater(reactor, 0.1, lambda: None)
            pid = int(open(pidfile).read())
            self.addCleanup(lambda: os.path.exists(pidfile) and os.kill(pid, signal.SIGTERM))
            http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
            for _ in range(100):
                try:
                    resp = await http.get("http://127.0.0.1:%d/versions" % port)
                    break
                except Exception:
                    await deferLater(reactor, 0.1, lambda: None)
            self.assertEqual(resp.code, 200)
            await resp.content()
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not os.path.exists(pidfile):
                    break
                await deferLater(reactor, 0.1, lambda: None)
            self.assertFalse(os.path.exists(pidfile))
            self.assertIn("GlanceSite starting", open(logfile).read())
        return ensureDeferred(go())
