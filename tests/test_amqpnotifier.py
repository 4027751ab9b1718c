"""
Notifications on RabbitMQ (L{glancetx.amqpnotifier}): the transport URL,
the wire format oslo.messaging's consumers read, the options, and the
bounded queue, without a broker; then the real C{twistd glance} sending to
the real RabbitMQ, in a virtual host of the test's own, and carrying on
through the broker's absence.
"""

import datetime
import hashlib
import json
import os
import struct
import urllib.parse

from twisted.internet import reactor
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from glancetx import config
from glancetx.amqpnotifier import (HANDSHAKE_SECONDS, AMQPNotifier, Broker, _connectionClass,
                                   encode, fromConfig, parseTransportURL, urlOptions)
from glancetx.errors import ConfigError
from glancetx.notifier import LoggingNotifier
from tests import dbs
from tests.tcpproxy import TCPProxy
from tests.test_api import RAW, APITestsMixin, async_test
from tests.test_remote_api import eventually, sleep
from tests.tlscerts import makeCertificatesWithClient


class TransportURLTests(SynchronousTestCase):
    def test_oneHost(self):
        self.assertEqual(parseTransportURL("rabbit://me:s%40cret@mq.example:5673/glance%2Fa"),
                         [Broker("mq.example", 5673, "me", "s@cret", "glance/a")])

    def test_defaults(self):
        self.assertEqual(parseTransportURL("rabbit://mq"),
                         [Broker("mq", 5672, "guest", "guest", "/")])
        self.assertEqual(parseTransportURL("rabbit://u:p@mq/")[0].vhost, "/")

    def test_severalHostsAndIPv6(self):
        brokers = parseTransportURL("rabbit://a:1@h1:5672,b:2@[::1]:5674/v")
        self.assertEqual(brokers, [Broker("h1", 5672, "a", "1", "v"),
                                   Broker("::1", 5674, "b", "2", "v")])
        self.assertEqual([str(b) for b in brokers], ["h1:5672", "[::1]:5674"])

    def test_passwordNotInRepr(self):
        broker = parseTransportURL("rabbit://u:topsecret@h/v")[0]
        self.assertNotIn("topsecret", repr(broker))
        self.assertNotIn("topsecret", str(broker))
        # ClientService's retry lines name the endpoint by its repr.
        notifier = AMQPNotifier(MemoryReactorClock(), parseTransportURL(
            "rabbit://u:topsecret@h,v:p2@[::1]:5673/v"))
        self.assertEqual(repr(notifier._endpoint), "the broker at h:5672, [::1]:5673")

    def test_refused(self):
        for url, words in [("amqp://h/", "only rabbit://"), ("kafka://h", "only rabbit://"),
                           ("rabbit://h/?sll=1", "unknown URL option 'sll'"),
                           ("rabbit://h/#x", "fragment"), ("rabbit://u:p@/v", "host"),
                           ("rabbit://h:x/v", "bad port"), ("rabbit://h:0/v", "bad port"),
                           ("rabbit://h:70000/v", "bad port"),
                           # The port after a bracketed host was dropped for
                           # 5672; a second host's address went unchecked.
                           ("rabbit://g:g@[::1]x:45172/a", "bad host"),
                           ("rabbit://a@[::1]:5674,b@[zz::1]:1/v", "bad IPv6 address")]:
            e = self.assertRaises(ConfigError, parseTransportURL, url)
            self.assertIn(words, str(e), url)
            self.assertTrue(str(e).startswith("transport_url: "), str(e))

    def test_options(self):
        url = "rabbit://u:p@h/v?ssl=1&ssl_ca_file=/etc/ca%20b.pem"
        self.assertEqual(parseTransportURL(url), [Broker("h", 5672, "u", "p", "v")])
        self.assertEqual(urlOptions(url), {"ssl": "1", "ssl_ca_file": "/etc/ca b.pem"})
        self.assertEqual(urlOptions("rabbit://h/v"), {})


class EncodeTests(SynchronousTestCase):
    when = datetime.datetime(2026, 12, 1, 23, 5, 6, 789)

    def test_messagingV2Envelope(self):
        body = encode("image.upload", {"id": "i1", "size": 5}, "image.host", True,
                      self.when, "m1")
        outer = json.loads(body)
        self.assertEqual(set(outer), {"oslo.version", "oslo.message"})
        self.assertEqual(outer["oslo.version"], "2.0")
        self.assertEqual(json.loads(outer["oslo.message"]), {
            "message_id": "m1", "publisher_id": "image.host", "event_type": "image.upload",
            "priority": "INFO", "payload": {"id": "i1", "size": 5},
            "timestamp": "2026-12-01 23:05:06.000789"})

    def test_messagingV1Bare(self):
        message = json.loads(encode("image.delete", {"id": "i1"}, "image.host", False,
                                    self.when, "m2"))
        self.assertEqual(message["event_type"], "image.delete")
        self.assertEqual(message["payload"], {"id": "i1"})
        self.assertNotIn("oslo.message", message)

    def test_freshIds(self):
        one, two = (json.loads(json.loads(encode("e", {}, "p", True))["oslo.message"])
                    for _ in range(2))
        self.assertNotEqual(one["message_id"], two["message_id"])


class OptionsTests(SynchronousTestCase):
    def test_logByDefault(self):
        notifiers, services = fromConfig(MemoryReactor(), {})
        self.assertEqual([type(n) for n in notifiers], [LoggingNotifier])
        self.assertEqual(services, [])

    def test_noop(self):
        self.assertEqual(fromConfig(MemoryReactor(), {"notification_driver": "noop"}), ([], []))

    def test_messagingAndLog(self):
        notifiers, services = fromConfig(MemoryReactor(), {
            "notification_driver": "messagingv2, log",
            "transport_url": "rabbit://u:p@h1/v",
            "notification_transport_url": "rabbit://u:p@h2/w"})
        self.assertEqual(len(services), 1)
        self.assertEqual(sorted(type(n).__name__ for n in notifiers),
                         ["AMQPNotifier", "LoggingNotifier"])
        # The notifications' own URL wins over [DEFAULT]'s.
        self.assertEqual(services[0]._endpoint._brokers[0].host, "h2")

    def test_refused(self):
        for options, words in [
                ({"notification_driver": "rabbit"}, "unknown driver"),
                ({"notification_driver": "messagingv2"}, "needs a transport_url"),
                ({"notification_driver": "messaging,messagingv2",
                  "transport_url": "rabbit://h"}, "not both"),
                ({"notification_driver": "messagingv2", "transport_url": "rabbit://h",
                  "amqp_durable_queues": "perhaps"}, "amqp_durable_queues"),
                ({"notification_driver": "messagingv2", "transport_url": "rabbit://h",
                  "notification_topics": " , "}, "notification_topics")]:
            e = self.assertRaises(ConfigError, fromConfig, MemoryReactor(), options)
            self.assertIn(words, str(e), options)

    def ini(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return config.readINI(path)

    def test_osloSections(self):
        options = self.ini(
            "[DEFAULT]\ntransport_url = rabbit://u:p@h/v\n"
            "[oslo_messaging_notifications]\ndriver = messagingv2\n"
            "transport_url = rabbit://u:p@other/v\ntopics = notifications, monitor\n"
            "[oslo_messaging_rabbit]\namqp_durable_queues = true\nrabbit_retry_interval = 2\n")
        self.assertEqual(options["notification_driver"], "messagingv2")
        self.assertEqual(options["notification_transport_url"], "rabbit://u:p@other/v")
        self.assertEqual(options["notification_topics"], "notifications, monitor")
        self.assertEqual(options["amqp_durable_queues"], "true")
        config.build("tcp:1", "d", options)  # every name is known
        _, (amqp,) = fromConfig(MemoryReactor(), options)
        self.assertEqual(amqp.routingKeys(), ["notifications.info", "notifications.error",
                                              "monitor.info", "monitor.error"])
        self.assertTrue(amqp._durable)

    def test_typoInNotificationsSection(self):
        e = self.assertRaises(ConfigError, self.ini,
                              "[oslo_messaging_notifications]\ndirver = messagingv2\n")
        self.assertEqual(str(e), "[oslo_messaging_notifications] dirver: unknown option")

    def test_osloRabbitTLSOptions(self):
        options = self.ini(
            "[DEFAULT]\ntransport_url = rabbit://u:p@h/v\n"
            "[oslo_messaging_rabbit]\nssl = true\nssl_ca_file = /c\n"
            "ssl_cert_file = /p\nssl_key_file = /k\n")
        self.assertEqual((options["rabbit_ssl"], options["rabbit_ssl_ca_file"],
                          options["rabbit_ssl_cert_file"], options["rabbit_ssl_key_file"]),
                         ("true", "/c", "/p", "/k"))
        config.build("tcp:1", "d", options)


class TLSOptionsTests(SynchronousTestCase):
    """
    TLS to the broker: from [oslo_messaging_rabbit] or the URL's query,
    the URL winning; files read at start.
    """

    def setUp(self):
        self.ca, _, self.cert, self.key = makeCertificatesWithClient(self.mktemp())

    def tls(self, url="rabbit://u:p@h/v", **options):
        raw = dict({"notification_driver": "messagingv2", "transport_url": url}, **options)
        _, (amqp,) = fromConfig(MemoryReactor(), raw)
        return amqp._endpoint._tls

    def test_off(self):
        self.assertIsNone(self.tls())
        self.assertIsNone(self.tls("rabbit://h/v?ssl=0", rabbit_ssl="true"))

    def test_on(self):
        self.assertIsNotNone(self.tls("rabbit://h/v?ssl=1"))
        self.assertIsNotNone(self.tls(rabbit_ssl="true", rabbit_ssl_ca_file=self.ca))
        self.assertIsNotNone(self.tls("rabbit://h/v?ssl=true&ssl_ca_file=" + self.ca,
                                      rabbit_ssl_cert_file=self.cert,
                                      rabbit_ssl_key_file=self.key))
        # A certificate file that holds its key as well.
        both = self.mktemp()
        with open(both, "wb") as f:
            f.write(open(self.cert, "rb").read() + open(self.key, "rb").read())
        self.assertIsNotNone(self.tls(rabbit_ssl="1", rabbit_ssl_cert_file=both))

    def test_creatorChecksTheHost(self):
        from twisted.internet._sslverify import ClientTLSOptions
        creator = self.tls("rabbit://h/v?ssl=1").creatorFor("mq.example")
        self.assertIsInstance(creator, ClientTLSOptions)
        self.assertEqual(creator._hostname, "mq.example")

    def test_badFiles(self):
        empty = self.mktemp()
        open(empty, "w").close()
        for options, words in [
                ({"rabbit_ssl": "maybe"}, "ssl: expected true or false"),
                ({"rabbit_ssl": "true", "rabbit_ssl_ca_file": "/nonexistent/ca.pem"},
                 "ssl_ca_file: cannot read /nonexistent/ca.pem"),
                ({"rabbit_ssl": "true", "rabbit_ssl_ca_file": empty}, "no certificate"),
                ({"rabbit_ssl": "true", "rabbit_ssl_key_file": self.key}, "needs ssl_cert_file"),
                ({"rabbit_ssl": "true", "rabbit_ssl_cert_file": self.cert},
                 "do not hold a certificate and its key"),
                ({"rabbit_ssl": "true", "rabbit_ssl_cert_file": self.cert,
                  "rabbit_ssl_key_file": self.ca}, "do not hold a certificate and its key")]:
            e = self.assertRaises(ConfigError, self.tls, **options)
            self.assertIn(words, str(e), options)

    def test_filesWithoutSSLSaid(self):
        """
        As oslo.messaging, TLS files without C{ssl} leave TLS off, but the
        log says so.
        """
        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        self.assertIsNone(self.tls(rabbit_ssl_ca_file=self.ca))
        self.assertTrue([e for e in seen if "without TLS" in e.get("log_format", "")])


class QueueTests(SynchronousTestCase):
    """
    Before it has a broker, the notifier keeps what it is given, up to a
    bound, and never raises into the request that notified.
    """

    def notifier(self, **kwargs):
        return AMQPNotifier(MemoryReactorClock(), [Broker("h", 5672, "u", "p", "/")], **kwargs)

    def test_oldestDropped(self):
        n = self.notifier(maxPending=3)
        for i in range(5):
            n.notify("image.update", {"id": str(i)})
        self.assertEqual(n.pending, 3)
        ids = [json.loads(json.loads(b)["oslo.message"])["payload"]["id"]
               for _, b in n._pending]
        self.assertEqual(ids, ["2", "3", "4"])
        self.assertEqual(n._dropped, 2)

    def test_bytesBounded(self):
        """
        What waits is bounded in bytes too: an image with many long
        properties makes notifications of a megabyte and more, and a
        thousand of those waiting for a blocked broker took gigabytes.
        """
        n = self.notifier(maxPendingBytes=10000)
        for i in range(10):
            n.notify("image.update", {"id": str(i), "big": "x" * 3000})
        self.assertEqual(n.pending, 3)
        self.assertLessEqual(sum(len(b) for _, b in n._pending), 10000)
        self.assertEqual(n._pendingBytes, sum(len(b) for _, b in n._pending))
        self.assertEqual(n._dropped, 7)

    def test_theOneBeingSentIsNotDropped(self):
        """
        The message under way may yet arrive: dropping it counted one more
        lost than was.
        """
        n = self.notifier(maxPending=2)
        n.notify("image.update", {"id": "0"})
        n._sending = n._pending[0]
        for i in (1, 2, 3):
            n.notify("image.update", {"id": str(i)})
        ids = [json.loads(json.loads(b)["oslo.message"])["payload"]["id"]
               for _, b in n._pending]
        self.assertEqual(ids, ["0", "3"])

    def test_dropsAreSaidWhenTheyHappen(self):
        """
        Dropping is said when it starts, then at most once a minute, not
        only once the broker takes messages again (which may be never).
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        n = self.notifier(maxPending=1)

        def warnings():
            return [e for e in events if "dropped" in e.get("log_format", "")]
        for i in range(5):
            n.notify("image.update", {"id": str(i)})
        self.assertEqual(len(warnings()), 1)
        n._reactor.advance(61)
        n.notify("image.update", {"id": "5"})
        self.assertEqual(len(warnings()), 2)
        self.assertEqual(warnings()[-1]["count"], 5)

    def test_blockedBrokerIsLogged(self):
        """
        RabbitMQ under a memory or disk alarm blocks publishers, saying so
        on the connection: the log says it, and when it ends.
        """
        from pika import ConnectionParameters, frame, spec

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        n = self.notifier()
        conn = _connectionClass()(ConnectionParameters(), n, custom_reactor=n._reactor)
        conn._impl.callbacks.process(0, spec.Connection.Blocked, conn._impl, frame.Method(
            0, spec.Connection.Blocked(reason="low on memory")))
        conn._impl.callbacks.process(0, spec.Connection.Unblocked, conn._impl, frame.Method(
            0, spec.Connection.Unblocked()))
        said = [formatEvent(e) for e in events if "broker" in e.get("log_format", "")]
        self.assertEqual(said, [
            "notifications: the broker at h:5672 takes no messages for now: low on memory",
            "notifications: the broker at h:5672 takes messages again"])

    def test_unencodablePayloadLogged(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        n = self.notifier()
        n.notify("image.update", {"id": object()})
        self.assertEqual(n.pending, 0)
        self.assertTrue([e for e in events if e.get("log_failure") is not None])
        self.flushLoggedErrors(TypeError)


class CancelledConnectTests(SynchronousTestCase):
    def test_shutdownsCancelIsNotAFailure(self):
        """
        The connection attempt the shutdown cancels is not logged as a
        broker that cannot be reached (ConnectingCancelledError) at every
        stop (a refused one still is: RefusalBackoffTests).
        """
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        clock = MemoryReactorClock()
        notifier = AMQPNotifier(clock, [Broker("127.0.0.1", 5672, "u", "p", "/")])
        d = notifier._endpoint._connect(Factory.forProtocol(Protocol))
        failures = []
        d.addErrback(failures.append)
        d.cancel()
        from twisted.internet.defer import CancelledError
        from twisted.internet.error import ConnectingCancelledError
        self.assertTrue(failures[0].check(ConnectingCancelledError, CancelledError), failures)
        self.assertEqual([e for e in self.events if "cannot reach" in e.get("log_format", "")],
                         [])


class RefusalBackoffTests(SynchronousTestCase):
    """
    A broker that takes the TCP connection but refuses the login (wrong
    password, a virtual host the user may not use) counts as a success to
    L{ClientService}, whose own back-off restarts each time; the endpoint
    backs off on refusals in a row instead, up to 30 s, until a channel opens.
    """

    def setUp(self):
        from twisted.internet.address import IPv4Address
        from twisted.internet.defer import fail, succeed
        from twisted.internet.error import ConnectionRefusedError
        from twisted.internet.testing import StringTransport

        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.clock = MemoryReactorClock()
        self.notifier = n = AMQPNotifier(self.clock, [Broker("h", 5672, "u", "p", "/")])
        self.attempts, self.connections = [], []

        #: Whether TCP connections are refused (the broker is down).
        self.down = False

        def connect(factory):
            # TCP accepts unless the broker is down; what the broker then
            # says is up to the test.
            n._endpoint.current = n._endpoint._brokers[0]
            self.attempts.append(self.clock.seconds())
            if self.down:
                return fail(ConnectionRefusedError())
            protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5672))
            protocol.makeConnection(StringTransport())
            self.connections.append(protocol)
            return succeed(protocol)

        n._endpoint._connect = connect
        n.startService()
        self.addCleanup(n._client.stopService)
        self.addCleanup(n._loop.cancel)

    def next(self) -> float:
        """
        The seconds until the next attempt.
        """
        count = len(self.attempts)
        for _ in range(2000):
            if len(self.attempts) > count:
                return self.attempts[-1] - self.attempts[-2]
            self.clock.advance(0.05)
        self.fail("no attempt after 100 s")

    def refuse(self) -> None:
        """
        The broker closes the connection during the handshake, as RabbitMQ
        does when it refuses a login.
        """
        self.connections[-1].connectionLost(Failure(ConnectionDone()))

    def test_refusalsInARowBackOff(self):
        gaps = []
        for _ in range(10):
            self.refuse()
            gaps.append(self.next())
        # ClientService's first retry (0.75 s and up to 1 s of jitter) and
        # then the endpoint's 0.5, 1, 2, ... up to 30 s.
        for gap, least in zip(gaps, [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]):
            self.assertGreaterEqual(gap, least + 0.75, gaps)
            self.assertLessEqual(gap, least + 1.9, gaps)
        warned = [e for e in self.events if e.get("log_level") is not None
                  and e["log_level"].name == "warn"]
        self.assertEqual(len(warned), 10, [formatEvent(e) for e in warned])

    def test_openChannelResets(self):
        for _ in range(6):
            self.refuse()
            gap = self.next()
        self.assertGreater(gap, 16)
        # This one gets its channel (pika is done with the handshake, and
        # _prepare with the channel); then the broker goes away.
        connection = self.connections[-1]._protocol  # (inside ClientService's proxy)
        connection.ready = None
        connection._opened(object())
        self.assertEqual(self.notifier._endpoint.refusals, 0)
        self.connections[-1].connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.notifier._endpoint.refusals, 0)
        # Only ClientService's first retry: 0.75 s and up to 1 s of jitter.
        self.assertLess(self.next(), 1.9)
        self.refuse()
        self.assertGreaterEqual(self.next(), 0.5 + 0.75)

    def test_brokerDownAfterRefusalsIsTriedEvery30s(self):
        """
        After a run of refusals the broker goes down: connecting is tried
        at most about 30 s apart, as for a broker that was simply down.
        The refusals' delay once came on top of ClientService's own, and
        the attempts drifted to a minute apart.
        """
        for _ in range(8):
            self.refuse()
            self.next()
        self.down = True
        self.refuse()
        gaps = [self.next() for _ in range(14)]
        self.assertLessEqual(max(gaps), 30 + 1.9, gaps)
        self.assertGreaterEqual(max(gaps[-4:]), 29, gaps)

    def test_silentBrokerIsLeftAfterTheHandshakeDeadline(self):
        """
        A broker (or whatever listens on its port) that takes the
        connection and says nothing: once the handshake has run for
        L{HANDSHAKE_SECONDS} the connection is dropped, with a warning, and
        the next one is made after a back-off.  Before, the notifier waited
        on it for good, and said nothing until shutdown.
        """
        transport = self.connections[-1].transport
        self.clock.advance(HANDSHAKE_SECONDS - 0.5)
        self.assertFalse(transport.disconnected)
        self.assertEqual(len(self.attempts), 1)
        self.clock.advance(0.5)
        # (StringTransport marks an abort this way.)
        self.assertTrue(transport.disconnected)

        def warnings():
            return [formatEvent(e) for e in self.events if e.get("log_level") is not None
                    and e["log_level"].name == "warn"]
        self.assertEqual(len(warnings()), 1, warnings())
        self.assertIn("did not finish the AMQP handshake within", warnings()[0])
        # The abort's end: one warning says what happened, not two.
        self.connections[-1].connectionLost(Failure(ConnectionLost()))
        self.assertEqual(len(warnings()), 1, warnings())
        self.assertGreaterEqual(self.next(), 0.5 + 0.75)


class RabbitMQTests(APITestsMixin, TestCase):
    """
    The real server and the real broker.
    """

    timeout = 180

    def setUp(self):
        self.transportURL = dbs.rabbitURL(self)
        self.vhost = urllib.parse.unquote(self.transportURL.rsplit("/", 1)[1])

    def drain(self, queue: str):
        """
        The messages waiting in C{queue}, taken off it; None if the server
        has not declared it yet.
        """
        import pika
        from pika.exceptions import ChannelClosedByBroker

        def take():
            connection = pika.BlockingConnection(pika.ConnectionParameters(
                host="127.0.0.1", virtual_host=self.vhost))
            try:
                channel = connection.channel()
                out = []
                while True:
                    method, properties, body = channel.basic_get(queue, auto_ack=True)
                    if method is None:
                        return out
                    out.append((properties, body))
            except ChannelClosedByBroker as e:
                if e.reply_code == 404:
                    return None
                raise
            finally:
                if connection.is_open:
                    connection.close()
        return deferToThread(take)

    async def queueDeclared(self) -> bool:
        return await self.drain("notifications.info") is not None

    async def events(self, queue: str, count: int, seen=None):
        """
        oslo.messaging messages from C{queue} until there are C{count}.
        """
        seen = [] if seen is None else seen

        async def enough():
            for properties, body in await self.drain(queue) or []:
                self.assertEqual(properties.content_type, "application/json")
                seen.append(json.loads(json.loads(body)["oslo.message"]))
            return len(seen) >= count

        self.assertTrue(await eventually(enough, 30, 0.2),
                        "%d of %d messages in %s" % (len(seen), count, queue))
        return seen

    async def glance(self, url: str, **options):
        return await self.server(notification_driver="messagingv2", transport_url=url,
                                 **options)

    async def glanceBehindProxy(self):
        """
        A server whose broker connection goes through a L{TCPProxy}.
        """
        proxy = TCPProxy(reactor, "127.0.0.1", 5672)
        await proxy.start()
        self.addCleanup(proxy.stop)
        glance = await self.glance(self.transportURL.replace("127.0.0.1:5672", proxy.address))
        return glance, proxy

    def checkLog(self, password: str = "guest") -> None:
        log = self.glance.log()
        self.assertNotIn(":%s@" % (password,), log)
        self.assertNotIn("Traceback", log)
        self.assertNotIn("Unhandled", log)

    @async_test
    async def test_eventsReachRabbitMQ(self):
        """
        Each step of an image's life is one message, in order, in the
        queue of each topic: the envelope, the event type and the image,
        never its location; and the broker's password is not logged.
        """
        await self.glance(self.transportURL, notification_topics="notifications, monitor")
        data = os.urandom(1000)
        image = await self.create(data)
        iid = image["id"]
        await self.request("GET", "/v1/images/" + iid, expect=200)
        await self.request("PUT", "/v1/images/" + iid, {"x-image-meta-name": "renamed"},
                           expect=200)
        await self.request("DELETE", "/v1/images/" + iid, expect=200)
        expected = ["image.create", "image.prepare", "image.upload", "image.activate",
                    "image.update", "image.send", "image.update", "image.delete"]
        for queue in ("notifications.info", "monitor.info"):
            messages = await self.events(queue, len(expected))
            self.assertEqual([m["event_type"] for m in messages], expected, queue)
            for m in messages:
                self.assertEqual(m["priority"], "INFO")
                self.assertTrue(m["publisher_id"].startswith("image."))
                self.assertIn(iid, (m["payload"].get("id"), m["payload"].get("image_id")))
                self.assertNotIn("location", m["payload"])
            byType = {m["event_type"]: m["payload"] for m in messages}
            self.assertEqual(byType["image.upload"]["checksum"], hashlib.md5(data).hexdigest())
            # Glance v1's image.send payload, as Ceilometer's meters read it.
            self.assertEqual(byType["image.send"], {
                "bytes_sent": len(data), "image_id": iid, "owner_id": image["owner"],
                "receiver_tenant_id": image["owner"], "receiver_user_id": "admin",
                "destination_ip": "127.0.0.1"})
            self.assertEqual([m["payload"]["size"] for m in messages
                              if m["event_type"] == "image.update"], [len(data)] * 2)
        self.assertEqual(len({m["message_id"] for m in messages}), len(expected))

        # A failed upload is an ERROR whose payload is the message.
        resp, _ = await self.create(os.urandom(1000), {"x-image-meta-checksum": "0" * 32},
                                    expect=400)
        for queue in ("notifications.error", "monitor.error"):
            [failed] = await self.events(queue, 1)
            self.assertEqual((failed["event_type"], failed["priority"]),
                             ("image.upload", "ERROR"))
            self.assertIn("checksum", failed["payload"])
        self.assertIn("connected to the broker at 127.0.0.1:5672", self.glance.log())
        self.checkLog()

    @async_test
    async def test_brokerAwayThenBack(self):
        """
        With the broker cut off, requests go on as before and their
        notifications wait; once it is back, every one arrives.
        """
        _, proxy = await self.glanceBehindProxy()
        first = await self.create(headers=RAW)
        seen = await self.events("notifications.info", 1)

        await proxy.cut()
        started = reactor.seconds()
        names = ["away-%d" % i for i in range(3)]
        for name in names:
            await self.create(headers=dict(RAW, **{"x-image-meta-name": name}))
        self.assertLess(reactor.seconds() - started, 5, "requests waited for the broker")
        await sleep(1.5)
        self.assertEqual(await self.drain("notifications.info"), [])

        await proxy.restore()
        await self.events("notifications.info", 4, seen)
        created = [m["payload"]["name"] for m in seen if m["event_type"] == "image.create"]
        self.assertEqual(created[0], first["name"])
        # At least once: whatever was in flight when the cut came may be
        # sent twice, but none is lost.
        self.assertEqual(sorted(set(created[1:])), names)
        self.checkLog()

    @async_test
    async def test_stopSendsWhatWaits(self):
        """
        Notifications still waiting for the broker at shutdown go out if it
        comes back in time.
        """
        glance, proxy = await self.glanceBehindProxy()
        self.assertTrue(await eventually(self.queueDeclared, 30, 0.2))
        await proxy.cut()
        for i in range(20):
            await self.create(headers=dict(RAW, **{"x-image-meta-name": "n%d" % i}))
        glance.process.signalProcess("TERM")
        await sleep(0.5)
        await proxy.restore()
        await glance.watcher.ended
        messages = await self.events("notifications.info", 20)
        self.assertEqual(sorted(set(m["payload"]["name"] for m in messages)),
                         sorted("n%d" % i for i in range(20)))
        self.assertNotIn("were not sent", glance.log())

    @async_test
    async def test_cutDownloadIsAnError(self):
        """
        A download the client leaves before its end is an ERROR image.send
        with the bytes that went out, as Glance's was; it sent nothing.
        """
        import socket

        await self.glance(self.transportURL)
        size = 64 * 1024 * 1024
        image = await self.create(b"x" * size)

        def readSomeThenLeave():
            with socket.create_connection(("127.0.0.1", self.glance.port)) as s:
                s.sendall(b"GET /v1/images/%s HTTP/1.1\r\nHost: h\r\n\r\n"
                          % (image["id"].encode(),))
                got = 0
                while got < 256 * 1024:
                    got += len(s.recv(65536))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await deferToThread(readSomeThenLeave)
        [sent] = await self.events("notifications.error", 1)
        self.assertEqual((sent["event_type"], sent["priority"]), ("image.send", "ERROR"))
        self.assertEqual(sent["payload"]["image_id"], image["id"])
        self.assertLess(sent["payload"]["bytes_sent"], size)
        self.assertNotIn("broke off", self.glance.log())
        self.checkLog()

    @async_test
    async def test_stopEndsWhileTheBrokerSaysNothing(self):
        """
        A broker that goes silent with the connection open (a partition, or
        RabbitMQ blocking publishers under a memory alarm) holds shutdown
        for the notifier's stop timeout (5 s), not for good: the send it
        waits on is given up, the connection dropped, and what was not
        sent is counted in the log.
        """
        glance, proxy = await self.glanceBehindProxy()
        self.assertTrue(await eventually(self.queueDeclared, 30, 0.2))
        await self.create(headers=RAW)
        await self.events("notifications.info", 1)
        proxy.blackHole()
        for i in range(5):
            await self.create(headers=dict(RAW, **{"x-image-meta-name": "n%d" % i}))
        started = reactor.seconds()
        glance.process.signalProcess("TERM")
        ended = glance.watcher.ended
        timer = reactor.callLater(30, lambda: glance.process.signalProcess("KILL"))
        try:
            await ended
        finally:
            if timer.active():
                timer.cancel()
        self.assertLess(reactor.seconds() - started, 20)
        self.assertIn("5 notifications were not sent before shutdown", glance.log())
        self.checkLog()

    @async_test
    async def test_unreachableBrokerDoesNotStopTheServer(self):
        """
        A broker that is not there at start: the server serves anyway, and
        says so in its log.
        """
        await self.glance("rabbit://guest:guest@127.0.0.1:1/nowhere")
        await self.create(headers=RAW)
        await sleep(1)
        self.assertIn("cannot reach the broker at 127.0.0.1:1", self.glance.log())
        self.checkLog()

    @async_test
    async def test_refusedLogin(self):
        """
        A broker that refuses the login: the server serves anyway, says
        why in its log, without the password, and tries again later.
        """
        await self.glance(self.transportURL.replace("guest:guest@", "guest:wrong-pw@"))
        await self.create(headers=RAW)

        async def triedAgain():
            return self.glance.log().count(
                "the AMQP handshake with the broker at 127.0.0.1:5672 failed") > 1

        self.assertTrue(await eventually(triedAgain, 20, 0.2))
        self.checkLog("wrong-pw")
        # Not pika's "AMQPConnectionError: 1", its count of attempts.
        self.assertIn("virtual host right?): the broker closed the connection",
                      self.glance.log())

    async def glanceBehindTLS(self, query: str, requireClient: bool = False, **options):
        """
        A server whose broker is RabbitMQ behind a TLS front (a L{TCPProxy}
        with the test CA's certificate for C{localhost}).  C{query} may
        name C{{ca}}, C{{cert}} and C{{key}}.
        """
        from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate

        ca, serverPEM, cert, key = makeCertificatesWithClient(os.path.abspath(self.mktemp()))
        server = PrivateCertificate.loadPEM(serverPEM)
        # (PrivateCertificate.options(ca) would trust the CA but not ask
        # for a client certificate.)
        tls = CertificateOptions(
            privateKey=server.privateKey.original, certificate=server.original,
            **(dict(verify=True, requireCertificate=True,
                    caCerts=[Certificate.loadPEM(open(ca, "rb").read()).original])
               if requireClient else {}))
        proxy = TCPProxy(reactor, "127.0.0.1", 5672, tls=tls)
        await proxy.start()
        self.addCleanup(proxy.stop)
        url = self.transportURL.replace("127.0.0.1:5672", "localhost:%d" % (proxy.port,))
        files = {"ca": ca, "cert": cert, "key": key}
        await self.glance(url + ("?" + query.format(**files) if query else ""),
                          **{k: v.format(**files) for k, v in options.items()})
        return proxy

    @async_test
    async def test_tls(self):
        """
        Over TLS, the broker's certificate checked against C{ssl_ca_file}
        for the host name in the URL, every event arrives.
        """
        await self.glanceBehindTLS("ssl=1&ssl_ca_file={ca}")
        image = await self.create(headers=RAW)
        messages = await self.events("notifications.info", 1)
        self.assertEqual(messages[0]["payload"]["id"], image["id"])
        self.assertIn("connected to the broker at localhost:", self.glance.log())
        self.checkLog()

    @async_test
    async def test_tlsClientCertificate(self):
        """
        A broker that asks for a client certificate gets the one in
        C{ssl_cert_file} (here with C{[oslo_messaging_rabbit]}'s options).
        """
        await self.glanceBehindTLS("", requireClient=True, rabbit_ssl="true",
                                   rabbit_ssl_ca_file="{ca}", rabbit_ssl_cert_file="{cert}",
                                   rabbit_ssl_key_file="{key}")
        await self.create(headers=RAW)
        await self.events("notifications.info", 1)
        self.checkLog()

    @async_test
    async def test_tlsUntrustedBroker(self):
        """
        A broker whose certificate the system's CAs do not vouch for never
        gets the password: not one byte reaches RabbitMQ, the log says why,
        and the server serves on.
        """
        proxy = await self.glanceBehindTLS("ssl=1")
        await self.create(headers=RAW)

        async def refused():
            return self.glance.log().count("certificate verify failed") > 1

        self.assertTrue(await eventually(refused, 20, 0.2), self.glance.log()[-3000:])
        self.assertEqual(proxy.bytesToServer, 0)
        self.assertFalse(await self.queueDeclared())
        self.checkLog()

    def osloListener(self, count: int):
        """
        oslo.messaging's notification listener (Ceilometer's way in): the
        real library, 18.3.1 as Glance 33 runs it, in its own virtualenv
        (C{GLANCETX_OSLO_PYTHON}), reading C{count} notifications.
        """
        python = os.environ.get("GLANCETX_OSLO_PYTHON")
        if not python or not os.access(python, os.X_OK):
            problem = "GLANCETX_OSLO_PYTHON=%r is not a Python with oslo.messaging" % (python,)
            if os.environ.get("CI") == "true":
                self.fail(problem)
            raise SkipTest(problem)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "oslo_listener.py")
        return getProcessOutputAndValue(python, [script, self.transportURL, str(count), "60"],
                                        env=dict(os.environ, PYTHONWARNINGS="ignore"))

    @async_test
    async def test_osloListenerReadsEveryEvent(self):
        """
        Every event of an image's life reaches the listener's C{info}
        endpoint, and a failed upload its C{error} endpoint, with the
        publisher, the event type, the payload and a message id.
        """
        await self.glance(self.transportURL)
        # The listener declares its queues too; start it once ours exist
        # (what is sent before it consumes waits there).
        self.assertTrue(await eventually(self.queueDeclared, 30, 0.2))
        listening = self.osloListener(10)
        image = await self.create(os.urandom(1000))
        await self.request("GET", "/v1/images/" + image["id"], expect=200)
        await self.create(os.urandom(10), {"x-image-meta-checksum": "0" * 32}, expect=400)
        await self.request("DELETE", "/v1/images/" + image["id"], expect=200)
        out, err, code = await listening
        self.assertEqual(code, 0, err[-3000:])
        lines = out.decode().splitlines()
        self.assertEqual(lines[0], "listening")
        got = [json.loads(line) for line in lines[1:]]
        # The listener's threading executor hands messages to a pool of
        # threads, so it prints them in no fixed order (test_eventsReachRabbitMQ
        # checks the queue's order).
        self.assertEqual(sorted(e for p, _, e, _, _ in got if p == "INFO"), sorted([
            "image.create", "image.prepare", "image.upload", "image.activate", "image.update",
            "image.send", "image.create", "image.prepare", "image.delete"]))
        [failed] = [payload for p, _, e, payload, _ in got if p == "ERROR"]
        self.assertIn("checksum", failed)
        for _, publisher, _, payload, messageId in got:
            self.assertTrue(publisher.startswith("image."))
            self.assertTrue(messageId)
        [uploaded] = [payload for p, _, e, payload, _ in got
                      if (p, e) == ("INFO", "image.upload")]
        self.assertEqual(uploaded["checksum"], image["checksum"])
