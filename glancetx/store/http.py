"""
The http store: reads image bytes from a web server, never writes them.

Glance's http store served locations such as
C{https://user:pass@example.com/images/cirros.img}: the image is whatever
the origin answers to a GET.  This driver streams that answer to the
consumer with backpressure and refuses to pass on an image that is shorter
(or longer) than the origin promised.

The treq client is injected.  In production it is
L{glancetx.netguard.guardedHTTPClient}, whose agent refuses addresses a user
may not reach; that check happens at connect time for every hop, so the
redirects followed here (at most L{MAX_REDIRECTS}) are guarded too.

Credentials in a location are sent as HTTP Basic auth to the location's own
origin only (never to a host it redirects to), and never appear in a log
line or an error message.
"""

from typing import Dict, List, Optional, Tuple
from urllib.parse import unquote

import attr
from hyperlink import EncodedURL
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import GzipDecoder, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from glancetx.asyncutil import fromCoroutine, isCancellation
from glancetx.headercap import MAX_HEADER_BYTES, headersTooLarge
from glancetx.store.interface import (
    BadLocation,
    IStore,
    LocationNotFound,
    StoreError,
    StoreUnavailable,
    redact,
)
from glancetx.store.wireurl import WireURL, asURI

#: Redirects followed for one request (Glance's http store followed 5).
MAX_REDIRECTS = 5
#: Seconds without a byte (or without response headers) before giving up.
DEFAULT_TIMEOUT = 60.0
#: Largest unwanted body (an error page, a redirect) read to the end so the
#: connection can be reused; anything larger, or of unknown size, is cut.
_DRAIN_LIMIT = 64 * 1024
_REDIRECTS = frozenset([301, 302, 303, 307, 308])
_GONE = frozenset([404, 410])


class _Refused(StoreUnavailable):
    """
    The origin answered, with a status that is neither success, redirect
    nor gone: it is there, and a different request may yet please it.
    """


@attr.s(frozen=True, slots=True, auto_attribs=True)
class _Target:
    """
    A location split into what goes on the wire and what stays private.
    """

    url: EncodedURL
    auth: Optional[Tuple[str, str]]

    @property
    def origin(self) -> Tuple[str, str, Optional[int]]:
        return (self.url.scheme, self.url.host.lower(), self.url.port)


def _parseLocation(location: str) -> _Target:
    try:
        url = EncodedURL.from_text(location)
    except ValueError:
        raise BadLocation("not an http location")
    return _Target(_checked(url), _credentials(url))


#: Why L{_checked} refuses a URL whose host IDNA cannot encode.
_UNENCODABLE_HOST = "its host name cannot be encoded"


def _checked(url: EncodedURL) -> EncodedURL:
    """
    C{url} as it goes on the wire: an http(s) URL, its host name through
    IDNA, without the credentials (sent as a header) or the fragment.
    """
    if url.scheme.lower() not in ("http", "https") or not url.host:
        raise BadLocation("not an http location")
    try:
        # A host name IDNA cannot encode (a label over 63 characters, an
        # empty label, a NUL) fails here.
        wire = asURI(url)
    except (ValueError, UnicodeError):
        raise BadLocation("not an http location: " + _UNENCODABLE_HOST)
    return wire.replace(userinfo="", fragment="")


def _credentials(url: EncodedURL) -> Optional[Tuple[str, str]]:
    if not url.userinfo:
        return None
    user, _, password = url.userinfo.partition(":")
    return (unquote(user), unquote(password))


def _contentLength(response) -> Optional[int]:
    """
    The one Content-Length the headers agree on, or None.
    """
    values = response.headers.getRawHeaders(b"content-length") or []
    sizes = set()
    for value in values:
        for part in value.split(b","):
            part = part.strip()
            if not part.isdigit():
                return None
            sizes.add(int(part))
    if len(sizes) != 1:
        return None
    return sizes.pop()


def _contentRangeTotal(response) -> Optional[int]:
    """
    N from C{Content-Range: bytes 0-0/N}, or None.
    """
    values = response.headers.getRawHeaders(b"content-range") or []
    if len(values) != 1:
        return None
    unit, _, rest = values[0].strip().partition(b" ")
    total = rest.rpartition(b"/")[2].strip()
    if unit.lower() != b"bytes" or not total.isdigit():
        return None
    return int(total)


def _encoded(response) -> bool:
    """
    Did the origin send the body with a content coding?  treq's client asks
    for gzip and decodes it, so the bytes would no longer be the stored
    image's, nor their number the promised one.
    """
    if isinstance(getattr(response, "original", None), GzipDecoder):
        return True
    codings = b",".join(response.headers.getRawHeaders(b"content-encoding") or [])
    return any(c.strip().lower() not in (b"", b"identity") for c in codings.split(b","))


class _Discard(Protocol):
    """
    Throws an unwanted body away: reads a small one to the end, cuts a large
    or endless one off.
    """

    def __init__(self, length, clock, timeout: float) -> None:
        self._length = length
        self._clock = clock
        self._timeout = timeout
        self._timer = None

    def makeConnection(self, transport) -> None:
        self.transport = transport
        if self._length is UNKNOWN_LENGTH or self._length > _DRAIN_LIMIT:
            transport.stopProducing()
        else:
            self._timer = self._clock.callLater(self._timeout, transport.stopProducing)

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class _Receiver(Protocol):
    """
    The body protocol for one download; hands everything to its producer.
    """

    def __init__(self, body: "_ResponseBody") -> None:
        self._body = body

    def makeConnection(self, transport) -> None:
        self.transport = transport
        self._body._connected(transport)

    def dataReceived(self, data: bytes) -> None:
        self._body._data(data)

    def connectionLost(self, reason) -> None:
        self._body._ended(reason)


@implementer(IBodyProducer, IPushProducer)
class _ResponseBody:
    """
    A response body as a push producer of exactly C{length} bytes.  Pausing
    it pauses the socket; an origin that stops sending for C{timeout}
    seconds, or sends fewer or more bytes than C{length}, fails the
    C{startProducing} Deferred with a L{StoreError}.
    """

    log = Logger()

    def __init__(self, response, length: int, clock, timeout: float, what: str) -> None:
        self._response = response
        self.length = length
        self._clock = clock
        self._timeout = timeout
        self._what = what
        self._consumer = None
        self._transport = None
        self._done: Optional[Deferred] = None
        self._received = 0
        self._paused = False
        self._finished = False
        self._started = False
        self._timer = None

    def startProducing(self, consumer) -> Deferred:
        if self._aborted is not None:
            return fail(self._aborted)
        self._consumer = consumer
        self._started = True
        done = self._done = Deferred()
        # Until now twisted.web has kept the socket paused; deliverBody hands
        # over what it buffered and resumes it.
        self._response.deliverBody(_Receiver(self))
        if self._paused and self._transport is not None:
            self._transport.pauseProducing()
        self._arm()
        return done

    # What the receiver reports.

    def _connected(self, transport) -> None:
        self._transport = transport

    def _data(self, data: bytes) -> None:
        if self._finished:
            return
        self._received += len(data)
        if self._received > self.length:
            self._fail(StoreError(
                "%s: the origin sent more than the %d bytes it promised"
                % (self._what, self.length)
            ))
            return
        self._consumer.write(data)
        self._arm()

    def _ended(self, reason: Failure) -> None:
        if self._finished:
            return
        if self._received == self.length and reason.check(ResponseDone, PotentialDataLoss):
            self._finish(None)
            return
        # Debug: the line names the location.  The failure it raises
        # reaches the info log as the image's, without it.
        self.log.debug(
            "{what}: body ended after {received} of {length} bytes: {reason}",
            what=self._what,
            received=self._received,
            length=self.length,
            reason=reason.getErrorMessage(),
        )
        self._finish(Failure(StoreError(
            "%s: the origin sent %d of %d bytes" % (self._what, self._received, self.length)
        )))

    # The idle timer.

    def _arm(self) -> None:
        if self._paused or self._finished:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._timeout)
        else:
            self._timer = self._clock.callLater(self._timeout, self._idle)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _idle(self) -> None:
        self._timer = None
        self._fail(StoreUnavailable(
            "%s: the origin sent nothing for %d seconds" % (self._what, self._timeout)
        ))

    # Ending.

    def _fail(self, error: StoreError) -> None:
        if self._transport is not None:
            self._transport.stopProducing()
        self._finish(Failure(error))

    def _finish(self, result: Optional[Failure]) -> None:
        self._finished = True
        self._disarm()
        done, self._done = self._done, None
        if done is None:
            return
        if result is None:
            done.callback(None)
        else:
            done.errback(result)

    _aborted: Optional[Failure] = None

    def abort(self, why: str = "the server is shutting down") -> None:
        """
        End this download from the server's side: the origin's connection
        is closed and the body fails (now, or when it is started).
        """
        if self._finished:
            return
        error = StoreUnavailable("%s: %s" % (self._what, why))
        if not self._started:
            self.stopProducing()
            self._aborted = Failure(error)
            return
        self._fail(error)

    # IPushProducer, for the consumer.

    def pauseProducing(self) -> None:
        self._paused = True
        self._disarm()
        if self._transport is not None:
            self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self._finished:
            return
        if self._transport is not None:
            self._transport.resumeProducing()
        self._arm()

    def stopProducing(self) -> None:
        """
        The consumer has gone: close the connection.  The startProducing
        Deferred does not fire (the IBodyProducer rule).
        """
        if self._finished:
            return
        self._done = None
        self._finished = True
        self._disarm()
        if not self._started:
            self._started = True
            self._response.deliverBody(_Discard(UNKNOWN_LENGTH, self._clock, self._timeout))
        elif self._transport is not None:
            self._transport.stopProducing()


@implementer(IStore)
@attr.s(eq=False)
class HTTPStore:
    """
    Read-only access to images on web servers.

    @ivar _client: the treq client (the guarded one in production).
    @ivar _clock: the reactor, or a L{Clock} in tests, for timeouts.
    @ivar _timeout: seconds to wait for response headers, and for each
        further byte of a body.
    """

    log = Logger()
    name = "http"
    schemes = ("http", "https")
    writable = False
    sweptAfterFailure = False

    _client: HTTPClient = attr.ib()
    _clock = attr.ib()
    _timeout: float = attr.ib(default=DEFAULT_TIMEOUT)

    def add(self, image_id: str, body) -> Deferred:
        return fail(StoreError("the http store is read-only"))

    def delete(self, location: str) -> Deferred:
        # Glance's http store never deleted the origin's data; neither do we.
        return succeed(None)

    def removeAbandoned(self, image_id: str, retry: bool = True) -> Deferred:
        # Nothing is ever uploaded here.
        return succeed(None)

    @fromCoroutine
    async def get_size(self, location: str) -> int:
        what = redact(location)
        try:
            head = await self._fetch("HEAD", location)
        except LocationNotFound:
            raise
        except _Refused:
            # Some origins refuse HEAD (an S3 URL signed for GET, say): ask
            # for one byte instead.  One that did not answer at all is not
            # asked again, or a caller would wait two time-outs.
            head = None
        if head is not None:
            self._discard(head)
            if not _encoded(head):
                size = _contentLength(head)
                if size is not None:
                    return size
        response = await self._fetch("GET", location, {b"range": [b"bytes=0-0"]})
        self._discard(response)
        size = None
        if not _encoded(response):
            if response.code == 206:
                size = _contentRangeTotal(response)
            elif response.code == 200:
                # The origin ignored the range: its whole answer's length,
                # which twisted's client takes out of the headers.
                size = None if response.length is UNKNOWN_LENGTH else response.length
        if size is None:
            raise StoreError("%s: the origin does not say how large the image is" % (what,))
        return size

    @fromCoroutine
    async def get(self, location: str) -> IBodyProducer:
        what = redact(location)
        response = await self._fetch("GET", location)
        if _encoded(response):
            self._discard(response)
            raise StoreError(
                "%s: the origin sent the image with a content coding" % (what,)
            )
        length = response.length
        if length is UNKNOWN_LENGTH:
            # Chunked or close-delimited: ask the size separately; twisted.web
            # keeps this response's socket paused meanwhile.
            try:
                length = await self.get_size(location)
            except BaseException:
                self._discard(response)
                raise
        return _ResponseBody(response, length, self._clock, self._timeout, what)

    def _discard(self, response) -> None:
        response.deliverBody(_Discard(response.length, self._clock, self._timeout))

    async def _fetch(self, method: str, location: str,
                     headers: Optional[Dict[bytes, List[bytes]]] = None):
        """
        One request, following redirects; the 2xx response, unread.

        @raise LocationNotFound: for 404 and 410.
        @raise StoreUnavailable: for other answers, unreachable origins,
            timeouts and redirect loops.
        @raise BadLocation: for a refused address (from the guard) or a
            redirect to a scheme this store does not serve.
        """
        first = _parseLocation(location)
        target = first
        what = redact(location)
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._request(method, target, first, headers, what)
            code = response.code
            if code in _REDIRECTS:
                locations = response.headers.getRawHeaders(b"location")
                self._discard(response)
                if not locations:
                    raise StoreUnavailable("%s: a redirect without a Location" % (what,))
                target = self._redirectTarget(target, locations[0], what)
                what = redact(target.url.to_text())
                continue
            if code in _GONE:
                self._discard(response)
                raise LocationNotFound("%s: the origin answered %d" % (what, code))
            if not 200 <= code < 300:
                self._discard(response)
                raise _Refused("%s: the origin answered %d" % (what, code))
            return response
        raise StoreUnavailable(
            "%s: more than %d redirects" % (redact(location), MAX_REDIRECTS)
        )

    def _redirectTarget(self, current: _Target, value: bytes, what: str) -> _Target:
        try:
            url = current.url.click(value.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise StoreUnavailable("%s: a redirect to an unreadable Location" % (what,))
        except NotImplementedError:
            # hyperlink resolves no opaque URI (mailto:, data:, javascript:)
            raise BadLocation("%s: redirected to a scheme the http store does not serve" % (what,))
        try:
            url = _checked(url)
        except BadLocation as e:
            if _UNENCODABLE_HOST in str(e):
                raise BadLocation("%s: redirected to a host whose name cannot be encoded"
                                  % (what,))
            raise BadLocation("%s: redirected to a scheme the http store does not serve" % (what,))
        return _Target(url, None)

    async def _request(self, method: str, target: _Target, first: _Target,
                       headers, what: str):
        # Credentials go only to the origin they were given for.
        auth = first.auth if target.origin == first.origin else None
        d = self._client.request(
            method,
            WireURL.from_text(target.url.to_text()),
            headers=headers,
            auth=auth,
            allow_redirects=False,
            unbuffered=True,
        )
        timedOut = []

        def expire() -> None:
            timedOut.append(True)
            d.cancel()

        timer = self._clock.callLater(self._timeout, expire)
        try:
            return await d
        except BadLocation:
            raise
        except Exception as e:
            if headersTooLarge(e):
                raise StoreError("%s: the origin sent more than %d KiB of response headers"
                                 % (what, MAX_HEADER_BYTES // 1024))
            if isCancellation(e):
                if timedOut:
                    raise StoreUnavailable(
                        "%s: no answer within %d seconds" % (what, self._timeout)
                    )
                raise CancelledError() from e
            # Debug: the line names the location, and a DNS error the host.
            self.log.debug(
                "{method} {what} failed: {error}",
                method=method,
                what=what,
                error=repr(e),
            )
            raise StoreUnavailable("%s: the origin could not be reached" % (what,))
        finally:
            if timer.active():
                timer.cancel()
