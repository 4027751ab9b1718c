"""
The sendfile fast path: the private transport state it reads, and a real
transfer over loopback.
"""

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from glancetx.web import sendfile


class Collect(Protocol):
    def __init__(self):
        self.data = []
        self.lost = Deferred()

    def dataReceived(self, data):
        self.data.append(data)

    def connectionLost(self, reason):
        self.lost.callback(b"".join(self.data))


class NullProducer:
    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class FakeRequest:
    """
    What Sendfile.send touches on a twisted.web request.
    """

    _disconnected = False
    sentLength = 0

    def __init__(self, transport):
        self.transport = transport

    def write(self, data):
        self.transport.write(b"HEADERS\r\n\r\n")


class SendfileTests(TestCase):
    async def connected(self):
        serverSide = Deferred()

        class Server(Protocol):
            def connectionMade(self):
                serverSide.callback(self)

        port = reactor.listenTCP(0, Factory.forProtocol(Server), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = Collect()
        factory = ClientFactory.forProtocol(lambda: client)
        reactor.connectTCP("127.0.0.1", port.getHost().port, factory)
        server = await serverSide
        return server, client

    def pool(self):
        pool = ThreadPool(1, 2, name="test-sendfile")
        pool.start()
        self.addCleanup(pool.stop)
        return pool

    def test_transportIsIdle(self):
        async def go():
            server, client = await self.connected()
            t = server.transport
            self.assertTrue(sendfile.canSendfile(t))
            self.assertTrue(sendfile.transportIsIdle(t))
            t.write(b"x" * 10)
            self.assertFalse(sendfile.transportIsIdle(t))
            t.doWrite()
            self.assertTrue(sendfile.transportIsIdle(t))
            t.loseConnection()
            await client.lost
        return ensureDeferred(go())

    def test_transfer(self):
        async def go():
            server, client = await self.connected()
            path = self.mktemp()
            data = os.urandom(5 * 1024 * 1024 + 3)
            with open(path, "wb") as f:
                f.write(data)
            # An HTTPChannel registers itself as its transport's producer.
            server.transport.registerProducer(NullProducer(), True)
            s = sendfile.Sendfile(reactor, self.pool(), limit=1)
            request = FakeRequest(server.transport)
            d = s.send(request, path, len(data))
            self.assertIsNotNone(d)
            # The pool is full: a second transfer takes the producer path.
            self.assertIsNone(s.send(FakeRequest(server.transport), path, len(data)))
            self.assertEqual(await d, len(data))
            self.assertEqual(request.sentLength, len(data))
            server.transport.loseConnection()
            self.assertEqual(await client.lost, b"HEADERS\r\n\r\n" + data)
        return ensureDeferred(go())

    def test_transferFromAnOpenFileDeletedSince(self):
        """
        The file a reader opened is sent whole though its name was deleted
        since, and stays open for its reader to close.
        """
        async def go():
            server, client = await self.connected()
            path = self.mktemp()
            data = os.urandom(1024 * 1024 + 7)
            with open(path, "wb") as f:
                f.write(data)
            opened = open(path, "rb", buffering=0)
            self.addCleanup(opened.close)
            os.unlink(path)
            server.transport.registerProducer(NullProducer(), True)
            s = sendfile.Sendfile(reactor, self.pool(), limit=1)
            self.assertEqual(await s.send(FakeRequest(server.transport), opened, len(data)),
                             len(data))
            self.assertFalse(opened.closed)
            self.assertEqual(os.pread(opened.fileno(), 3, 0), data[:3])
            server.transport.loseConnection()
            self.assertEqual(await client.lost, b"HEADERS\r\n\r\n" + data)
        return ensureDeferred(go())

    def test_clientThatReadsNothingFails(self):
        """
        A transfer the client reads nothing of for stallSeconds fails
        (L{sendfile.Stalled}), rather than holding its thread for good.
        """
        async def go():
            server, client = await self.connected()
            path = self.mktemp()
            with open(path, "wb") as f:
                f.write(os.urandom(64 * 1024 * 1024))
            server.transport.registerProducer(NullProducer(), True)
            while client.transport is None:
                await deferLater(reactor, 0.01, lambda: None)
            client.transport.pauseProducing()  # reads nothing
            s = sendfile.Sendfile(reactor, self.pool(), limit=1, stallSeconds=1)
            with self.assertRaises(sendfile.Stalled):
                await s.send(FakeRequest(server.transport), path, 64 * 1024 * 1024)
            server.transport.abortConnection()
            client.transport.resumeProducing()
            await client.lost
        return ensureDeferred(go())

    def test_shortFileFails(self):
        async def go():
            server, client = await self.connected()
            path = self.mktemp()
            with open(path, "wb") as f:
                f.write(b"abc")
            s = sendfile.Sendfile(reactor, self.pool(), limit=1)
            d = s.send(FakeRequest(server.transport), path, 10)
            with self.assertRaises(sendfile.ShortFile):
                await d
            server.transport.abortConnection()
            await client.lost
        return ensureDeferred(go())
