"""
Notifications on RabbitMQ, in the form Glance's oslo.messaging drivers send
them, so that Ceilometer and the other consumers of Glance's C{image.*}
events work unchanged.

C{messagingv2} wraps each message in oslo.messaging's envelope
(C{{"oslo.version": "2.0", "oslo.message": "<the message as JSON>"}});
C{messaging} sends the message itself.  Each goes to the topic exchange
C{control_exchange} ("glance", as Glance sets it) with the routing key
C{<topic>.info}, or C{<topic>.error} for a failed upload.  The queues of
those names are declared and bound first, as oslo.messaging does, so that
what is sent before any consumer has started waits for one.

The image service calls L{AMQPNotifier.notify} and goes on: a notification
must never hold up a request, nor fail one.  Messages wait in a bounded
queue while the broker is away (once it is full the oldest go, and a
warning says how many), and are sent in order with publisher confirms, each
taken off the queue only when the broker has confirmed it.  If the
connection is lost in between, the message is sent again on the next one:
at least once, and C{message_id} tells a consumer a duplicate.
L{ClientService} reconnects with backoff, to the transport URL's hosts in
turn.  The URL's password is never logged; hosts are named as C{host:port}.

TLS (oslo.messaging's C{ssl} options, in C{[oslo_messaging_rabbit]} or the
URL's query) checks the broker's certificate against C{ssl_ca_file}, or
the system's CAs without one, and always checks that it names the host
connected to.  oslo.messaging checks nothing without C{ssl_ca_file}, and
the host name only for a URL of one host; here a broker that cannot prove
who it is never gets the password.
"""

import datetime
import functools
import ipaddress
import json
import re
import socket
import uuid
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, unquote, urlsplit

import attr
from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.task import deferLater
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from glancetx.config import parseFlag
from glancetx.errors import ConfigError
from glancetx.lazytls import clientTLS
from glancetx.notifier import INotifier, LoggingNotifier

#: The drivers that send to a broker, and whether each wraps its messages
#: in oslo.messaging's envelope.
DRIVERS = {"messaging": False, "messagingv2": True}
#: The priorities Glance sends at, as routing key suffixes.
PRIORITIES = ("info", "error")
#: What the oldest waiting messages are dropped to make room for: at most
#: this many wait, and at most this many bytes of them (an image with many
#: long properties makes notifications of a megabyte and more).
MAX_PENDING = 1000
MAX_PENDING_BYTES = 16 * 1024 * 1024
#: Seconds between warnings that notifications are being dropped.
DROP_WARNING_INTERVAL = 60.0
#: Seconds from the TCP connection to a channel ready to publish on (the
#: AMQP handshake and the declarations).  pika's Twisted adapter has no
#: limit of its own, so a listener that never spoke held the notifier for
#: good; pika's own connection workflow allows 15 s (stack_timeout).
HANDSHAKE_SECONDS = 15.0
#: The options a transport URL's query may set.  (oslo.messaging takes
#: any of [oslo_messaging_rabbit]'s there; these are the ones read here,
#: and anything else is refused rather than ignored.)
URL_OPTIONS = ("ssl", "ssl_ca_file", "ssl_cert_file", "ssl_key_file")


@attr.s(frozen=True, auto_attribs=True)
class Broker:
    """
    One host of a transport URL.
    """

    host: str
    port: int
    user: str = attr.ib(repr=False)
    password: str = attr.ib(repr=False)
    vhost: str

    def __str__(self) -> str:
        host = "[%s]" % (self.host,) if ":" in self.host else self.host
        return "%s:%d" % (host, self.port)


def parseTransportURL(url: str, option: str = "transport_url") -> List[Broker]:
    """
    oslo.messaging's C{rabbit://user:pass@host:port[,user:pass@host:port...]/vhost}.
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise ConfigError("%s: not a URL" % (option,))
    if parts.scheme != "rabbit":
        raise ConfigError("%s: only rabbit:// URLs are supported, not %r"
                          % (option, parts.scheme + "://"))
    if parts.fragment:
        raise ConfigError("%s: a URL fragment (#...) is not supported" % (option,))
    urlOptions(url, option)
    vhost = unquote(parts.path[1:]) if parts.path else ""
    brokers = []
    for one in parts.netloc.split(","):
        userinfo, _, hostport = one.rpartition("@")
        user, _, password = userinfo.partition(":")
        if hostport.startswith("["):
            host, _, rest = hostport[1:].partition("]")
            if rest and not rest.startswith(":"):
                raise ConfigError("%s: bad host %r" % (option, hostport))
            port = rest[1:]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ConfigError("%s: bad IPv6 address %r" % (option, host))
        else:
            host, _, port = hostport.partition(":")
        if not host:
            raise ConfigError("%s: a host is missing" % (option,))
        try:
            number = int(port) if port else 5672
        except ValueError:
            raise ConfigError("%s: bad port %r" % (option, port))
        if not 0 < number < 65536:
            raise ConfigError("%s: bad port %r" % (option, port))
        brokers.append(Broker(host, number, unquote(user) or "guest",
                              unquote(password) or "guest", vhost or "/"))
    return brokers


def urlOptions(url: str, option: str = "transport_url") -> Dict[str, str]:
    """
    The options in a transport URL's query (C{?ssl=1&ssl_ca_file=...}).
    """
    out: Dict[str, str] = {}
    try:
        pairs = parse_qsl(urlsplit(url.strip()).query, keep_blank_values=True,
                          strict_parsing=False)
    except ValueError:
        raise ConfigError("%s: not a URL" % (option,))
    for key, value in pairs:
        if key not in URL_OPTIONS:
            raise ConfigError("%s: unknown URL option %r (known: %s)"
                              % (option, key, ", ".join(URL_OPTIONS)))
        out[key] = value
    return out


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.DOTALL)


def _readPEM(name: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError("%s: cannot read %s: %s" % (name, path, e.strerror))


@attr.s(frozen=True)
class BrokerTLS:
    """
    How to check brokers, and the certificate to show them if they ask.
    Built from the files once, at start, so a bad file stops the start.
    """

    _trust = attr.ib(repr=False)
    _client = attr.ib(repr=False, default=None)

    @classmethod
    def fromFiles(cls, caFile: str = "", certFile: str = "",
                  keyFile: str = "") -> "BrokerTLS":
        from OpenSSL.crypto import Error as CryptoError
        from twisted.internet.ssl import (Certificate, PrivateCertificate, platformTrust,
                                          trustRootFromCertificates)

        trust = platformTrust()
        if caFile:
            pems = _PEM_CERTIFICATE.findall(_readPEM("ssl_ca_file", caFile))
            if not pems:
                raise ConfigError("ssl_ca_file: no certificate in %s" % (caFile,))
            try:
                trust = trustRootFromCertificates([Certificate.loadPEM(p) for p in pems])
            except CryptoError:
                raise ConfigError("ssl_ca_file: %s holds a certificate that cannot be read"
                                  % (caFile,))
        client = None
        if keyFile and not certFile:
            raise ConfigError("ssl_key_file: needs ssl_cert_file")
        if certFile:
            pem = _readPEM("ssl_cert_file", certFile)
            if keyFile:
                pem += b"\n" + _readPEM("ssl_key_file", keyFile)
            try:
                client = PrivateCertificate.loadPEM(pem)
            except (CryptoError, ValueError):
                raise ConfigError("ssl_cert_file: %s%s do not hold a certificate and its key"
                                  % (certFile, " and " + keyFile if keyFile else ""))
        return cls(trust, client)

    def creatorFor(self, hostname: str):
        """
        The TLS connection creator for the broker at C{hostname}.
        """
        from twisted.internet.ssl import optionsForClientTLS

        return optionsForClientTLS(hostname, trustRoot=self._trust,
                                   clientCertificate=self._client)


def encode(eventType: str, payload: Any, publisherId: str, envelope: bool,
           now: Optional[datetime.datetime] = None, messageId: Optional[str] = None,
           priority: str = "INFO") -> bytes:
    """
    One notification as oslo.messaging puts it on the wire.
    """
    message = {
        "message_id": messageId or str(uuid.uuid4()),
        "publisher_id": publisherId,
        "event_type": eventType,
        "priority": priority,
        "payload": payload,
        "timestamp": str(now or datetime.datetime.utcnow()),
    }
    if envelope:
        message = {"oslo.version": "2.0", "oslo.message": json.dumps(message)}
    return json.dumps(message).encode("utf-8")


class _HostsInTurn:
    """
    A client endpoint that connects to the next broker each time.
    """

    log = Logger()
    #: Connections in a row that TCP accepted but the broker refused
    #: (wrong password, say): ClientService counts them as successes, so
    #: the back-off for them is here.
    refusals = 0

    def __init__(self, reactor, brokers: Sequence[Broker],
                 tls: Optional[BrokerTLS] = None) -> None:
        self._reactor = reactor
        self._brokers = list(brokers)
        self._tls = tls
        self._next = 0
        self.current: Optional[Broker] = None

    def __repr__(self) -> str:
        # ClientService names its endpoint in its "Scheduling retry" lines.
        return "the broker at %s" % (", ".join(str(b) for b in self._brokers),)

    def connect(self, factory) -> Deferred:
        if not self.refusals:
            d = self._connect(factory)
        else:
            delay = min(30.0, 0.5 * 2 ** (self.refusals - 1))
            d = deferLater(self._reactor, delay, self._connect, factory)
        return d.addErrback(self._unreachable)

    def _unreachable(self, reason):
        # No broker answers now: ClientService's back-off takes over, and
        # the refusals' would only add to it.
        self.refusals = 0
        return reason

    @property
    def where(self) -> str:
        """
        The broker connected to last, or else the first to try.
        """
        return str(self.current or self._brokers[0])

    def _connect(self, factory) -> Deferred:
        broker = self.current = self._brokers[self._next % len(self._brokers)]
        self._next += 1
        endpoint = HostnameEndpoint(self._reactor, broker.host, broker.port, timeout=10)
        if self._tls is not None:
            endpoint = clientTLS(self._tls.creatorFor(broker.host), endpoint)
        d = endpoint.connect(factory)

        def failed(reason):
            if not reason.check(CancelledError, ConnectingCancelledError):
                # (Not the attempt the shutdown cancels.)
                self.log.warn("notifications: cannot reach the broker at {broker}: {error}",
                              broker=str(broker), error=_describe(reason.value))
            return reason

        return d.addErrback(failed)


@implementer(INotifier)
class AMQPNotifier(service.Service):
    """
    Sends notifications to RabbitMQ while it runs (see the module's
    docstring); stopping waits a while for the queue to empty.
    """

    log = Logger()

    def __init__(self, reactor, brokers: Sequence[Broker], envelope: bool = True,
                 exchange: str = "glance", topics: Sequence[str] = ("notifications",),
                 durable: bool = False, publisherId: Optional[str] = None,
                 maxPending: int = MAX_PENDING, stopTimeout: float = 5.0,
                 tls: Optional[BrokerTLS] = None,
                 maxPendingBytes: int = MAX_PENDING_BYTES) -> None:
        self._reactor = reactor
        self._endpoint = _HostsInTurn(reactor, brokers, tls)
        self._envelope = envelope
        self._exchange = exchange
        self._topics = tuple(topics)
        self._durable = durable
        self._publisherId = publisherId or "image." + socket.gethostname()
        #: (priority, message) pairs.
        self._pending: Deque[Tuple[str, bytes]] = deque()
        self._maxPending = maxPending
        self._maxPendingBytes = maxPendingBytes
        self._pendingBytes = 0
        #: The message being sent, which dropping leaves alone.
        self._sending: Optional[Tuple[str, bytes]] = None
        #: Dropped since the broker last took one, and in all.
        self._dropped = 0
        self._droppedInAll = 0
        self._dropWarned: Optional[float] = None
        self._stopTimeout = stopTimeout
        self._wake: Optional[Deferred] = None
        self._client: Optional[ClientService] = None
        self._loop: Optional[Deferred] = None
        self._stopping = False
        #: Shutdown stopped waiting for the broker (see L{_giveUp}).
        self._givenUp = False
        #: The connection the last send went through.
        self._protocol: Any = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def routingKeys(self, priorities: Sequence[str] = PRIORITIES) -> List[str]:
        """
        oslo.messaging's routing keys (and queue names): C{<topic>.<priority>}.
        """
        return ["%s.%s" % (t, p) for t in self._topics for p in priorities]

    # INotifier

    def notify(self, eventType: str, payload: Any, priority: str = "INFO") -> None:
        try:
            body = encode(eventType, payload, self._publisherId, self._envelope,
                          priority=priority)
        except (TypeError, ValueError):
            self.log.failure("notification {event_type} cannot be encoded",
                             event_type=eventType)
            return
        self._pending.append((priority.lower(), body))
        self._pendingBytes += len(body)
        while len(self._pending) > 1 and (len(self._pending) > self._maxPending
                                          or self._pendingBytes > self._maxPendingBytes):
            self._dropOldest()
        self._wakeUp()

    def _dropOldest(self) -> None:
        """
        Make room: the oldest waiting message goes, unless it is the one
        being sent (which may well arrive), and then the next.
        """
        if self._pending[0] is self._sending:
            dropped = self._pending[1]
            del self._pending[1]
        else:
            dropped = self._pending.popleft()
        self._pendingBytes -= len(dropped[1])
        self._dropped += 1
        self._droppedInAll += 1
        now = self._reactor.seconds()
        if self._dropWarned is None or now - self._dropWarned >= DROP_WARNING_INTERVAL:
            self._dropWarned = now
            self.log.warn("notifications: the broker at {broker} takes none, so the oldest"
                          " waiting are dropped ({count} so far; at most {most} messages"
                          " and {mib} MiB wait)", broker=self._endpoint.where,
                          count=self._dropped, most=self._maxPending,
                          mib=self._maxPendingBytes // (1024 * 1024))

    def _wakeUp(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.callback(None)

    # IService

    def startService(self) -> None:
        super().startService()
        from pika import ConnectionParameters, PlainCredentials

        def protocolFor():
            broker = self._endpoint.current
            params = ConnectionParameters(
                virtual_host=broker.vhost,
                credentials=PlainCredentials(broker.user, broker.password))
            return _connectionClass()(params, self, custom_reactor=self._reactor)

        # Not ClientService's prepareConnection: a connection it is still
        # preparing must not be lost (Twisted 26 has no transition for
        # that), and the broker closes it when it refuses the login.
        self._client = ClientService(
            self._endpoint, Factory.forProtocol(protocolFor),
            retryPolicy=backoffPolicy(initialDelay=0.5, maxDelay=30.0),
            clock=self._reactor)
        self._client.startService()
        self._loop = Deferred.fromCoroutine(self._publishAll())
        self._loop.addErrback(self._crashed)

    def _crashed(self, reason) -> None:
        if not reason.check(CancelledError):
            self.log.failure("notifications: the sender stopped", reason)

    def stopService(self) -> Deferred:
        super().stopService()
        self._stopping = True
        self._wakeUp()
        loop = self._loop
        timeout = self._reactor.callLater(self._stopTimeout, self._giveUp)

        def stopped(_):
            if timeout.active():
                timeout.cancel()
            if self._givenUp and self._protocol is not None \
                    and self._protocol.transport is not None:
                # A broker that says nothing (blocking publishers, or cut
                # off with the connection open) would never see a close
                # through, nor answer one.
                self._protocol.transport.abortConnection()
            if self._pending or self._droppedInAll:
                self.log.warn("{count} notifications were not sent before shutdown, and"
                              " {dropped} were dropped before", count=len(self._pending),
                              dropped=self._droppedInAll)
            return self._client.stopService()

        return loop.addBoth(stopped)

    def _giveUp(self) -> None:
        """
        Stop waiting for the broker: the sender ends wherever it waits,
        and a send under way is not tried again.
        """
        self._givenUp = True
        self._loop.cancel()

    # The connection

    async def _prepare(self, protocol):
        """
        Once a new connection has done its AMQP handshake: a channel in
        confirm mode, the exchange, and a bound queue per topic.
        """
        broker = self._endpoint.current
        try:
            channel = await protocol.channel()
            await channel.confirm_delivery()
            await channel.exchange_declare(exchange=self._exchange, exchange_type="topic",
                                           durable=self._durable)
            for key in self.routingKeys():
                await channel.queue_declare(queue=key, durable=self._durable)
                await channel.queue_bind(queue=key, exchange=self._exchange, routing_key=key)
        except Exception as e:
            if not protocol.timedOut:
                self.log.warn("notifications: cannot use the broker at {broker}: {error}",
                              broker=str(broker), error=_describe(e))
            raise
        self.log.info("notifications: connected to the broker at {broker}",
                      broker=str(broker))
        return channel

    async def _connected(self):
        """
        A connection whose channel is ready, once there is one.
        """
        while True:
            protocol = await self._client.whenConnected(failAfterFailures=None)
            if await protocol.whenUsable():
                return protocol
            # It failed, or its channel was closed: ClientService makes
            # the next one.
            if protocol.transport is not None:
                protocol.transport.loseConnection()
            await deferLater(self._reactor, 0.1, lambda: None)

    async def _publishAll(self) -> None:
        """
        Send what waits, oldest first, until stopped and sent (or cancelled).
        """
        from pika.spec import BasicProperties

        properties = BasicProperties(content_type="application/json",
                                     content_encoding="utf-8",
                                     delivery_mode=2 if self._durable else 1)
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wake = Deferred()
                await self._wake
                continue
            protocol = self._protocol = await self._connected()
            item = self._sending = self._pending[0]
            priority, body = item
            try:
                await DeferredList(
                    [protocol.channelInUse.basic_publish(
                        exchange=self._exchange, routing_key=key, body=body,
                        properties=properties) for key in self.routingKeys([priority])],
                    fireOnOneErrback=True, consumeErrors=True)
            except Exception as e:
                if self._givenUp:
                    # Cancelled by shutdown (a CancelledError is an
                    # Exception too): not a failed send to try again.
                    raise CancelledError() from None
                reason = getattr(e, "subFailure", None)
                self.log.warn("notifications: sending to {broker} failed, will retry: {error}",
                              broker=str(self._endpoint.current),
                              error=_describe(reason.value if reason else e))
                # A fresh connection and channel for the next try.
                protocol.transport.loseConnection()
                await deferLater(self._reactor, 0.5, lambda: None)
                continue
            finally:
                self._sending = None
            if self._pending and self._pending[0] is item:
                self._pending.popleft()
                self._pendingBytes -= len(body)
            if self._dropped:
                self.log.warn("notifications: the broker takes them again; {count} were"
                              " dropped meanwhile", count=self._dropped)
                self._dropped = 0
                self._dropWarned = None


@functools.lru_cache(maxsize=None)
def _connectionClass():
    """
    pika's Twisted protocol, with the channel that publishes.  (Imported
    late: pika's Twisted adapter imports the global reactor.)
    """
    from pika.adapters.twisted_connection import TwistedProtocolConnection

    class Connection(TwistedProtocolConnection):
        """
        Opens its publishing channel as soon as the handshake is done
        (with the notifier's C{_prepare}), and closes itself if that
        fails, so that ClientService makes the next connection.
        """

        channelInUse = None
        _usable: Optional[bool] = None
        _lostBecause = None
        _deadline = None
        #: Whether the deadline for a usable channel passed, and the
        #: connection was dropped for it.
        timedOut = False

        def __init__(self, parameters, notifier: "AMQPNotifier",
                     custom_reactor=None) -> None:
            super().__init__(parameters, custom_reactor=custom_reactor)
            self._notifier = notifier
            self._waiting: List[Deferred] = []
            self.ready.addCallbacks(self._handshaken, self._handshakeFailed)
            # RabbitMQ's memory and disk alarms stop it reading from
            # publishers: say why notifications stop arriving.
            self._impl.add_on_connection_blocked_callback(self._blocked)
            self._impl.add_on_connection_unblocked_callback(self._unblocked)

        def connectionMade(self) -> None:
            super().connectionMade()
            self._deadline = self._notifier._reactor.callLater(
                HANDSHAKE_SECONDS, self._tooSlow)

        def _tooSlow(self) -> None:
            self._deadline = None
            self.timedOut = True
            self._notifier.log.warn(
                "notifications: the broker at {broker} did not finish the AMQP handshake"
                " within {seconds} s", broker=str(self._notifier._endpoint.current),
                seconds=HANDSHAKE_SECONDS)
            self._notifier._endpoint.refusals += 1
            self._settle(False)
            self.transport.abortConnection()

        def _blocked(self, _connection, frame) -> None:
            self._notifier.log.warn(
                "notifications: the broker at {broker} takes no messages for now: {why}",
                broker=self._notifier._endpoint.where,
                why=getattr(frame.method, "reason", "") or "no reason given")

        def _unblocked(self, _connection, _frame) -> None:
            self._notifier.log.info("notifications: the broker at {broker} takes messages"
                                    " again", broker=self._notifier._endpoint.where)

        def _handshaken(self, _) -> Deferred:
            d = Deferred.fromCoroutine(self._notifier._prepare(self))
            return d.addCallbacks(self._opened, self._refused)

        def _handshakeFailed(self, reason) -> None:
            if self.timedOut:
                # Said, and counted, when the deadline passed.
                return
            lost = self._lostBecause
            if lost is not None and type(lost.value).__module__.startswith("OpenSSL"):
                # pika says only that the connection failed.
                self._notifier.log.warn(
                    "notifications: TLS with the broker at {broker} failed: {error}",
                    broker=str(self._notifier._endpoint.current),
                    error=_describe(lost.value))
            else:
                error = reason.value
                if error.args and all(isinstance(a, int) for a in error.args):
                    # pika's AMQPConnectionError(1): its count of attempts,
                    # all it says of a broker that closed the connection.
                    why = "the broker closed the connection"
                else:
                    why = _describe(error)
                self._notifier.log.warn(
                    "notifications: the AMQP handshake with the broker at {broker} failed"
                    " (user, password and virtual host right?): {error}",
                    broker=str(self._notifier._endpoint.current), error=why)
            self._refused(reason)

        def _opened(self, channel) -> None:
            if self.timedOut:
                return
            self.channelInUse = channel
            self._notifier._endpoint.refusals = 0
            self._settle(True)

        def _refused(self, reason) -> None:
            if self.timedOut:
                return
            self._notifier._endpoint.refusals += 1
            # Logged by prepare, or a failed handshake, whose
            # connection is already being closed.
            self._settle(False)
            if self.transport is not None:
                self.transport.loseConnection()

        def connectionLost(self, reason=None) -> None:
            # Before pika fails the handshake with a reason of its own.
            self._lostBecause = reason
            super().connectionLost(reason)
            self._settle(False)

        def _settle(self, usable: bool) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            if self._usable is None or not usable:
                self._usable = usable
                waiting, self._waiting = self._waiting, []
                for d in waiting:
                    d.callback(usable)

        def whenUsable(self) -> Deferred:
            """
            Fires with whether this connection's channel can be used.
            """
            if self._usable is not None:
                # Settled True only once the channel is open.
                return succeed(self._usable and not self.channelInUse.is_closed)
            d: Deferred = Deferred()
            self._waiting.append(d)
            return d

    return Connection


def _describe(error: BaseException) -> str:
    return error.__class__.__name__ + (": %s" % (error,) if str(error) else "")


def fromConfig(reactor, raw: Dict[str, str]) -> Tuple[List[INotifier], List[service.Service]]:
    """
    The notifiers Glance's options ask for (C{notification_driver}: any of
    C{log}, the default, C{noop}, C{messaging}, C{messagingv2}), and the
    services among them that must run.
    """
    drivers = [d.strip() for d in (raw.get("notification_driver") or "log").split(",")
               if d.strip()]
    known = set(DRIVERS) | {"log", "noop"}
    for d in drivers:
        if d not in known:
            raise ConfigError("notification_driver: unknown driver %r (use %s)"
                              % (d, ", ".join(sorted(known))))
    notifiers: List[INotifier] = [LoggingNotifier()] if "log" in drivers else []
    sending = [d for d in drivers if d in DRIVERS]
    if len(sending) > 1:
        raise ConfigError("notification_driver: one of messaging and messagingv2, not both")
    if not sending:
        return notifiers, []
    option = ("notification_transport_url" if raw.get("notification_transport_url")
              else "transport_url")
    url = raw.get(option)
    if not url:
        raise ConfigError("notification_driver: %s needs a transport_url" % (sending[0],))
    brokers = parseTransportURL(url, option)
    tls = _tlsFromOptions(raw, urlOptions(url, option))
    topics = [t.strip() for t in (raw.get("notification_topics") or "notifications").split(",")
              if t.strip()]
    if not topics:
        raise ConfigError("notification_topics: must not be empty")
    durable = parseFlag("amqp_durable_queues", raw.get("amqp_durable_queues", "false"))
    amqp = AMQPNotifier(reactor, brokers, envelope=DRIVERS[sending[0]],
                        exchange=(raw.get("control_exchange") or "glance").strip(),
                        topics=topics, durable=durable, tls=tls)
    return notifiers + [amqp], [amqp]


def _tlsFromOptions(raw: Dict[str, str], fromURL: Dict[str, str]) -> Optional[BrokerTLS]:
    """
    The TLS settings of [oslo_messaging_rabbit] (C{rabbit_ssl*} here), with
    the URL's query winning, as in oslo.messaging.
    """
    def get(name: str) -> str:
        if name in fromURL:
            return fromURL[name].strip()
        return (raw.get("rabbit_" + name) or "").strip()

    if not parseFlag("ssl", get("ssl") or "false"):
        ignored = [name for name in URL_OPTIONS[1:] if get(name)]
        if ignored:
            # As oslo.messaging does, but said: whoever set them may
            # believe the connection is encrypted.
            AMQPNotifier.log.warn("notifications: {names} set but ssl is not true:"
                                  " connecting to the broker without TLS",
                                  names=", ".join(ignored))
        return None
    return BrokerTLS.fromFiles(get("ssl_ca_file"), get("ssl_cert_file"), get("ssl_key_file"))
