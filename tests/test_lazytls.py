"""
Tests for L{glancetx.lazytls}: which port descriptions are plain TCP, the
reactor imported without pyOpenSSL (in a child process, since trial's
reactor is imported already), and HTTPS through L{HTTPEndpoints}.
"""

import subprocess
import sys

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.ssl import Certificate, PrivateCertificate
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import URI, Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.error import SchemeNotSupported
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from glancetx.lazytls import (HTTPEndpoints, checkCanListen, importReactorWithoutTLS,
                              listensBeyondLoopback, plainTCP)
from tests.tlscerts import makeCertificates


class PlainTCPTests(SynchronousTestCase):
    def test_plain(self):
        self.assertEqual(plainTCP("9292"), (9292, "", 50))
        self.assertEqual(plainTCP("tcp:9292"), (9292, "", 50))
        self.assertEqual(plainTCP("tcp:0:interface=127.0.0.1"), (0, "127.0.0.1", 50))
        self.assertEqual(plainTCP(" tcp:port=80:backlog=10:interface=0.0.0.0 "),
                         (80, "0.0.0.0", 10))

    def test_notPlain(self):
        """
        Everything else is strports' to parse (or to refuse).
        """
        for description in ("ssl:443:privateKey=k.pem", "unix:/tmp/glance.sock",
                            "tcp:9292:interface=\\:\\:1", "tcp:99999", "tcp:http",
                            "tcp:9292:reuse=1", "tcp:9292:backlog=many", "tcp:", "",
                            "systemd:domain=INET:index=0"):
            self.assertIsNone(plainTCP(description), description)


class ImportWithoutTLSTests(SynchronousTestCase):
    def test_alreadyImported(self):
        """
        Under trial the reactor is imported already: nothing is done.
        """
        self.assertFalse(importReactorWithoutTLS())

    def test_childProcess(self):
        """
        In a fresh process the reactor and endpoints import without
        pyOpenSSL, and it loads, fully, once an HTTPS client needs it.
        """
        script = "\n".join([
            "import sys",
            "from glancetx.lazytls import importReactorWithoutTLS",
            "print(importReactorWithoutTLS())",
            "from twisted.internet import epollreactor; epollreactor.install()",
            "import klein",
            "print('OpenSSL' in sys.modules)",
            "from glancetx.lazytls import HTTPEndpoints",
            "from twisted.internet import reactor",
            "from twisted.web.client import URI",
            "ep = HTTPEndpoints(reactor).endpointForURI(URI.fromBytes(b'https://a.example/'))",
            "print('OpenSSL.SSL' in sys.modules)",
        ])
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        self.assertEqual(out.stdout.split(), ["True", "False", "True"], out.stderr)


class HTTPEndpointsTests(TestCase):
    def listen(self):
        caPath, serverPEM = makeCertificates(self.mktemp())
        root = Resource()
        root.putChild(b"hello", Data(b"hello over TLS", "text/plain"))
        port = reactor.listenSSL(0, Site(root), PrivateCertificate.loadPEM(serverPEM).options(),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        with open(caPath, "rb") as f:
            ca = Certificate.loadPEM(f.read())
        return ca, "https://localhost:%d/hello" % (port.getHost().port,)

    def client(self, policy=None):
        pool = HTTPConnectionPool(reactor, persistent=False)
        return HTTPClient(Agent.usingEndpointFactory(reactor, HTTPEndpoints(reactor, policy),
                                                     pool=pool))

    def test_httpsVerified(self):
        async def go():
            ca, url = self.listen()
            response = await self.client(BrowserLikePolicyForHTTPS(trustRoot=ca)).get(url)
            self.assertEqual(await response.content(), b"hello over TLS")
        return ensureDeferred(go())

    def test_httpsUntrusted(self):
        """
        The default policy (the platform's trust store) refuses the test
        CA's certificate.
        """
        async def go():
            _, url = self.listen()
            with self.assertRaises(Exception):
                await self.client().get(url)
        return ensureDeferred(go())

    def test_otherSchemes(self):
        with self.assertRaises(SchemeNotSupported):
            HTTPEndpoints(reactor).endpointForURI(URI.fromBytes(b"ftp://example.com/x"))


class ListenChecksTests(SynchronousTestCase):
    def test_portInUse(self):
        """
        A port another process listens on is one line naming --port at
        start; it was a traceback when the port started listening.
        """
        import socket

        from glancetx.errors import ConfigError
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        e = self.assertRaises(ConfigError, checkCanListen,
                              "tcp:%d:interface=127.0.0.1" % (port,))
        self.assertEqual(str(e), "--port: cannot listen on 127.0.0.1:%d: Address already in use"
                         % (port,))
        taken.close()
        checkCanListen("tcp:%d:interface=127.0.0.1" % (port,))
        checkCanListen("unix:/nonexistent/x.sock")

    def test_beyondLoopback(self):
        for description, beyond in [("9292", True), ("tcp:9292:interface=0.0.0.0", True),
                                    ("tcp:9292:interface=127.0.0.1", False),
                                    ("tcp:9292:interface=10.1.2.3", True),
                                    ("tcp6:9292:interface=\\:\\:1", False),
                                    ("tcp6:9292", True), ("unix:/run/glance.sock", False),
                                    ("ssl:9292:interface=127.0.0.1:privateKey=k.pem", False),
                                    ("tcp6:9292:interface=\\:\\:ffff\\:127.0.0.1", False),
                                    # Its address is systemd's: not guessed.
                                    ("systemd:domain=INET:index=0", False)]:
            self.assertEqual(listensBeyondLoopback(description), beyond, description)
