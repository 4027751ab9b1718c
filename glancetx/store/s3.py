"""
The S3 store: images as objects in one bucket of an S3-compatible service.

Requests go over treq (an injected L{HTTPClient}) and are signed with
botocore's SigV4 signer; no boto3, no thread pool.  The payload is never
hashed (C{UNSIGNED-PAYLOAD}): a hash would need the whole body before the
first byte is sent, and the body is a client's upload still arriving.

Two ways in:

  - A body of known length up to C{largeObjectSize} is one streamed PUT: the
    body producer is handed to the HTTP client as it is, and the client's
    bytes go to S3 as they arrive.
  - Anything larger, or of unknown length, is a multipart upload.  This
    driver is the body's consumer: it cuts the bytes into parts of
    C{chunkSize}, sends each part while the next is still arriving, and
    pauses the body while C{maxPartsInFlight} parts are on their way, so an
    upload never holds more than about C{maxPartsInFlight * chunkSize} bytes.
    The upload is begun only once a whole part is in hand, so a body of
    unknown length that turns out small is sent as one plain PUT.  On any
    failure the multipart upload is aborted before the failure is passed on.

Locations are Glance's: C{s3://ACCESS:SECRET@host[:port]/bucket/key} for a
plain-HTTP endpoint (C{s3+http://} is read the same), C{s3+https://...} for
HTTPS, as Glance's s3 store read them.  The credentials are quoted
(C{%3A} for a C{:} in an access key such as Swift's C{account:user}).
"""

import ipaddress
import math
import re
from collections import deque
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import attr
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from twisted.internet.defer import CancelledError, Deferred, fail
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
from glancetx.store.cleanup import CleanupRetries, RetriedCleanups
from glancetx.store.deadline import AnswerDeadline
from glancetx.store.documents import drain, readDocument
from glancetx.store.etags import plainMD5
from glancetx.store.interface import (
    BadLocation,
    IStore,
    LocationNotFound,
    StoredImage,
    StoreError,
    StoreUnavailable,
    UploadFailed,
)
from glancetx.store.silence import SilentAnswer
from glancetx.store.wireurl import forTreq

MiB = 1024 * 1024

#: S3's own limits on multipart uploads.
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10000

#: Seconds to wait, by default (s3_store_request_timeout), for a request
#: that carries no image bytes (HEAD, DELETE, multipart bookkeeping, the
#: start of a GET), for the answer to one that does once it is sent, and
#: for each silence within an answer.
CONTROL_TIMEOUT = 60.0

#: Largest write handed to a transport when sending a buffered part.
_WRITE_SIZE = 256 * 1024

#: Whether a location's scheme means HTTPS, as Glance's s3 store read
#: them: its connection was secure only for C{s3+https} (it wrote C{s3}
#: for a host configured without a scheme, or with http://), so an image
#: in a database Glance wrote is read the way Glance read it.
_SCHEMES = {"s3": False, "s3+https": True, "s3+http": False}

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}

_BUCKET = re.compile(r"^[A-Za-z0-9._-]{3,255}$")
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


class _UnsignedPayloadAuth(S3SigV4Auth):
    """
    SigV4 with C{x-amz-content-sha256: UNSIGNED-PAYLOAD}.  The stock signer
    would put the hash of an empty body there for any request it cannot see
    a body for (ours are streamed), and real S3 implementations then refuse
    the bytes that follow.
    """

    def _should_sha256_sign_payload(self, request: AWSRequest) -> bool:
        return False


@attr.s(frozen=True, slots=True, auto_attribs=True)
class S3Location:
    """
    One object: where the service is, who may read it, and its name.
    """

    secure: bool
    host: str
    accessKey: str = attr.ib(repr=False)
    secretKey: str = attr.ib(repr=False)
    bucket: str
    key: str

    def uri(self) -> str:
        return "%s://%s:%s@%s/%s/%s" % (
            "s3+https" if self.secure else "s3",
            quote(self.accessKey, safe=""),
            quote(self.secretKey, safe=""),
            self.host,
            self.bucket,
            self.key,
        )

    def forLog(self) -> str:
        """
        The object's name for log lines: no host, no credentials.
        """
        return "s3 object %s/%s" % (self.bucket, self.key)


def parseLocation(location: str) -> S3Location:
    """
    Read a location URI.  Credentials are percent-decoded; a legacy Glance
    location whose secret has a raw C{/} in it (Glance wrote them unquoted)
    is read too, by taking the last C{@} as the end of the credentials.

    @raise BadLocation: if it is not a well-formed S3 location.
    """
    scheme, sep, rest = location.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise BadLocation("not an s3 location")
    secure = _SCHEMES[scheme.lower()]
    creds = None
    at = rest.find("@")
    if at != -1:
        if "/" in rest[:at]:
            at = rest.rfind("@")
        creds, rest = rest[:at], rest[at + 1:]
    host, _, path = rest.partition("/")
    bucket, _, key = path.partition("/")
    if not host or not bucket or not key:
        raise BadLocation("s3 location needs host, bucket and key")
    _checkNetloc(host, BadLocation)
    if creds is None:
        raise BadLocation("s3 location without credentials")
    access, sep, secret = creds.rpartition(":")
    if not sep or not access:
        raise BadLocation("s3 location credentials must be access:secret")
    return S3Location(
        secure=secure,
        host=host,
        accessKey=unquote(access),
        secretKey=unquote(secret),
        bucket=bucket,
        key=key,
    )


def _checkNetloc(netloc: str, error: type) -> None:
    try:
        parts = urlsplit("//" + netloc)
        parts.port
    except ValueError:
        raise error("bad host or port")
    if not parts.hostname or "@" in netloc:
        raise error("bad host")
    if netloc.startswith("[") and not re.match(r"\[[^\]]*\](:\d*)?\Z", netloc):
        # urlsplit reads "[::1]x:9000" as host ::1, port 9000.
        raise error("bad host or port")


def _isAddressOrLocal(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


def _signedHeaders(
    method: str, url: str, loc: S3Location, region: str, headers: Mapping[str, str]
) -> Dict[bytes, List[bytes]]:
    request = AWSRequest(method=method, url=url, headers=dict(headers))
    _UnsignedPayloadAuth(
        Credentials(loc.accessKey, loc.secretKey), "s3", region
    ).add_auth(request)
    return {
        k.encode("latin-1"): [v.encode("latin-1") if isinstance(v, str) else v]
        for k, v in request.headers.items()
    }


def _describe(e: BaseException) -> str:
    """
    Name what went wrong without any text a server or URL put in it.
    """
    names = [type(e).__name__]
    for r in getattr(e, "reasons", None) or ():
        if isinstance(r, Failure):
            names.append(type(r.value).__name__)
    return "/".join(names)


def _findText(document: bytes, name: str) -> Optional[str]:
    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError:
        return None
    for el in root.iter():
        if el.tag == name or el.tag.endswith("}" + name):
            return (el.text or "").strip()
    return None


def _rootTag(document: bytes) -> Optional[str]:
    try:
        tag = ElementTree.fromstring(document).tag
    except ElementTree.ParseError:
        return None
    return tag.rpartition("}")[2]


@implementer(IBodyProducer, IPushProducer)
class _ObservedBody:
    """
    The caller's body, passed to the HTTP client for a single PUT, with its
    outcome and byte count kept where C{add} can see them.

    The HTTP client is told the body failed only if the failure left the
    request short; when every declared byte was already sent it is told the
    body finished (the request on the wire is whole and S3 will answer it),
    and C{add} deletes the object the failed body must not leave behind.
    """

    def __init__(self, body: IBodyProducer) -> None:
        self._body = body
        self.length = body.length
        self.written = 0
        self.started = False
        self.failure: Optional[Failure] = None
        self.finished = False
        self._waiters: List[Deferred] = []
        self._consumer: Any = None
        self._forClient: Optional[Deferred] = None

    def startProducing(self, consumer: IConsumer) -> Deferred:
        self.started = True
        self._consumer = consumer
        # Kept here too: a body that has already failed ends it (and clears
        # the attribute) before startProducing returns.
        forClient = self._forClient = Deferred()
        d = self._body.startProducing(self)
        d.addBoth(self._bodyDone)
        return forClient

    # IConsumer, for the body.
    def write(self, data: bytes) -> None:
        self.written += len(data)
        self._consumer.write(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def _bodyDone(self, result: Any) -> None:
        self.finished = True
        if isinstance(result, Failure):
            self.failure = result
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            self._fire(w)
        d, self._forClient = self._forClient, None
        if d is not None:
            if self.failure is not None and self.written < self.length:
                d.errback(self.failure)
            else:
                d.callback(None)
        return None

    def _fire(self, d: Deferred) -> None:
        if self.failure is not None:
            d.errback(self.failure)
        else:
            d.callback(None)

    def whenFinished(self) -> Deferred:
        d: Deferred = Deferred()
        if self.finished:
            self._fire(d)
        else:
            self._waiters.append(d)
        return d

    # IPushProducer, for the transport.
    def pauseProducing(self) -> None:
        self._body.pauseProducing()

    def resumeProducing(self) -> None:
        self._body.resumeProducing()

    def stopProducing(self) -> None:
        """
        The HTTP client is done with the body: it gave up the request, or
        dropped the connection because S3 answered before the body had
        vouched for its bytes (a checksum still being computed).  In that
        second case every byte is out, and the body must still settle:
        C{add} waits on L{whenFinished} before it keeps the object.
        """
        self._forClient = None
        if not self.finished and self.written < self.length:
            self._body.stopProducing()


@implementer(IBodyProducer, IPushProducer)
class _ChunksBody:
    """
    A buffered part, written to the transport in bounded pieces as the
    transport asks for them, and let go of as it is written.
    """

    def __init__(self, chunks: List[bytes], size: int) -> None:
        self._chunks: Deque[bytes] = deque(chunks)
        self.length = size
        self._paused = False
        self._stopped = False
        self._done: Optional[Deferred] = None
        self._consumer: Any = None

    def startProducing(self, consumer: IConsumer) -> Deferred:
        self._consumer = consumer
        self._done = Deferred()
        d = self._done
        self._pump()
        return d

    def _pump(self) -> None:
        while self._chunks and not self._paused and not self._stopped:
            chunk = self._chunks.popleft()
            if len(chunk) > _WRITE_SIZE:
                self._chunks.appendleft(chunk[_WRITE_SIZE:])
                chunk = chunk[:_WRITE_SIZE]
            self._consumer.write(chunk)
        if not self._chunks and not self._stopped and self._done is not None:
            d, self._done = self._done, None
            d.callback(None)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._stopped = True
        self._chunks.clear()
        self._done = None


@implementer(IConsumer)
class _PartWriter:
    """
    The consumer of a body going to a multipart upload.  Whole parts are
    sent as soon as they are cut, at most C{maxInFlight} at a time; while
    that many are on their way the body is paused.
    """

    def __init__(
        self, store: "S3Store", loc: S3Location, partSize: int, maxInFlight: int
    ) -> None:
        self._store = store
        self._loc = loc
        self._partSize = partSize
        self._maxInFlight = maxInFlight
        self._buf: Deque[bytes] = deque()
        self._bufSize = 0
        self._waiting: Deque[Tuple[int, List[bytes], int]] = deque()
        self._inFlight = 0
        self._nextNumber = 1
        self.etags: Dict[int, str] = {}
        self.uploadId: Optional[str] = None
        self.initiateUncertain = False
        self._initiating = False
        self._producer: Any = None
        self._paused = False
        self._closed = False
        self.total = 0
        self.error: Optional[Failure] = None
        self.failed: Deferred = Deferred()
        self._idleWaiters: List[Deferred] = []
        self._heldBytes = 0
        #: The most image bytes held at once; tests check the bound.
        self.peakBytes = 0

    # IConsumer
    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        if self.error is not None or self._closed:
            return
        self.total += len(data)
        self._buf.append(data)
        self._bufSize += len(data)
        while self._bufSize >= self._partSize:
            self._cut(self._partSize)
        self._pump()

    def _cut(self, size: int) -> None:
        """
        Move the first C{size} buffered bytes into a part waiting to be sent.
        """
        chunks: List[bytes] = []
        need = size
        while need:
            head = self._buf[0]
            if len(head) <= need:
                chunks.append(self._buf.popleft())
                need -= len(head)
            else:
                chunks.append(head[:need])
                self._buf[0] = head[need:]
                need = 0
        self._bufSize -= size
        if self._nextNumber > MAX_PARTS:
            # Too large for this store as configured: the client's 413, not
            # a store that is down (which a client would try again).
            self._fail(Failure(UploadFailed(
                413, "image needs more than %d parts of %d bytes; raise"
                " s3_store_large_object_chunk_size" % (MAX_PARTS, self._partSize)
            )))
            return
        self._waiting.append((self._nextNumber, chunks, size))
        self._heldBytes += size
        self._nextNumber += 1

    def _pump(self) -> None:
        """
        Start whatever can start, and pause or resume the body to match.
        """
        if self.error is not None:
            self._checkIdle()
            return
        if self._waiting and self.uploadId is None and not self._initiating:
            self._initiating = True
            d = Deferred.fromCoroutine(self._store._initiate(self._loc))
            d.addCallbacks(self._initiated, self._initiateFailed)
        if self.uploadId is not None:
            while self._waiting and self._inFlight < self._maxInFlight:
                number, chunks, size = self._waiting.popleft()
                self._inFlight += 1
                d = Deferred.fromCoroutine(
                    self._store._uploadPart(self._loc, self.uploadId, number, chunks, size)
                )
                d.addCallbacks(
                    self._partDone,
                    self._partFailed,
                    callbackArgs=(number, size),
                    errbackArgs=(size,),
                )
        held = self._inFlight + len(self._waiting)
        self.peakBytes = max(self.peakBytes, self._heldBytes + self._bufSize)
        if self._producer is not None and not self._closed:
            if held >= self._maxInFlight and not self._paused:
                self._paused = True
                self._producer.pauseProducing()
            elif held < self._maxInFlight and self._paused:
                self._paused = False
                self._producer.resumeProducing()
        self._checkIdle()

    def _initiated(self, uploadId: str) -> None:
        self._initiating = False
        self.uploadId = uploadId
        self._pump()

    def _initiateFailed(self, reason: Failure) -> None:
        self._initiating = False
        # The request may have reached S3 and started an upload whose id
        # never came back (a lost connection, a time-out).
        self.initiateUncertain = reason.check(StoreUnavailable) is not None
        self._fail(reason)

    def _partDone(self, etag: str, number: int, size: int) -> None:
        self._inFlight -= 1
        self._heldBytes -= size
        self.etags[number] = etag
        self._pump()

    def _partFailed(self, reason: Failure, size: int) -> None:
        self._inFlight -= 1
        self._heldBytes -= size
        self._fail(reason)

    def _fail(self, reason: Failure) -> None:
        if self.error is None:
            self.error = reason
            self._drop()
            self.failed.errback(reason)
        self._checkIdle()
        return None

    def _drop(self) -> None:
        self._buf.clear()
        self._bufSize = 0
        for _, _, size in self._waiting:
            self._heldBytes -= size
        self._waiting.clear()

    def _busy(self) -> bool:
        return bool(self._inFlight or self._initiating or (self._waiting and self.error is None))

    def _checkIdle(self) -> None:
        if not self._busy():
            waiters, self._idleWaiters = self._idleWaiters, []
            for w in waiters:
                w.callback(None)

    def whenIdle(self) -> Deferred:
        """
        Fire once nothing is on its way to S3 (whatever the outcomes).
        """
        d: Deferred = Deferred()
        self._idleWaiters.append(d)
        self._checkIdle()
        return d

    def stop(self) -> None:
        """
        Take no more bytes and start nothing new (the upload is given up).
        """
        self._closed = True
        self._drop()
        self._checkIdle()

    def bufferedOnly(self) -> bool:
        """
        True if the body ended before a whole part: nothing was sent yet.
        """
        return self.uploadId is None and not self._initiating and not self._waiting

    def takeBuffer(self) -> Tuple[List[bytes], int]:
        buf, size = list(self._buf), self._bufSize
        self._buf.clear()
        self._bufSize = 0
        return buf, size

    def close(self) -> None:
        """
        The body has ended: send what is left as the last part.
        """
        self._closed = True
        if self._bufSize:
            self._cut(self._bufSize)
        self._pump()


class _CompletionUncertain(StoreUnavailable):
    """
    A multipart completion whose outcome is unknown: no answer came, or
    its document did not; S3 may have assembled the object.
    """


@implementer(IBodyProducer, IPushProducer)
class _S3Reader:
    """
    Streams a GET response's body to a consumer, pausing the connection when
    the consumer pauses, and failing if the body ends short.
    """

    #: The object's MD5 as the store states it, where it does.
    md5: Optional[str] = None

    def __init__(self, response: Any, length: int) -> None:
        self._response = response
        self.length = length
        self._consumer: Any = None
        self._transport: Any = None
        self._done: Optional[Deferred] = None
        self._received = 0
        self._paused = False
        self._stopped = False
        self._started = False

    def startProducing(self, consumer: IConsumer) -> Deferred:
        if self._aborted is not None:
            return fail(self._aborted)
        self._consumer = consumer
        self._started = True
        done = self._done = Deferred()
        self._response.deliverBody(_ReaderProtocol(self))
        if self._paused and self._transport is not None:
            self._transport.pauseProducing()
        return done

    def _connected(self, transport: Any) -> None:
        self._transport = transport

    def _data(self, data: bytes) -> None:
        if self._stopped:
            return
        self._received += len(data)
        self._consumer.write(data)

    def _lost(self, reason: Failure) -> None:
        d, self._done = self._done, None
        if d is None or self._stopped:
            return
        if reason.check(ResponseDone, PotentialDataLoss) and self._received == self.length:
            d.callback(None)
        else:
            d.errback(Failure(StoreError(
                "S3 ended the image after %d of %d bytes" % (self._received, self.length)
            )))

    def pauseProducing(self) -> None:
        self._paused = True
        if self._transport is not None:
            self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self._transport is not None:
            self._transport.resumeProducing()

    def stopProducing(self) -> None:
        self._stopped = True
        self._done = None
        if self._transport is not None:
            self._transport.stopProducing()
        elif not self._started:
            # Never read: drop the connection rather than leave it waiting.
            self._started = True
            self._response.deliverBody(_Discard())

    _aborted: Optional[Failure] = None

    def abort(self, why: str = "the server is shutting down") -> None:
        """
        End this read from the server's side (a copy-from at shutdown):
        the connection is closed and the body fails, now or when started.
        """
        failure = Failure(StoreUnavailable("S3 read ended: %s" % (why,)))
        started, done = self._started, self._done
        self.stopProducing()
        if not started:
            self._aborted = failure
        elif done is not None:
            done.errback(failure)


class _ReaderProtocol(Protocol):
    def __init__(self, reader: _S3Reader) -> None:
        self._reader = reader

    def connectionMade(self) -> None:
        self._reader._connected(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self._reader._data(data)

    def connectionLost(self, reason: Failure = None) -> None:
        self._reader._lost(reason)


class _Discard(Protocol):
    def connectionMade(self) -> None:
        self.transport.stopProducing()


def _parseBool(conf: Mapping[str, str], name: str, default: bool) -> bool:
    raw = conf.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError("%s: expected true or false, not %r" % (name, raw))


def _parseInt(conf: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = conf.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError("%s: expected a whole number, not %r" % (name, raw))
    if value < minimum:
        raise ConfigError("%s: must be at least %d" % (name, minimum))
    return value


def _required(conf: Mapping[str, str], name: str) -> str:
    raw = (conf.get(name) or "").strip()
    if not raw:
        raise ConfigError("%s: required for the s3 store" % (name,))
    return raw


def _checkedKey(image_id: str) -> str:
    """
    An image's key: its id, which must not leave the bucket's root.
    """
    if not image_id or image_id.startswith("/") or ".." in image_id.split("/"):
        raise BadLocation("bad image id")
    return image_id


@implementer(IStore)
@attr.s(eq=False)
class S3Store(RetriedCleanups):
    """
    Images as objects named by image id in C{bucket}.  Sizes are in bytes
    here; L{fromConfig} reads Glance's options (sizes in MB).
    """

    log = Logger()
    name = "s3"
    #: A failed upload's parts are removed over the network, which may be
    #: down longer than the store's own retries last.
    sweptAfterFailure = True
    schemes = ("s3", "s3+http", "s3+https")
    writable = True

    _reactor: Any = attr.ib()
    _client: Any = attr.ib()
    secure: bool = attr.ib()
    host: str = attr.ib()
    accessKey: str = attr.ib(repr=False)
    secretKey: str = attr.ib(repr=False)
    bucket: str = attr.ib()
    region: str = attr.ib(default="us-east-1")
    urlFormat: str = attr.ib(default="auto")
    createBucket: bool = attr.ib(default=False)
    largeObjectSize: int = attr.ib(default=100 * MiB)
    chunkSize: int = attr.ib(default=10 * MiB)
    maxPartsInFlight: int = attr.ib(default=2)
    requestTimeout: float = attr.ib(default=CONTROL_TIMEOUT)
    _bucketReady: bool = attr.ib(default=False, init=False)
    _retries: Optional[CleanupRetries] = attr.ib(default=None, init=False, repr=False)

    @classmethod
    def fromConfig(cls, conf: Mapping[str, str], reactor: Any, treqClient: Any) -> "S3Store":
        """
        Build a store from Glance's C{s3_store_*} options (raw strings).

        @raise ConfigError: naming the first bad or missing option.
        """
        rawHost = _required(conf, "s3_store_host")
        if "://" in rawHost:
            scheme, _, netloc = rawHost.partition("://")
            scheme = scheme.lower()
            if scheme not in ("http", "https"):
                raise ConfigError("s3_store_host: scheme must be http or https")
        else:
            # As Glance's store: a host without a scheme is plain HTTP.
            scheme, netloc = "http", rawHost
        netloc, _, path = netloc.partition("/")
        if path.strip("/"):
            raise ConfigError("s3_store_host: a path is not supported, give host[:port]")
        _checkNetloc(netloc, lambda m: ConfigError("s3_store_host: " + m))
        access = _required(conf, "s3_store_access_key")
        secret = _required(conf, "s3_store_secret_key")
        bucket = _required(conf, "s3_store_bucket")
        if not _BUCKET.match(bucket):
            raise ConfigError(
                "s3_store_bucket: 3 to 255 letters, digits, dots, dashes or underscores"
            )
        urlFormat = (conf.get("s3_store_bucket_url_format") or "auto").strip().lower()
        if urlFormat not in ("auto", "path", "virtual"):
            raise ConfigError("s3_store_bucket_url_format: must be path, virtual or auto")
        large = _parseInt(conf, "s3_store_large_object_size", 100, 1)
        chunk = _parseInt(conf, "s3_store_large_object_chunk_size", 10, 5)
        if chunk > 5 * 1024:
            raise ConfigError("s3_store_large_object_chunk_size: S3 parts are at most 5120 MB")
        inFlight = _parseInt(conf, "s3_store_max_parts_in_flight", 2, 1)
        timeout = _parseInt(conf, "s3_store_request_timeout", int(CONTROL_TIMEOUT), 1)
        region = (
            conf.get("s3_store_region") or conf.get("s3_store_region_name") or "us-east-1"
        ).strip()
        if not region or "/" in region:
            raise ConfigError("s3_store_region: not a region name")
        return cls(
            reactor,
            treqClient,
            secure=(scheme == "https"),
            host=netloc,
            accessKey=access,
            secretKey=secret,
            bucket=bucket,
            region=region,
            urlFormat=urlFormat,
            createBucket=_parseBool(conf, "s3_store_create_bucket_on_put", False),
            largeObjectSize=large * MiB,
            chunkSize=chunk * MiB,
            maxPartsInFlight=inFlight,
            requestTimeout=float(timeout),
        )

    # Addressing and requests

    def _location(self, key: str) -> S3Location:
        return S3Location(
            self.secure, self.host, self.accessKey, self.secretKey, self.bucket, key
        )

    def _virtual(self, loc: S3Location) -> bool:
        if self.urlFormat == "path":
            return False
        if self.urlFormat == "virtual":
            return True
        parts = urlsplit("//" + loc.host)
        return (
            parts.port is None
            and not _isAddressOrLocal(parts.hostname or "")
            and bool(_DNS_BUCKET.match(loc.bucket))
        )

    def _url(self, loc: S3Location, query: str = "", bucketOnly: bool = False) -> str:
        scheme = "https" if loc.secure else "http"
        path = "" if bucketOnly else quote(loc.key, safe="/~")
        if self._virtual(loc):
            url = "%s://%s.%s/%s" % (scheme, loc.bucket, loc.host, path)
        elif bucketOnly:
            url = "%s://%s/%s" % (scheme, loc.host, loc.bucket)
        else:
            url = "%s://%s/%s/%s" % (scheme, loc.host, loc.bucket, path)
        return url + ("?" + query if query else "")

    async def _send(
        self,
        method: str,
        loc: S3Location,
        what: str,
        query: str = "",
        bucketOnly: bool = False,
        headers: Optional[Mapping[str, str]] = None,
        data: Any = None,
        paced: bool = False,
    ) -> Any:
        """
        Send one signed request; fire with the (unread) response.  Anything
        that keeps a response from arriving becomes L{StoreUnavailable}.

        @param paced: the request carries image bytes, at the uploading
            client's pace, so only its answer is timed, with
            C{requestTimeout} from when the body is sent; any other
            request has C{requestTimeout} in all.
        """
        url = self._url(loc, query, bucketOnly)
        signed = _signedHeaders(method, url, loc, self.region, headers or {})
        timedOut = []

        def expire() -> None:
            timedOut.append(True)
            d.cancel()

        deadline = None
        if paced and IBodyProducer.providedBy(data):
            data = deadline = AnswerDeadline(data, self._reactor, self.requestTimeout, expire)
        try:
            d = self._client.request(
                method,
                forTreq(url),
                headers=signed,
                data=data,
                allow_redirects=False,
                unbuffered=True,
            )
        except Exception as e:
            if deadline is not None:
                deadline.cancel()
            raise StoreUnavailable("S3 %s failed: cannot reach the store (%s)"
                                   % (what, _describe(e)))
        timer = None
        if not paced:
            timer = self._reactor.callLater(self.requestTimeout, expire)
        try:
            return SilentAnswer(await d, self._reactor, self.requestTimeout, "S3 " + what)
        except Exception as e:
            if not isCancellation(e):
                raise StoreUnavailable("S3 %s failed: cannot reach the store (%s)"
                                       % (what, _describe(e)))
            if timedOut:
                raise StoreUnavailable("S3 %s timed out" % (what,))
            raise CancelledError() from e
        finally:
            if timer is not None and timer.active():
                timer.cancel()
            if deadline is not None:
                deadline.cancel()

    async def _document(self, response: Any, what: str) -> bytes:
        try:
            return await readDocument(response)
        except StoreUnavailable:
            raise
        except Exception as e:
            raise StoreUnavailable("S3 %s failed: reading the answer (%s)" % (what, _describe(e)))

    async def _error(self, response: Any, what: str) -> StoreError:
        """
        The exception for a response that is not a success.
        """
        try:
            document = await readDocument(response, 64 * 1024)
        except Exception:
            document = b""
        code = _findText(document, "Code") or ""
        message = "S3 %s failed: %d %s" % (what, response.code, code)
        if response.code >= 500:
            return StoreUnavailable(message.strip())
        if response.code == 404:
            return LocationNotFound(message.strip())
        return StoreError(message.strip())

    async def _expect(self, response: Any, what: str, *ok: int) -> None:
        if response.code not in ok:
            raise await self._error(response, what)

    # IStore

    @fromCoroutine
    async def add(self, image_id: str, body: IBodyProducer) -> StoredImage:
        loc = self._location(_checkedKey(image_id))
        try:
            await self._ensureBucket(loc)
            if body.length is not UNKNOWN_LENGTH and body.length <= self.largeObjectSize:
                size = await self._putOne(loc, body)
            else:
                size = await self._putMultipart(loc, body)
        except LocationNotFound as e:
            # A 404 while writing: the bucket is not there.
            raise StoreError("%s (is there a bucket %s?)" % (e, loc.bucket))
        self.log.info(
            "stored {size} bytes for image {image_id} at {location}",
            size=size,
            image_id=image_id,
            location=loc.forLog(),
        )
        return StoredImage(location=loc.uri(), size=size)

    async def _ensureBucket(self, loc: S3Location) -> None:
        if not self.createBucket or self._bucketReady:
            return
        response = await self._send("HEAD", loc, "bucket check", bucketOnly=True)
        await drain(response)
        if response.code == 404:
            data = b""
            if self.region != "us-east-1":
                data = (
                    '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                    "<LocationConstraint>%s</LocationConstraint>"
                    "</CreateBucketConfiguration>" % (escape(self.region),)
                ).encode("utf-8")
            response = await self._send(
                "PUT", loc, "bucket creation", bucketOnly=True, data=data or None
            )
            if response.code == 409:
                error = await self._error(response, "bucket creation")
                if "BucketAlreadyOwnedByYou" not in str(error):
                    raise error
            else:
                await self._expect(response, "bucket creation", 200)
                await drain(response)
            self.log.info("created bucket {bucket}", bucket=loc.bucket)
        elif response.code >= 500:
            raise StoreUnavailable("S3 bucket check failed: %d" % (response.code,))
        elif response.code != 200:
            raise StoreError("S3 bucket check failed: %d" % (response.code,))
        self._bucketReady = True

    async def _putOne(self, loc: S3Location, body: IBodyProducer) -> int:
        """
        One PUT with the caller's body streamed straight through.
        """
        observed = _ObservedBody(body)
        refused = False
        try:
            try:
                response = await self._send(
                    "PUT",
                    loc,
                    "upload",
                    headers={"Content-Type": "application/octet-stream"},
                    data=observed,
                    paced=True,
                )
            except StoreError:
                if observed.failure is not None:
                    observed.failure.raiseException()
                raise
            if response.code != 200:
                if observed.failure is not None:
                    observed.failure.raiseException()
                observed.stopProducing()
                refused = True
                raise await self._error(response, "upload")
            await drain(response)
            if not observed.finished and observed.written < body.length:
                observed.stopProducing()
                raise StoreError("S3 upload failed: answered before the whole image was sent")
            # A response can come before the body has said whether the bytes
            # it wrote are good (a checksum is known only at the end).
            await observed.whenFinished()
            if observed.written != body.length:
                raise UploadFailed(
                    400, "the body ended after %d of %d bytes" % (observed.written, body.length)
                )
        except BaseException:
            # Only a request that carried every byte and was not refused can
            # have left an object.
            if observed.started and observed.written == body.length and not refused:
                await self._deleteQuietly(loc)
            raise
        return observed.written

    async def _putMultipart(self, loc: S3Location, body: IBodyProducer) -> int:
        partSize = self.chunkSize
        if body.length is not UNKNOWN_LENGTH:
            partSize = max(partSize, math.ceil(body.length / MAX_PARTS))
        writer = _PartWriter(self, loc, partSize, self.maxPartsInFlight)
        writer.registerProducer(body, True)
        bodyEnded = []

        def ended(result: Any) -> Any:
            bodyEnded.append(True)
            return result

        try:
            await firstOf(body.startProducing(writer).addBoth(ended), writer.failed)
            writer.unregisterProducer()
            if body.length is not UNKNOWN_LENGTH and writer.total != body.length:
                raise UploadFailed(
                    400, "the body ended after %d of %d bytes" % (writer.total, body.length)
                )
            if writer.bufferedOnly():
                # Smaller than one part after all: one plain PUT.
                chunks, size = writer.takeBuffer()
                return await self._putBuffered(loc, chunks, size)
            writer.close()
            await writer.whenIdle()
            if writer.error is not None:
                writer.error.raiseException()
            await self._complete(loc, writer.uploadId, writer.etags)
        except BaseException as e:
            writer.unregisterProducer()
            if not bodyEnded:
                body.stopProducing()
            writer.stop()
            await writer.whenIdle()
            if writer.uploadId is not None:
                await self._abort(loc, writer.uploadId)
            elif writer.initiateUncertain:
                await self._abortUnknown(loc)
            if isinstance(e, _CompletionUncertain):
                # S3 may have assembled the object before its answer was
                # lost (or went silent): then there is no upload left to
                # abort, and the object must go.
                await self._deleteQuietly(loc)
            raise
        return writer.total

    async def _putBuffered(self, loc: S3Location, chunks: List[bytes], size: int) -> int:
        response = await self._send(
            "PUT",
            loc,
            "upload",
            headers={"Content-Type": "application/octet-stream"},
            data=_ChunksBody(chunks, size),
            paced=True,
        )
        await self._expect(response, "upload", 200)
        await drain(response)
        return size

    async def _initiate(self, loc: S3Location) -> str:
        response = await self._send(
            "POST",
            loc,
            "multipart start",
            query="uploads",
            headers={"Content-Type": "application/octet-stream"},
        )
        await self._expect(response, "multipart start", 200)
        uploadId = _findText(await self._document(response, "multipart start"), "UploadId")
        if not uploadId:
            # S3 said it began an upload: uncertain, so it is looked for and
            # aborted like one whose answer was lost.
            raise StoreUnavailable("S3 multipart start failed: no upload id in the answer")
        return uploadId

    async def _uploadPart(
        self, loc: S3Location, uploadId: str, number: int, chunks: List[bytes], size: int
    ) -> str:
        what = "part %d upload" % (number,)
        response = await self._send(
            "PUT",
            loc,
            what,
            query="partNumber=%d&uploadId=%s" % (number, quote(uploadId, safe="-_.~")),
            data=_ChunksBody(chunks, size),
            paced=True,
        )
        await self._expect(response, what, 200)
        await drain(response)
        etag = response.headers.getRawHeaders(b"etag", [b""])[0].decode("latin-1")
        if not etag:
            raise StoreError("S3 %s failed: no ETag in the answer" % (what,))
        return etag

    async def _complete(self, loc: S3Location, uploadId: str, etags: Dict[int, str]) -> None:
        what = "multipart completion"
        document = "<CompleteMultipartUpload>%s</CompleteMultipartUpload>" % (
            "".join(
                "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>"
                % (n, escape(etags[n]))
                for n in sorted(etags)
            ),
        )
        try:
            response = await self._send(
                "POST",
                loc,
                what,
                query="uploadId=%s" % (quote(uploadId, safe="-_.~"),),
                headers={"Content-Type": "application/xml"},
                data=document.encode("utf-8"),
            )
        except StoreUnavailable as e:
            raise _CompletionUncertain(str(e))
        await self._expect(response, what, 200)
        # S3 may answer 200 and then report the failure in the body.
        try:
            answer = await self._document(response, what)
        except StoreUnavailable as e:
            raise _CompletionUncertain(str(e))
        if _rootTag(answer) != "CompleteMultipartUploadResult":
            code = _findText(answer, "Code") or "unexpected answer"
            raise StoreError("S3 %s failed: %s" % (what, code))

    async def _abort(self, loc: S3Location, uploadId: str) -> None:
        """
        Best effort: give the parts back.  A failure is logged, not raised,
        so the caller sees why the upload failed rather than why the
        clean-up did; if the store could not be reached, the abort is
        retried in the background for a while (L{CleanupRetries}).
        """
        try:
            await self._abortOnce(loc, uploadId)
        except Exception as e:
            self.log.warn(
                "could not abort the multipart upload to {location}: {why}",
                location=loc.forLog(),
                why=str(e),
            )
            if isinstance(e, StoreUnavailable):
                self._cleanups().add(
                    "abort the multipart upload to %s" % (loc.forLog(),),
                    lambda: self._abortOnce(loc, uploadId),
                )

    async def _abortUnknown(self, loc: S3Location) -> None:
        """
        A multipart start failed in a way that leaves unsaid whether S3
        began the upload: abort whatever uploads are open for the key (the
        image id, which no other upload uses), retrying in the background
        while the store cannot be reached.
        """
        try:
            await self._abortAllFor(loc)
        except Exception as e:
            self.log.warn(
                "could not look for a multipart upload left at {location}: {why}",
                location=loc.forLog(),
                why=str(e),
            )
            if isinstance(e, StoreUnavailable):
                self._cleanups().add(
                    "abort any multipart upload left at %s" % (loc.forLog(),),
                    lambda: self._abortAllFor(loc),
                )

    async def _abortAllFor(self, loc: S3Location) -> None:
        what = "multipart listing"
        response = await self._send(
            "GET",
            loc,
            what,
            query="prefix=%s&uploads=" % (quote(loc.key, safe="-_.~"),),
            bucketOnly=True,
        )
        await self._expect(response, what, 200)
        document = await self._document(response, what)
        try:
            root = ElementTree.fromstring(document)
        except ElementTree.ParseError:
            raise StoreError("S3 %s failed: the answer is not XML" % (what,))
        for upload in root.iter():
            if upload.tag.rpartition("}")[2] != "Upload":
                continue
            key = uploadId = None
            for child in upload:
                name = child.tag.rpartition("}")[2]
                if name == "Key":
                    key = (child.text or "").strip()
                elif name == "UploadId":
                    uploadId = (child.text or "").strip()
            if key == loc.key and uploadId:
                await self._abortOnce(loc, uploadId)

    async def _abortOnce(self, loc: S3Location, uploadId: str) -> None:
        response = await self._send(
            "DELETE",
            loc,
            "multipart abort",
            query="uploadId=%s" % (quote(uploadId, safe="-_.~"),),
        )
        await self._expect(response, "multipart abort", 204, 200, 404)
        await drain(response)

    async def _deleteQuietly(self, loc: S3Location) -> None:
        try:
            await self._delete(loc)
        except Exception as e:
            self.log.warn(
                "could not remove the partial upload at {location}: {why}",
                location=loc.forLog(),
                why=str(e),
            )
            if isinstance(e, StoreUnavailable):
                self._cleanups().add(
                    "remove the partial upload at %s" % (loc.forLog(),),
                    lambda: self._delete(loc),
                )

    @fromCoroutine
    async def removeAbandoned(self, image_id: str, retry: bool = True) -> None:
        """
        A dead upload's open multipart upload, or the object a single PUT
        finished before the registry heard of it (the key is the image id).
        """
        loc = self._location(_checkedKey(image_id))
        if not retry:
            await self._abortAllFor(loc)
            await self._delete(loc)
            return
        await self._abortUnknown(loc)
        await self._deleteQuietly(loc)

    @fromCoroutine
    async def get(self, location: str) -> IBodyProducer:
        loc = parseLocation(location)
        response = await self._send("GET", loc, "download")
        await self._expect(response, "download", 200)
        length = response.length
        if length is UNKNOWN_LENGTH:
            await drain(response, 0)
            raise StoreError("S3 download failed: no Content-Length in the answer")
        reader = _S3Reader(response, length)
        headers = response.headers
        # An encrypted object's ETag is no MD5 under KMS's or a client's
        # key; under S3's own keys AWS keeps the MD5, but other S3s need
        # not.  So only an object without encryption is checked.
        if not (headers.hasHeader(b"x-amz-server-side-encryption")
                or headers.hasHeader(b"x-amz-server-side-encryption-customer-algorithm")):
            reader.md5 = plainMD5(
                headers.getRawHeaders(b"etag", [b""])[0].decode("latin-1"))
        return reader

    @fromCoroutine
    async def get_size(self, location: str) -> int:
        loc = parseLocation(location)
        response = await self._send("HEAD", loc, "size lookup")
        await self._expect(response, "size lookup", 200)
        await drain(response)
        raw = response.headers.getRawHeaders(b"content-length", [b""])[0]
        try:
            return int(raw)
        except ValueError:
            raise StoreError("S3 size lookup failed: no Content-Length in the answer")

    @fromCoroutine
    async def delete(self, location: str) -> None:
        await self._delete(parseLocation(location))

    async def _delete(self, loc: S3Location) -> None:
        response = await self._send("DELETE", loc, "delete")
        await self._expect(response, "delete", 204, 200, 404)
        await drain(response)
