"""
The Swift store: images as objects in one container of an OpenStack Swift
account, spoken to over treq (tempauth v1 or Keystone v3 password auth).

Bytes are streamed both ways: an upload of known size up to the large-object
threshold is one PUT fed by the request body itself; anything larger, or of
unknown size, is cut into segments as it arrives, each segment one streamed
PUT, with at most two segment uploads in flight and the request body paused
whenever Swift cannot keep up.  Nothing is read whole or spooled to disk.

Large images are Static Large Objects (SLO), not Dynamic ones (DLO):
SLO's manifest lists every segment with its etag and size and Swift checks them when it is written,
so a stored image can never silently miss or truncate a segment, while DLO finds its segments
by an eventually consistent container listing, so a read just after the upload can come back short.
(SLO also removes its segments in one request.  Its cost: at most C{maxSegments} segments,
1000 by default in Swift, i.e. 200 GB with Glance's 200 MB chunk size.  DLO images written by
Glance itself are still read and deleted.)

Segments live in a companion container, C{<container>_segments}, named
C{<image id>/<upload id>/<n>}; a failed upload removes every segment it
started.  Locations look like Glance's:
C{swift+http://account%3Auser:key@host:port/auth/v1.0/container/object}; the
credentials in them never leave the server, and only L{redact}ed forms are
logged.
"""

import datetime
import hmac
import json
import uuid
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple
from urllib.parse import quote, unquote, urlsplit

import attr
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from glancetx.asyncutil import firstOf, fromCoroutine, isCancellation
from glancetx.errors import ConfigError
from glancetx.store.interface import (
    BadLocation,
    IStore,
    LocationNotFound,
    StoredImage,
    StoreError,
    StoreUnavailable,
    UploadFailed,
)
# The background retry of clean-up steps is shared with the S3 driver.
from glancetx.store.cleanup import CleanupRetries, RetriedCleanups
from glancetx.store.deadline import AnswerDeadline
from glancetx.store.documents import drain, readDocument
from glancetx.store.etags import plainMD5
from glancetx.store.silence import SilentAnswer
from glancetx.store.wireurl import forTreq

MiB = 1024 * 1024
#: Most bytes read of a JSON answer: a Keystone token with its catalog, or
#: a page of a container listing (up to 10,000 names).
MAX_JSON = 16 * MiB
#: Swift refuses single objects above 5 GiB (its default max_file_size).
MAX_OBJECT_MB = 5120
#: Bytes a segment buffers before its PUT has a connection; the body is
#: paused above this.
HIGH_WATER = 1 * MiB
#: Seconds to wait, by default (swift_store_request_timeout), for the
#: answer to a request that carries no image bytes (Keystone or tempauth,
#: HEAD, DELETE, manifest), and for a download's response headers.
REQUEST_TIMEOUT = 60.0
#: Authenticated sessions kept (one per distinct credentials seen in
#: locations).
MAX_SESSIONS = 32
#: A token this close to its end (seconds) is renewed before a request, as
#: glance_store's swift_store_expire_soon_interval: Swift checks a token
#: when a request begins, so each segment of a long upload gets one that
#: lasts at least that long (an upload that outlived its token failed).
EXPIRE_SOON = 60

_V3_INTERFACES = {
    "publicURL": "public",
    "public": "public",
    "internalURL": "internal",
    "internal": "internal",
    "adminURL": "admin",
    "admin": "admin",
}


@attr.s(frozen=True, slots=True)
class _Credentials:
    """
    What authenticates one Swift account.  The key is left out of C{repr}.
    """

    authAddress: str = attr.ib()
    user: str = attr.ib()
    key: str = attr.ib(repr=False)


@attr.s(frozen=True, slots=True)
class _Session:
    storageUrl: str = attr.ib()
    token: str = attr.ib(repr=False)
    #: When the token runs out (reactor seconds), if the auth service said.
    expiresAt: Optional[float] = attr.ib(default=None)


@attr.s(frozen=True, slots=True)
class SwiftLocation:
    """
    A parsed Swift location URI.  C{user} and C{key} are None for a location
    that names no credentials.
    """

    authAddress: str = attr.ib()
    user: Optional[str] = attr.ib()
    key: Optional[str] = attr.ib(repr=False)
    container: str = attr.ib()
    obj: str = attr.ib()


def _normalAddress(address: str) -> str:
    return address.rstrip("/")


def makeLocation(authAddress: str, user: str, key: str, container: str, obj: str) -> str:
    """
    The location URI Glance writes for an object: the auth address with the
    credentials as userinfo, then container and object.
    """
    parts = urlsplit(authAddress)
    scheme = "swift+https" if parts.scheme == "https" else "swift+http"
    creds = "%s:%s" % (quote(user, safe=""), quote(key, safe=""))
    return "%s://%s@%s%s/%s/%s" % (
        scheme,
        creds,
        parts.netloc,
        parts.path.rstrip("/"),
        quote(container, safe=""),
        quote(obj, safe=""),
    )


def parseLocation(location: str) -> SwiftLocation:
    """
    Parse a C{swift://}, C{swift+http://} or C{swift+https://} location
    (C{swift://} means HTTPS, as in Glance).

    @raise BadLocation: for anything else; the message never repeats the
        location.
    """
    if location.count("://") != 1:
        raise BadLocation("a Swift location has exactly one scheme")
    scheme, rest = location.split("://", 1)
    if scheme not in SwiftStore.schemes:
        raise BadLocation("not a Swift location")
    if "?" in rest or "#" in rest:
        raise BadLocation("a Swift location has no query or fragment")
    netloc, _, path = rest.partition("/")
    user: Optional[str] = None
    key: Optional[str] = None
    if "@" in netloc:
        creds, _, hostport = netloc.rpartition("@")
        # The key is last and quoted; an old-style unquoted user may hold
        # colons of its own (account:user:key).
        rawUser, sep, rawKey = creds.rpartition(":")
        if not sep or not rawUser or not rawKey:
            raise BadLocation("badly formed credentials in Swift location")
        user, key = unquote(rawUser), unquote(rawKey)
    else:
        hostport = netloc
    if not hostport:
        raise BadLocation("Swift location names no host")
    segments = path.split("/")
    if len(segments) < 2 or not segments[-1] or not segments[-2]:
        raise BadLocation("Swift location names no container and object")
    authPath = "/".join(segments[:-2])
    httpScheme = "http" if scheme == "swift+http" else "https"
    authAddress = "%s://%s" % (httpScheme, hostport)
    if authPath:
        authAddress += "/" + authPath
    return SwiftLocation(
        authAddress=_normalAddress(authAddress),
        user=user,
        key=key,
        container=unquote(segments[-2]),
        obj=unquote(segments[-1]),
    )


def _containerPath(container: str) -> str:
    return "/" + quote(container, safe="")


def _objectPath(container: str, obj: str) -> str:
    return "/%s/%s" % (quote(container, safe=""), quote(obj, safe="/"))


def _header(response, name: str) -> Optional[str]:
    values = response.headers.getRawHeaders(name)
    if not values:
        return None
    value = values[0]
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _statusError(response, what: str, who: str = "Swift") -> StoreError:
    """
    The error for an unexpected answer: 5xx means Swift (or C{who}) is not
    well, anything else that the store or its configuration is wrong.
    """
    if response.code >= 500:
        return StoreUnavailable("%s answered %d to %s" % (who, response.code, what))
    return StoreError("%s answered %d to %s" % (who, response.code, what))


def _seconds(value: Optional[str]) -> Optional[float]:
    """
    A token's remaining life as tempauth gives it (X-Auth-Token-Expires).
    """
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _secondsUntil(when: Optional[str]) -> Optional[float]:
    """
    Seconds from now to Keystone's C{expires_at} (ISO 8601, UTC).
    """
    if not isinstance(when, str):
        return None
    try:
        end = datetime.datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        return None
    if end.tzinfo is None:
        end = end.replace(tzinfo=datetime.timezone.utc)
    return (end - datetime.datetime.now(datetime.timezone.utc)).total_seconds()


async def _json(response) -> Any:
    """
    A JSON answer (a token, a container listing, a bulk-delete result),
    read up to L{MAX_JSON}.
    """
    return json.loads(await readDocument(response, MAX_JSON))


def _ok(response) -> bool:
    return 200 <= response.code < 300


# --- Configuration -------------------------------------------------------


def _option(conf: Mapping[str, str], name: str, default: Optional[str] = None) -> Optional[str]:
    value = conf.get(name)
    if value is None or not value.strip():
        return default
    return value.strip()


def _required(conf: Mapping[str, str], name: str) -> str:
    value = _option(conf, name)
    if value is None:
        raise ConfigError("%s: required for the swift store" % (name,))
    return value


def _bool(conf: Mapping[str, str], name: str, default: bool) -> bool:
    value = _option(conf, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ConfigError("%s: must be true or false" % (name,))


def _megabytes(conf: Mapping[str, str], name: str, default: int) -> int:
    value = _option(conf, name)
    if value is None:
        return default * MiB
    try:
        number = int(value)
    except ValueError:
        raise ConfigError("%s: must be a whole number of megabytes" % (name,))
    if not 1 <= number <= MAX_OBJECT_MB:
        raise ConfigError(
            "%s: must be between 1 and %d (Swift's largest single object)"
            % (name, MAX_OBJECT_MB)
        )
    return number * MiB


def _httpUrl(name: str, value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port
    except ValueError:
        raise ConfigError("%s: not a valid URL" % (name,))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("%s: must be an http:// or https:// URL" % (name,))
    if parts.username is not None or parts.query or parts.fragment:
        raise ConfigError("%s: must not hold credentials, a query or a fragment" % (name,))
    return _normalAddress(value)


# --- The upload side ------------------------------------------------------


@implementer(IBodyProducer, IPushProducer)
class _WatchedBody:
    """
    The request body handed to treq for a single-object PUT.  It records
    how the body's own Deferred ended, so that a body failure can be told
    apart from a Swift failure (the Agent wraps both the same way), and it
    holds back the body's latest write until the body has vouched for every
    byte: Swift keeps an object once it has its last byte, so a body that
    fails at the very end (a checksum mismatch) must not have delivered it.
    """

    def __init__(self, body) -> None:
        self._body = body
        self.length = body.length
        self.failure: Optional[Failure] = None
        self.cut = False
        self.settled: Deferred = Deferred()
        self._done: Optional[Deferred] = None
        self._result: Any = None
        self._paused = False
        self._consumer = None
        self._held: Optional[bytes] = None

    def startProducing(self, consumer) -> Deferred:
        self._consumer = consumer
        # Kept here too: a body that has already failed ends it (and clears
        # the attribute) before startProducing returns.
        done = self._done = Deferred()
        self._body.startProducing(self).addBoth(self._record)
        return done

    # The body's consumer.

    def write(self, data: bytes) -> None:
        held, self._held = self._held, data
        if held and self._consumer is not None:
            self._consumer.write(held)

    def registerProducer(self, producer, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def _record(self, result: Any) -> None:
        if isinstance(result, Failure):
            self.failure = result
        elif self._held and self._consumer is not None:
            self._consumer.write(self._held)
        self._held = None
        if not self.settled.called:
            self.settled.callback(None)
        self._result = result
        if not self._paused or self.failure is not None:
            self._end()

    def _end(self) -> None:
        # Only a success waits for a resume: the Agent unregisters a finished
        # body from the connection, and a connection that still thinks its
        # producer is paused resumes the next request's body unasked.
        done, self._done = self._done, None
        if done is not None:
            done.callback(self._result) if self.failure is None else done.errback(self.failure)

    def pauseProducing(self) -> None:
        self._paused = True
        if not self.settled.called:
            self._body.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self.settled.called:
            self._end()
        else:
            self._body.resumeProducing()

    def stopProducing(self) -> None:
        self._done = None
        self._held = None
        if not self.settled.called:
            # The Agent gave up on sending (an answer came early, or the
            # connection went): the body will never vouch for its bytes, so
            # its verdict is in now, and nobody waits for it for ever.
            self.cut = True
            self._body.stopProducing()
            self.settled.callback(None)


@implementer(IConsumer)
class _Sink:
    """
    Counts what a body that should be empty writes.
    """

    received = 0

    def write(self, data: bytes) -> None:
        self.received += len(data)

    def registerProducer(self, producer, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


@implementer(IBodyProducer, IPushProducer)
class _BytesBody:
    """
    A small request body (a manifest) written at once; unlike treq's file
    producer it does not mind a resume it did not ask for.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer) -> Deferred:
        if self._data:
            consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IBodyProducer, IPushProducer)
class _SegmentBody:
    """
    The body of one segment's PUT.  The L{_SegmentWriter} writes into it;
    until the Agent starts it (the connection is not there yet) the bytes
    wait in a small buffer, and the image body is paused once that fills.
    Pauses from the connection are passed on to the image body.
    """

    def __init__(self, writer: "_SegmentWriter", length: Any, target: int) -> None:
        self._writer = writer
        #: Content-Length of the PUT, or UNKNOWN_LENGTH (chunked).
        self.length = length
        #: Bytes this segment takes before the next one starts.
        self.target = target
        self.written = 0
        self._buffer: List[bytes] = []
        self._buffered = 0
        self._consumer = None
        self._done: Optional[Deferred] = None
        self._finished = False
        self._transportPaused = False
        self._failure: Optional[Failure] = None

    def room(self) -> int:
        return self.target - self.written

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self._failure is not None:
            return
        if self._consumer is not None:
            self._consumer.write(data)
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= HIGH_WATER:
            self._writer.pause(("buffer", self))

    def startProducing(self, consumer) -> Deferred:
        if self._failure is not None:
            return fail(self._failure)
        self._consumer = consumer
        done = self._done = Deferred()
        buffered, self._buffer, self._buffered = self._buffer, [], 0
        for chunk in buffered:
            consumer.write(chunk)
        self._writer.unpause(("buffer", self))
        if self._finished and not self._transportPaused:
            self._end()
        return done

    def finish(self) -> None:
        """
        Every byte of this segment has been written.  The image body may go
        on to the next segment at once, but the PUT is ended only once the
        connection is not pausing it: the Agent unregisters a finished body
        from the connection, and a connection that still thinks its producer
        is paused resumes the next request's body unasked.
        """
        self._finished = True
        self._writer.unpause(("transport", self))
        if not self._transportPaused:
            self._end()

    def _end(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done.callback(None)

    #: Swift answered this PUT before its body ended (a 401, say).
    answered = False

    def abort(self, reason: Failure) -> None:
        """
        Give up: the Agent then drops the connection, so Swift discards the
        partial segment.  Where Swift has answered already, the connection
        is dropped here instead: twisted.web logs a body that fails after
        the answer as a critical error, with a traceback.
        """
        if self._failure is None:
            self._failure = reason
        self._buffer, self._buffered = [], 0
        done, self._done = self._done, None
        if done is None:
            return
        if self.answered:
            # The transport, under twisted.web's length-enforcing or
            # chunking consumer.
            transport = (getattr(self._consumer, "_consumer", None)
                         or getattr(self._consumer, "transport", None))
            if hasattr(transport, "abortConnection"):
                transport.abortConnection()
                return
        done.errback(reason)

    def pauseProducing(self) -> None:
        self._transportPaused = True
        if not self._finished:
            self._writer.pause(("transport", self))

    def resumeProducing(self) -> None:
        self._transportPaused = False
        self._writer.unpause(("transport", self))
        if self._finished:
            self._end()

    def stopProducing(self) -> None:
        # The connection went away; the PUT's Deferred fails, which fails the
        # upload.
        if self._failure is None:
            self._failure = Failure(StoreUnavailable("connection to Swift lost during an upload"))
        self._done = None
        self._writer.unpause(("transport", self))


@attr.s(eq=False)
class _Segment:
    name: str = attr.ib()
    body: _SegmentBody = attr.ib()
    response: Optional[Deferred] = attr.ib(default=None)
    etag: Optional[str] = attr.ib(default=None)
    settled: bool = attr.ib(default=False)


@implementer(IConsumer)
class _SegmentWriter:
    """
    The consumer an image body writes to when it becomes a large object: it
    cuts the stream into segments, starts one streamed PUT per segment, and
    keeps at most two segment uploads in flight by pausing the body.  The
    body's latest write is held back until the next one, or until the body
    has vouched for every byte, so that the last segment never reaches Swift
    whole (and is never kept) if the body fails at the very end.

    @ivar failed: errbacks with the first segment failure.
    """

    def __init__(self, upload, prefix: str, chunkSize: int,
                 declared: Optional[int], maxSegments: int) -> None:
        #: upload(name, segmentBody) -> Deferred firing with the etag.
        self._upload = upload
        self._prefix = prefix
        self._chunkSize = chunkSize
        self._declared = declared
        self._maxSegments = maxSegments
        self.segments: List[_Segment] = []
        self._current: Optional[_Segment] = None
        self._producer = None
        self._pauses: Set[Any] = set()
        self._windowWait: Optional[_Segment] = None
        self._error: Optional[Failure] = None
        self.failed: Deferred = Deferred()
        self.received = 0
        self._assigned = 0
        self._held: Optional[bytes] = None

    # IConsumer

    def registerProducer(self, producer, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        if self._error is not None:
            return
        self.received += len(data)
        if self._declared is not None and self.received > self._declared:
            self._fail(Failure(UploadFailed(400, "the request body is longer than its declared size")))
            return
        held, self._held = self._held, data
        if held:
            self._cut(held)

    def _cut(self, data: bytes) -> None:
        while data and self._error is None:
            segment = self._current
            if segment is None:
                segment = self._startSegment()
                if segment is None:
                    return
            room = segment.body.room()
            if len(data) <= room:
                piece, data = data, b""
            else:
                piece, data = data[:room], data[room:]
            self._assigned += len(piece)
            segment.body.write(piece)
            if segment.body.room() == 0:
                self._endSegment()

    # Flow control

    def pause(self, reason: Any) -> None:
        if self._error is not None:
            return
        wasRunning = not self._pauses
        self._pauses.add(reason)
        if wasRunning and self._producer is not None:
            self._producer.pauseProducing()

    def unpause(self, reason: Any) -> None:
        if reason not in self._pauses:
            return
        self._pauses.discard(reason)
        if not self._pauses and self._error is None and self._producer is not None:
            self._producer.resumeProducing()

    # Segments

    def _startSegment(self) -> Optional[_Segment]:
        number = len(self.segments) + 1
        if number > self._maxSegments:
            # Too large for this store as configured: the client's 413.
            self._fail(Failure(UploadFailed(
                413, "image needs more than %d Swift segments; raise "
                "swift_store_large_object_chunk_size" % (self._maxSegments,))))
            return None
        if self._declared is not None:
            target = min(self._chunkSize, self._declared - self._assigned)
            length: Any = target
        else:
            target = self._chunkSize
            length = UNKNOWN_LENGTH
        body = _SegmentBody(self, length, target)
        segment = _Segment(name="%s%08d" % (self._prefix, number), body=body)
        self.segments.append(segment)
        self._current = segment
        d = self._upload(segment.name, body)
        segment.response = d
        d.addCallbacks(self._stored, self._notStored, callbackArgs=(segment,), errbackArgs=(segment,))
        return segment

    def _endSegment(self) -> None:
        segment, self._current = self._current, None
        assert segment is not None
        segment.body.finish()
        if len(self.segments) >= 2:
            previous = self.segments[-2]
            if not previous.settled:
                # Two uploads in flight already: wait for the older one.
                self._windowWait = previous
                self.pause("window")

    def _stored(self, etag: str, segment: _Segment) -> None:
        segment.settled = True
        segment.etag = etag
        if self._windowWait is segment:
            self._windowWait = None
            self.unpause("window")

    def _notStored(self, reason: Failure, segment: _Segment) -> None:
        segment.settled = True
        self._fail(reason)

    def _fail(self, reason: Failure) -> None:
        if self._error is not None:
            return
        self._error = reason
        self._held = None
        for segment in self.segments:
            segment.body.abort(reason)
        self.failed.errback(reason)

    def abort(self, reason: Failure) -> None:
        """
        Stop every upload still running (the body failed, or the store did).
        """
        self._fail(reason)

    async def finish(self) -> List[_Segment]:
        """
        The body is done: end the last segment and wait until Swift has every
        segment.

        @raise UploadFailed: if the body ended short of its declared size.
        """
        if self._error is None and self._declared is not None and self.received != self._declared:
            self._fail(Failure(UploadFailed(400, "the request body is shorter than its declared size")))
        held, self._held = self._held, None
        if held and self._error is None:
            self._cut(held)
        if self._error is None and self._current is not None:
            self._endSegment()
        await self.settle()
        if self._error is not None:
            self._error.raiseException()
        return list(self.segments)

    async def settle(self) -> None:
        """
        Wait until every segment upload has ended, one way or the other.
        """
        for segment in list(self.segments):
            if not segment.settled and segment.response is not None:
                await segment.response


# --- The download side ----------------------------------------------------


@implementer(IBodyProducer, IPushProducer)
class _Download(Protocol):
    """
    A GET response's body as a producer.  The response's connection is
    paused from the moment the body is delivered here until a consumer
    starts this producer, and afterwards whenever the consumer pauses it.
    """

    #: The object's MD5 as Swift states it, where it does.
    md5: Optional[str] = None

    def __init__(self, length: int) -> None:
        self.length = length
        self._received = 0
        self._buffer: List[bytes] = []
        self._consumer = None
        self._done: Optional[Deferred] = None
        self._paused = False
        self._stopped = False
        self._ended = False
        self._outcome: Optional[Failure] = None

    # Protocol

    def connectionMade(self) -> None:
        self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        if self._stopped:
            return
        self._received += len(data)
        if self._consumer is None:
            self._buffer.append(data)
        else:
            self._consumer.write(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._ended = True
        complete = self._received == self.length
        if reason is not None and reason.check(ResponseDone, PotentialDataLoss) and complete:
            self._outcome = None
        else:
            self._outcome = Failure(StoreError(
                "the Swift download ended after %d of %d bytes" % (self._received, self.length)))
        if self._consumer is not None:
            self._finish()

    # IBodyProducer

    def startProducing(self, consumer) -> Deferred:
        if self._aborted is not None:
            return fail(self._aborted)
        self._consumer = consumer
        done = self._done = Deferred()
        buffered, self._buffer = self._buffer, []
        for chunk in buffered:
            consumer.write(chunk)
        if self._ended:
            self._finish()
        elif not self._paused and not self._stopped:
            self.transport.resumeProducing()
        return done

    def _finish(self) -> None:
        done, self._done = self._done, None
        if done is None:
            return
        if self._outcome is None:
            done.callback(None)
        else:
            done.errback(self._outcome)

    def pauseProducing(self) -> None:
        self._paused = True
        if not self._ended:
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if not self._ended and self._consumer is not None:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self._stopped = True
        self._done = None
        self._buffer = []
        if not self._ended:
            self.transport.stopProducing()

    _aborted: Optional[Failure] = None

    def abort(self, why: str = "the server is shutting down") -> None:
        """
        End this read from the server's side (a copy-from at shutdown):
        the connection is closed and the body fails, now or when started.
        """
        failure = Failure(StoreUnavailable("Swift read ended: %s" % (why,)))
        started, done = self._consumer is not None, self._done
        self.stopProducing()
        if not started:
            self._aborted = failure
        elif done is not None:
            done.errback(failure)


# --- The store ------------------------------------------------------------


def _checkName(image_id: str) -> None:
    """
    An image's object is named by its id alone, in the container's root.
    """
    if not image_id or "/" in image_id:
        raise BadLocation("bad image id")


@implementer(IStore)
@attr.s(eq=False)
class SwiftStore(RetriedCleanups):
    """
    Images in container C{container} of the Swift account that C{user} and
    C{key} authenticate at C{authAddress}.  Sizes are in bytes.
    """

    log = Logger()
    name = "swift"
    #: A failed upload's parts are removed over the network, which may be
    #: down longer than the store's own retries last.
    sweptAfterFailure = True
    schemes = ("swift", "swift+http", "swift+https")
    writable = True

    _reactor = attr.ib()
    _client = attr.ib()
    authAddress: str = attr.ib(converter=_normalAddress)
    user: str = attr.ib()
    _key: str = attr.ib(repr=False)
    authVersion: int = attr.ib(default=1)
    container: str = attr.ib(default="glance")
    createContainer: bool = attr.ib(default=False)
    largeObjectSize: int = attr.ib(default=5120 * MiB)
    chunkSize: int = attr.ib(default=200 * MiB)
    maxSegments: int = attr.ib(default=1000)
    projectName: Optional[str] = attr.ib(default=None)
    projectDomainName: str = attr.ib(default="Default")
    userDomainName: str = attr.ib(default="Default")
    endpointType: str = attr.ib(default="public")
    region: Optional[str] = attr.ib(default=None)
    endpoint: Optional[str] = attr.ib(default=None)
    serviceType: str = attr.ib(default="object-store")
    requestTimeout: float = attr.ib(default=REQUEST_TIMEOUT)
    _sessions: Dict[_Credentials, _Session] = attr.ib(factory=dict, init=False)
    _authWaiters: Dict[_Credentials, List[Deferred]] = attr.ib(factory=dict, init=False)
    _segmentsContainerReady: bool = attr.ib(default=False, init=False)
    _retries: Optional[CleanupRetries] = attr.ib(default=None, init=False, repr=False)

    @classmethod
    def fromConfig(cls, conf: Mapping[str, str], reactor, treqClient) -> "SwiftStore":
        """
        Build the store from raw option strings named as in glance_store.

        @raise ConfigError: naming the first bad or missing option.
        """
        versionText = _option(conf, "swift_store_auth_version", "1")
        versions = {"1": 1, "1.0": 1, "3": 3, "3.0": 3}
        if versionText not in versions:
            raise ConfigError(
                "swift_store_auth_version: must be 1 (tempauth/swauth) or 3 (Keystone v3)")
        version = versions[versionText]
        address = _httpUrl("swift_store_auth_address", _required(conf, "swift_store_auth_address"))
        user = _required(conf, "swift_store_user")
        key = _required(conf, "swift_store_key")
        project = _option(conf, "swift_store_project_name")
        if version == 1:
            account, sep, name = user.partition(":")
            if not sep or not account or not name:
                raise ConfigError("swift_store_user: must be account:user for auth version 1")
        elif project is None:
            projectPart, sep, name = user.partition(":")
            if not sep or not projectPart or not name:
                raise ConfigError(
                    "swift_store_project_name: required for auth version 3 "
                    "unless swift_store_user is project:user")
        container = _option(conf, "swift_store_container", "glance")
        assert container is not None
        if "/" in container or len(container) > 256 - len("_segments"):
            raise ConfigError(
                "swift_store_container: must have no slash and at most 247 characters")
        endpointType = _option(conf, "swift_store_endpoint_type", "publicURL")
        if endpointType not in _V3_INTERFACES:
            raise ConfigError(
                "swift_store_endpoint_type: must be publicURL, internalURL or adminURL")
        endpoint = _option(conf, "swift_store_endpoint")
        if endpoint is not None:
            endpoint = _httpUrl("swift_store_endpoint", endpoint)
        largeObjectSize = _megabytes(conf, "swift_store_large_object_size", 5120)
        chunkSize = _megabytes(conf, "swift_store_large_object_chunk_size", 200)
        timeout = _option(conf, "swift_store_request_timeout", str(int(REQUEST_TIMEOUT)))
        assert timeout is not None
        if not (timeout.isascii() and timeout.isdigit()) or int(timeout) < 1:
            raise ConfigError("swift_store_request_timeout: must be a whole number of seconds,"
                              " at least 1")
        return cls(
            reactor,
            treqClient,
            authAddress=address,
            user=user,
            key=key,
            authVersion=version,
            container=container,
            createContainer=_bool(conf, "swift_store_create_container_on_put", False),
            largeObjectSize=largeObjectSize,
            chunkSize=chunkSize,
            projectName=project,
            projectDomainName=_option(conf, "swift_store_project_domain_name", "Default"),
            userDomainName=_option(conf, "swift_store_user_domain_name", "Default"),
            endpointType=_V3_INTERFACES[endpointType],
            region=_option(conf, "swift_store_region"),
            endpoint=endpoint,
            serviceType=_option(conf, "swift_store_service_type", "object-store"),
            requestTimeout=float(timeout),
        )

    @property
    def segmentsContainer(self) -> str:
        return self.container + "_segments"

    def _configuredCredentials(self) -> _Credentials:
        return _Credentials(self.authAddress, self.user, self._key)

    def refusesFromUser(self, parsed: SwiftLocation) -> Optional[str]:
        """
        Why a location a user supplies may not be read, or None.  One that
        names this store's own account is read with the key as configured
        now (L{_locate}), so it must carry that key: with any other, a
        user would borrow the operator's, and read, or delete with the
        image, every object in the account.
        """
        if parsed.user is None or parsed.key is None:
            return ("A swift location must carry its own credentials"
                    " (swift+https://user:key@...).")
        if parsed.user == self.user and not hmac.compare_digest(
                parsed.key.encode("utf-8"), self._key.encode("utf-8")):
            return "This swift location names the store's own account with another key."
        return None

    def _locate(self, location: str) -> Tuple[_Credentials, SwiftLocation]:
        parsed = parseLocation(location)
        ours = parsed.authAddress == self.authAddress
        if parsed.user is not None and parsed.key is not None \
                and not (ours and parsed.user == self.user):
            creds = _Credentials(parsed.authAddress, parsed.user, parsed.key)
        elif ours:
            # This account's own (or naming none): the key as configured
            # now, which a rotation may have changed since the location
            # was written.
            creds = self._configuredCredentials()
        else:
            raise BadLocation("Swift location names no credentials")
        return creds, parsed

    # HTTP plumbing

    async def _send(self, method: str, url: str, who: str = "Swift", **kwargs: Any):
        """
        One request; a body without a timeout (image bytes, at the uploading
        client's pace) gives its answer C{requestTimeout} once it is sent.
        C{who} answers it, as errors name it (Keystone, for a token).

        A request that runs out of time fails the store; one cancelled by
        its caller (the downloading client went away) is a cancellation,
        not a store that "did not answer in time".
        """
        kwargs.setdefault("allow_redirects", False)
        kwargs.setdefault("reactor", self._reactor)
        timeout = kwargs.pop("timeout", None)
        sent: List[Deferred] = []
        timedOut: List[bool] = []

        def expire() -> None:
            timedOut.append(True)
            sent[0].cancel()

        deadline = timer = None
        if IBodyProducer.providedBy(kwargs.get("data")) and timeout is None:
            deadline = kwargs["data"] = AnswerDeadline(
                kwargs["data"], self._reactor, self.requestTimeout, expire)
        try:
            d = self._client.request(method, forTreq(url), **kwargs)
            sent.append(d)
            if timeout is not None:
                timer = self._reactor.callLater(timeout, expire)
            return SilentAnswer(await d, self._reactor, self.requestTimeout,
                                "%s %s" % (who, method))
        except (StoreError, UploadFailed):
            raise
        except Exception as e:
            if not isCancellation(e):
                raise StoreUnavailable("cannot reach %s (%s)" % (who, type(e).__name__))
            if timedOut:
                raise StoreUnavailable("%s did not answer %s in time" % (who, method))
            raise CancelledError() from e
        finally:
            if timer is not None and timer.active():
                timer.cancel()
            if deadline is not None:
                deadline.cancel()

    async def _session(self, creds: _Credentials, stale: Optional[_Session] = None) -> _Session:
        """
        A token for C{creds}: the cached one, unless it is C{stale}; one
        authentication at a time per credentials.  That one runs for every
        request waiting on it, not for the one that started it: when that
        request's client went away, its cancellation failed every other
        download waiting on the token with a 503.
        """
        session = self._sessions.get(creds)
        if session is not None and session is not stale and not self._endsSoon(session):
            return session
        d: Deferred = Deferred()
        waiters = self._authWaiters.get(creds)
        if waiters is not None:
            waiters.append(d)
        else:
            self._authWaiters[creds] = [d]
            Deferred.fromCoroutine(self._authenticateWaiters(creds))
        return await d

    async def _authenticateWaiters(self, creds: _Credentials) -> None:
        try:
            session = await self._authenticate(creds)
        except BaseException:
            failure = Failure()
            for d in self._authWaiters.pop(creds):
                d.errback(failure)
            return
        if creds not in self._sessions and len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        self._sessions[creds] = session
        for d in self._authWaiters.pop(creds):
            d.callback(session)

    def _endsSoon(self, session: _Session) -> bool:
        return (session.expiresAt is not None
                and self._reactor.seconds() >= session.expiresAt - EXPIRE_SOON)

    def _expiresIn(self, seconds: Optional[float]) -> Optional[float]:
        return None if seconds is None else self._reactor.seconds() + seconds

    async def _authenticate(self, creds: _Credentials) -> _Session:
        if self.authVersion == 3:
            return await self._authenticateV3(creds)
        response = await self._send(
            "GET",
            creds.authAddress,
            headers={"X-Auth-User": creds.user, "X-Auth-Key": creds.key},
            timeout=self.requestTimeout,
            who="Swift's auth",
        )
        await drain(response)
        if response.code in (401, 403):
            raise StoreError("Swift auth refused the credentials (%d)" % (response.code,))
        if not _ok(response):
            raise _statusError(response, "authentication", "Swift's auth")
        url = _header(response, "X-Storage-Url")
        token = _header(response, "X-Auth-Token") or _header(response, "X-Storage-Token")
        if not url or not token:
            raise StoreError("Swift auth answer has no storage URL or token")
        lasts = _header(response, "X-Auth-Token-Expires")
        return _Session(storageUrl=_normalAddress(self.endpoint or url), token=token,
                        expiresAt=self._expiresIn(_seconds(lasts)))

    async def _authenticateV3(self, creds: _Credentials) -> _Session:
        if self.projectName is not None:
            project, user = self.projectName, creds.user
        else:
            project, _, user = creds.user.partition(":")
        address = creds.authAddress
        if address.endswith("/auth/tokens"):
            url = address
        elif address.endswith("/v3"):
            url = address + "/auth/tokens"
        else:
            url = address + "/v3/auth/tokens"
        request = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": user,
                            "domain": {"name": self.userDomainName},
                            "password": creds.key,
                        }
                    },
                },
                "scope": {
                    "project": {"name": project, "domain": {"name": self.projectDomainName}}
                },
            }
        }
        response = await self._send("POST", url, json=request, timeout=self.requestTimeout,
                                    who="Keystone")
        if response.code in (401, 403):
            await drain(response)
            raise StoreError("Keystone refused the credentials (%d)" % (response.code,))
        if not _ok(response):
            await drain(response)
            raise _statusError(response, "authentication", "Keystone")
        token = _header(response, "X-Subject-Token")
        try:
            answer = await _json(response)
            catalog = answer["token"].get("catalog", [])
            expiresAt = answer["token"].get("expires_at")
        except Exception:
            raise StoreError("Keystone's token answer is not the JSON expected")
        if not token:
            raise StoreError("Keystone's token answer has no X-Subject-Token")
        storageUrl = self.endpoint or self._pickEndpoint(catalog)
        return _Session(storageUrl=_normalAddress(storageUrl), token=token,
                        expiresAt=self._expiresIn(_secondsUntil(expiresAt)))

    def _pickEndpoint(self, catalog: List[Dict[str, Any]]) -> str:
        for service in catalog:
            if service.get("type") != self.serviceType:
                continue
            for endpoint in service.get("endpoints", []):
                if endpoint.get("interface") != self.endpointType:
                    continue
                if self.region is not None and self.region not in (
                    endpoint.get("region"), endpoint.get("region_id")
                ):
                    continue
                if endpoint.get("url"):
                    return endpoint["url"]
        raise StoreError(
            "Keystone's catalog has no %s endpoint of type %s%s"
            % (self.endpointType, self.serviceType,
               " in region %s" % (self.region,) if self.region else ""))

    async def _authed(self, creds: _Credentials, method: str, path: str,
                      headers: Optional[Dict[str, str]] = None,
                      replayable: bool = True, **kwargs: Any):
        """
        Send a request to the account with a token, renewing the token and
        trying once more if Swift answers 401 and the request can be replayed.
        A non-replayable request (a streamed body) gets its 401 back.
        """
        session = await self._session(creds)
        for attempt in (1, 2):
            allHeaders = {"X-Auth-Token": session.token}
            allHeaders.update(headers or {})
            response = await self._send(method, session.storageUrl + path, headers=allHeaders, **kwargs)
            if response.code == 401 and attempt == 1 and replayable:
                await drain(response)
                session = await self._session(creds, stale=session)
                continue
            return response
        raise AssertionError("unreachable")

    async def _deleteQuietly(self, creds: _Credentials, path: str) -> None:
        """
        Best-effort removal while cleaning up after a failed upload: the
        original error is what the caller reports, so this one is only
        logged.  If Swift could not be reached (or answered 5xx) the removal
        is retried in the background for a while (see L{CleanupRetries}).
        """
        try:
            await self._deleteOnce(creds, path)
        except Exception as e:
            self.log.warn(
                "Swift store: could not remove {path} after a failed upload: {why}",
                path=path, why=str(e))
            if isinstance(e, StoreUnavailable):
                self._cleanups().add(
                    "remove %s after a failed upload" % (path,),
                    lambda: self._deleteOnce(creds, path))

    async def _deleteOnce(self, creds: _Credentials, path: str) -> None:
        response = await self._authed(creds, "DELETE", path, timeout=self.requestTimeout)
        await drain(response)
        if not _ok(response) and response.code != 404:
            raise _statusError(response, "a clean-up DELETE")

    async def _ensureContainer(self, creds: _Credentials, container: str, create: bool) -> None:
        path = _containerPath(container)
        response = await self._authed(creds, "HEAD", path, timeout=self.requestTimeout)
        await drain(response)
        if _ok(response):
            return
        if response.code != 404:
            raise _statusError(response, "checking the container")
        if not create:
            raise StoreError(
                "Swift container %s does not exist and "
                "swift_store_create_container_on_put is off" % (container,))
        response = await self._authed(creds, "PUT", path, timeout=self.requestTimeout)
        await drain(response)
        if not _ok(response):
            raise _statusError(response, "creating the container")

    async def listObjects(self, container: str, prefix: str = "") -> List[str]:
        """
        Names of the objects in C{container} (of the configured account)
        starting with C{prefix}; [] if the container does not exist.
        """
        return await self._list(self._configuredCredentials(), container, prefix)

    async def _list(self, creds: _Credentials, container: str, prefix: str) -> List[str]:
        names: List[str] = []
        marker = ""
        while True:
            params = [("format", "json"), ("prefix", prefix), ("marker", marker)]
            response = await self._authed(
                creds, "GET", _containerPath(container), params=params,
                timeout=self.requestTimeout)
            if response.code == 404:
                await drain(response)
                return names
            if response.code == 204:
                await drain(response)
                return names
            if not _ok(response):
                await drain(response)
                raise _statusError(response, "listing a container")
            try:
                page = [entry["name"] for entry in await _json(response)]
            except Exception:
                raise StoreError("Swift's container listing is not the JSON expected")
            if not page:
                return names
            names.extend(page)
            marker = page[-1]

    # IStore

    @fromCoroutine
    async def add(self, image_id: str, body) -> StoredImage:
        _checkName(image_id)
        creds = self._configuredCredentials()
        # Also makes sure the token is fresh before any byte is streamed:
        # a streamed body cannot be sent twice.
        await self._ensureContainer(creds, self.container, self.createContainer)
        length = body.length
        if length == 0:
            size = await self._putEmpty(creds, image_id, body)
        elif length is not UNKNOWN_LENGTH and length <= self.largeObjectSize:
            size = await self._putWhole(creds, image_id, body)
        else:
            size = await self._putSegmented(creds, image_id, body)
        location = makeLocation(self.authAddress, self.user, self._key, self.container, image_id)
        self.log.info("Swift store: stored {size} bytes as {container}/{name}",
                      size=size, container=self.container, name=image_id)
        return StoredImage(location=location, size=size)

    async def _putEmpty(self, creds: _Credentials, image_id: str, body) -> int:
        """
        An empty image: the body vouches first (Swift would keep an empty
        object the moment it had the request's headers).
        """
        sink = _Sink()
        await body.startProducing(sink)
        if sink.received:
            raise UploadFailed(400, "the request body is longer than its declared size")
        response = await self._authed(
            creds, "PUT", _objectPath(self.container, image_id), data=_BytesBody(b""),
            timeout=self.requestTimeout, headers={"Content-Type": "application/octet-stream"})
        await drain(response)
        if response.code != 201:
            # Swift may have kept the object before it answered.
            await self._deleteQuietly(creds, _objectPath(self.container, image_id))
            raise _statusError(response, "an image upload")
        return 0

    async def _putWhole(self, creds: _Credentials, image_id: str, body) -> int:
        path = _objectPath(self.container, image_id)
        watched = _WatchedBody(body)
        try:
            response = await self._authed(
                creds, "PUT", path, data=watched, replayable=False,
                headers={"Content-Type": "application/octet-stream"})
        except BaseException:
            await self._deleteQuietly(creds, path)
            if watched.failure is not None:
                raise watched.failure.value
            raise
        await drain(response)
        if response.code != 201:
            if not watched.settled.called:
                body.stopProducing()
            await self._deleteQuietly(creds, path)
            if response.code == 401:
                raise StoreError("Swift refused the token during an upload")
            raise _statusError(response, "an image upload")
        # Swift can answer as soon as it has the last byte, before the body
        # has vouched for it (size, checksum): wait for that verdict.
        if not watched.settled.called:
            await watched.settled
        if watched.failure is not None or watched.cut:
            await self._deleteQuietly(creds, path)
            if watched.failure is not None:
                raise watched.failure.value
            raise StoreUnavailable("Swift answered an upload before it had the whole image")
        return body.length

    async def _uploadSegment(self, creds: _Credentials, name: str, segment: _SegmentBody) -> str:
        response = await self._authed(
            creds, "PUT", _objectPath(self.segmentsContainer, name), data=segment,
            replayable=False, headers={"Content-Type": "application/octet-stream"})
        segment.answered = True
        await drain(response)
        if response.code == 201:
            etag = _header(response, "Etag")
            if not etag:
                raise StoreError("Swift stored a segment without an etag")
            return etag.strip('"')
        if response.code == 404:
            self._segmentsContainerReady = False
        if response.code == 401:
            raise StoreError("Swift refused the token during an upload")
        raise _statusError(response, "a segment upload")

    async def _putSegmented(self, creds: _Credentials, image_id: str, body) -> int:
        declared = None if body.length is UNKNOWN_LENGTH else body.length
        if declared is not None and -(-declared // self.chunkSize) > self.maxSegments:
            raise UploadFailed(
                413, "image needs more than %d Swift segments; raise "
                "swift_store_large_object_chunk_size" % (self.maxSegments,))
        if not self._segmentsContainerReady:
            await self._ensureContainer(creds, self.segmentsContainer, True)
            self._segmentsContainerReady = True
        path = _objectPath(self.container, image_id)
        prefix = "%s/%s/" % (image_id, uuid.uuid4().hex)

        def upload(name: str, segment: _SegmentBody) -> Deferred:
            return Deferred.fromCoroutine(self._uploadSegment(creds, name, segment))

        writer = _SegmentWriter(upload, prefix, self.chunkSize, declared, self.maxSegments)
        bodyEnded: List[bool] = []

        def ended(result: Any) -> Any:
            bodyEnded.append(True)
            return result

        writer.registerProducer(body, True)
        bodyDone = body.startProducing(writer)
        bodyDone.addBoth(ended)
        manifestSent = False
        try:
            await firstOf(bodyDone, writer.failed)
            writer.unregisterProducer()
            segments = await writer.finish()
            if not segments:
                # An empty body of unknown length: no segment at all.
                manifestSent = True
                response = await self._authed(
                    creds, "PUT", path, data=_BytesBody(b""), timeout=self.requestTimeout,
                    headers={"Content-Type": "application/octet-stream"})
            else:
                manifest = json.dumps([
                    {
                        "path": "/%s/%s" % (self.segmentsContainer, s.name),
                        "etag": s.etag,
                        "size_bytes": s.body.written,
                    }
                    for s in segments
                ]).encode("ascii")
                manifestSent = True
                response = await self._authed(
                    creds, "PUT", path + "?multipart-manifest=put", data=_BytesBody(manifest),
                    timeout=self.requestTimeout,
                    headers={"Content-Type": "application/octet-stream"})
            await drain(response)
            if response.code != 201:
                raise _statusError(response, "a large-object manifest")
        except BaseException:
            reason = Failure()
            writer.unregisterProducer()
            if not bodyEnded:
                body.stopProducing()
            writer.abort(reason)
            await writer.settle()
            if manifestSent:
                await self._deleteQuietly(creds, path)
            for segment in writer.segments:
                await self._deleteQuietly(creds, _objectPath(self.segmentsContainer, segment.name))
            reason.raiseException()
        return writer.received

    @fromCoroutine
    async def removeAbandoned(self, image_id: str, retry: bool = True) -> None:
        """
        A dead upload's segments (named C{<image id>/<upload id>/<n>}), and
        the object or manifest it finished before the registry heard of it.
        """
        _checkName(image_id)
        creds = self._configuredCredentials()
        try:
            await self._removeAbandonedOnce(creds, image_id)
        except StoreUnavailable as e:
            if not retry:
                raise
            self.log.warn(
                "Swift store: could not remove what an abandoned upload of image {image_id}"
                " left: {why}", image_id=image_id, why=str(e))
            self._cleanups().add(
                "remove what an abandoned upload of image %s left" % (image_id,),
                lambda: self._removeAbandonedOnce(creds, image_id))

    async def _removeAbandonedOnce(self, creds: _Credentials, image_id: str) -> None:
        for name in await self._list(creds, self.segmentsContainer, image_id + "/"):
            await self._deleteOnce(creds, _objectPath(self.segmentsContainer, name))
        await self._deleteOnce(creds, _objectPath(self.container, image_id))

    @fromCoroutine
    async def get(self, location: str):
        creds, parsed = self._locate(location)
        response = await self._authed(
            creds, "GET", _objectPath(parsed.container, parsed.obj),
            unbuffered=True, timeout=self.requestTimeout)
        if response.code == 404:
            await drain(response)
            raise LocationNotFound("no Swift object at the location")
        if response.code != 200:
            await drain(response)
            raise _statusError(response, "a download")
        # twisted.web keeps a response's Content-Length as .length, not as a
        # header.
        length = response.length
        if length is UNKNOWN_LENGTH:
            await drain(response)
            raise StoreError("Swift's download answer has no Content-Length")
        download = _Download(length)
        # A large object's ETag is a digest of its segments' digests.
        if not (_header(response, "X-Static-Large-Object")
                or _header(response, "X-Object-Manifest")):
            download.md5 = plainMD5(_header(response, "Etag"))
        response.deliverBody(download)
        return download

    @fromCoroutine
    async def get_size(self, location: str) -> int:
        creds, parsed = self._locate(location)
        response = await self._head(creds, parsed)
        try:
            return int(_header(response, "Content-Length") or "")
        except ValueError:
            raise StoreError("Swift's answer has no Content-Length")

    async def _head(self, creds: _Credentials, parsed: SwiftLocation):
        response = await self._authed(
            creds, "HEAD", _objectPath(parsed.container, parsed.obj), timeout=self.requestTimeout)
        await drain(response)
        if response.code == 404:
            raise LocationNotFound("no Swift object at the location")
        if not _ok(response):
            raise _statusError(response, "a HEAD")
        return response

    @fromCoroutine
    async def delete(self, location: str) -> None:
        creds, parsed = self._locate(location)
        path = _objectPath(parsed.container, parsed.obj)
        try:
            head = await self._head(creds, parsed)
        except LocationNotFound:
            return
        if (_header(head, "X-Static-Large-Object") or "").lower() == "true":
            await self._deleteStatic(creds, path)
            return
        dynamic = _header(head, "X-Object-Manifest")
        if dynamic:
            # A DLO, as Glance writes them: segments first, then the manifest.
            segContainer, _, segPrefix = dynamic.partition("/")
            segContainer, segPrefix = unquote(segContainer), unquote(segPrefix)
            for name in await self._list(creds, segContainer, segPrefix):
                await self._deleteObject(creds, _objectPath(segContainer, name))
        await self._deleteObject(creds, path)

    async def _deleteObject(self, creds: _Credentials, path: str) -> None:
        response = await self._authed(creds, "DELETE", path, timeout=self.requestTimeout)
        await drain(response)
        if not _ok(response) and response.code != 404:
            raise _statusError(response, "a DELETE")

    async def _deleteStatic(self, creds: _Credentials, path: str) -> None:
        """
        Delete an SLO: Swift removes the segments, then the manifest.
        """
        response = await self._authed(
            creds, "DELETE", path + "?multipart-manifest=delete",
            headers={"Accept": "application/json"}, timeout=self.requestTimeout)
        if response.code == 404:
            await drain(response)
            return
        if not _ok(response):
            await drain(response)
            raise _statusError(response, "a large-object DELETE")
        try:
            result = await _json(response)
            status = str(result.get("Response Status", ""))
            errors = result.get("Errors") or []
        except Exception:
            raise StoreError("Swift's large-object DELETE answer is not the JSON expected")
        if not (status.startswith("200") or status.startswith("404")) or errors:
            raise _statusError(_Coded(int(status[:3]) if status[:3].isdigit() else 500),
                               "deleting %d large-object part(s)" % (max(len(errors), 1),))


@attr.s(frozen=True)
class _Coded:
    """
    Stands in for a response where only a status code is known (the one
    reported inside a bulk-delete answer).
    """

    code: int = attr.ib()
