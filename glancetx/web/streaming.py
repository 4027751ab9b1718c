"""
Request bodies that stream: the data path from the socket to a store.

twisted.web buffers a whole request body before any resource runs.  Image
uploads are gigabytes, so this module's L{StreamingRequest} dispatches an
upload as soon as its headers are in, and hands the body to the handler as
an L{IBodyProducer} (L{RequestBody}) that pushes each piece to the store's
consumer as it arrives:

    HTTPChannel.dataReceived
      → StreamingRequest.handleContentChunk(data)
        → RequestBody.dataReceived(data)
          → VerifyingBody.write(data)         (size, MD5, cap, as they pass)
            → the store's consumer.write(data)  (e.g. filesystem _FileWriter)

Backpressure runs the other way: a consumer that cannot keep up calls
C{pauseProducing}; the body stops the socket (C{transport.pauseProducing})
and keeps at most C{HIGH_WATER} bytes that were already in flight.  The
channel resumes its transport by itself whenever its send buffer drains, so
the body re-pauses it whenever more than C{HIGH_WATER} is held.
"""

import hashlib
import re
from functools import partial
from io import BytesIO
from urllib.parse import unquote_to_bytes
from typing import Callable, List, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import parse_qs
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from glancetx.budget import BudgetShare, fixedShare
from glancetx.drain import Drain
from glancetx.store.interface import UploadFailed
from glancetx.web.channel import SEND_NOW_MAX, tcpTransport

#: Bytes a request body may hold back while its consumer is paused or not yet
#: attached, before the socket is paused; and the level at which it resumes.
HIGH_WATER = 512 * 1024
LOW_WATER = 128 * 1024
#: Socket read size while an upload streams in.
UPLOAD_READ_SIZE = 256 * 1024
#: Bodies of requests that are not uploads (member lists) are read whole,
#: but no more than this.
SMALL_BODY_MAX = 1024 * 1024
#: And no more than this of all such bodies still arriving, in the whole
#: process: a client may take a minute over each, and two hundred of them
#: held 200 MiB (a request beyond it is the client's to retry, 503).
SMALL_BODIES_MAX = 32 * 1024 * 1024
#: After an early answer (an upload refused part way), how much more of the
#: body is read and thrown away so the client can see the answer, and for
#: how long, before the connection is closed.
DRAIN_MAX = 64 * 1024 * 1024
DRAIN_SECONDS = 10.0


def pendingRequestLine(channel):
    """
    The method and path of the request whose headers just arrived.

    At C{gotLength} time twisted.web has not yet copied them onto the
    request; they sit on the channel under private names.  This is the only
    place that reads them (tested against the installed Twisted; setup.py
    bounds Twisted's version).
    """
    return channel._command, channel._path, channel._version


@implementer(IBodyProducer, IPushProducer)
class RequestBody:
    """
    The body of an upload request, as a push producer.

    Pieces arrive through L{dataReceived} from the request; once a consumer
    is attached (L{startProducing}) each goes straight to it unless the
    consumer has paused us, in which case pieces wait here and the socket is
    paused.
    """

    def __init__(self, transport, length, idleTimer=None) -> None:
        self._transport = transport
        # The channel's idle timeout (a TimeoutMixin), restarted when the
        # socket is resumed: time spent paused was the store's, not idleness.
        self._idleTimer = idleTimer
        self.length = UNKNOWN_LENGTH if length is None else length
        self._held: List[bytes] = []
        self._heldSize = 0
        self._consumer = None
        self._consumerPaused = False
        self._socketPaused = False
        self._ended = False
        self._failure: Optional[Failure] = None
        self._stopped = False
        self._done: Optional[Deferred] = None
        self.received = 0

    # -- from the request -------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._stopped:
            return
        self.received += len(data)
        if self._consumer is not None and not self._consumerPaused and not self._held:
            self._consumer.write(data)
            return
        self._held.append(data)
        self._heldSize += len(data)
        if self._heldSize > HIGH_WATER:
            self._pauseSocket()

    def bodyComplete(self) -> None:
        self._ended = True
        self._maybeFinish()

    @property
    def ended(self) -> bool:
        """
        Whether the whole body has arrived.
        """
        return self._ended

    @property
    def holdsSocket(self) -> bool:
        """
        Whether the socket is paused on this body's account (the store
        pushed back), so the client cannot send: the connection is not idle.
        """
        return self._socketPaused and not self._stopped

    def connectionLost(self) -> None:
        if not self._ended:
            self._fail(UploadFailed(400, self._abortedBecause
                                    or "the client went away before the upload finished"))

    _abortedBecause: Optional[str] = None

    def refused(self, why: str) -> None:
        """
        The channel refused the rest of this body (its framing is broken)
        and is closing the connection: the upload fails for C{why}, not
        as if the client had gone away.
        """
        if not self._ended and self._abortedBecause is None:
            self._abortedBecause = why

    def abort(self, why: str = "the server is shutting down") -> None:
        """
        End this upload from the server's side: the client's connection is
        dropped, and the body fails as when a client goes away.
        """
        if self._ended or self._stopped:
            return
        self._abortedBecause = why
        abort = getattr(self._transport, "abortConnection", None)
        (abort or self._transport.loseConnection)()

    # -- IBodyProducer / IPushProducer -------------------------------------

    #: Called when a consumer starts reading: the request uses it to send
    #: "100 Continue" only once the upload has been accepted.
    onStart: Optional[Callable[[], None]] = None

    def startProducing(self, consumer) -> Deferred:
        self._consumer = consumer
        done = self._done = Deferred()
        if self.onStart is not None:
            self.onStart()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self._done = None
            done.errback(failure)
            return done
        self._flush()
        return done

    def pauseProducing(self) -> None:
        self._consumerPaused = True
        self._pauseSocket()

    def resumeProducing(self) -> None:
        self._consumerPaused = False
        self._flush()

    def stopProducing(self) -> None:
        self._stopped = True
        self._held = []
        self._heldSize = 0
        self._done = None
        self._resumeSocket()

    # -- internals --------------------------------------------------------

    def _flush(self) -> None:
        while self._held and not self._consumerPaused and not self._stopped:
            data = self._held.pop(0)
            self._heldSize -= len(data)
            self._consumer.write(data)
        if self._heldSize <= LOW_WATER and not self._consumerPaused:
            self._resumeSocket()
        self._maybeFinish()

    def _maybeFinish(self) -> None:
        if self._ended and not self._held and self._done is not None:
            done, self._done = self._done, None
            done.callback(None)

    def _fail(self, error: Exception) -> None:
        self._held = []
        self._heldSize = 0
        if self._done is not None:
            done, self._done = self._done, None
            done.errback(Failure(error))
        elif self._consumer is None:
            self._failure = Failure(error)

    def _pauseSocket(self) -> None:
        # Always call through: the channel may have resumed the transport
        # behind our back since we last paused it.
        self._socketPaused = True
        self._transport.pauseProducing()

    def _resumeSocket(self) -> None:
        if self._socketPaused:
            self._socketPaused = False
            self._transport.resumeProducing()
            if self._idleTimer is not None:
                self._idleTimer.resetTimeout()


class InlineMD5:
    """
    MD5 on the calling thread: for small bodies and tests.
    """

    backlog = 0

    def __init__(self) -> None:
        self._md5 = hashlib.md5()

    def update(self, data: bytes) -> None:
        self._md5.update(data)

    def hexdigest(self) -> Deferred:
        return succeed(self._md5.hexdigest())


class ThreadedMD5:
    """
    MD5 computed on a CPU thread pool while the reactor goes on reading the
    socket (hashlib releases the GIL on large buffers, and there are two
    cores).  Chunks are hashed in order by one L{Drain} job at a time per
    body; the reactor only hands over references, no copies.
    """

    def __init__(self, reactor, pool, share: Optional[BudgetShare] = None) -> None:
        self._md5 = hashlib.md5()
        self._drain = Drain(reactor, pool, self._hash, share)

    def _hash(self, chunks: List[bytes]) -> None:
        update = self._md5.update
        for c in chunks:
            update(c)

    @property
    def backlog(self) -> int:
        return self._drain.backlog

    @property
    def onDrained(self) -> Optional[Callable[[], None]]:
        return self._drain.onDrained

    @onDrained.setter
    def onDrained(self, f: Optional[Callable[[], None]]) -> None:
        self._drain.onDrained = f

    def update(self, data: bytes) -> None:
        self._drain.put(data)

    def hexdigest(self) -> Deferred:
        return self._drain.flush().addCallback(lambda _: self._md5.hexdigest())


@implementer(IBodyProducer, IPushProducer)
class VerifyingBody:
    """
    Sits between a body producer and a store's consumer and holds the bytes
    to the image's rules while they pass: the MD5 and size are computed on
    the fly, a body passing the size cap or the declared size fails at once
    (413 / 400), and at the end a wrong size or checksum fails the body, so
    the store never commits bytes an image must not have.
    """

    def __init__(self, source, cap: int, expectedSize: Optional[int] = None,
                 expectedChecksum: Optional[str] = None, hasher=None,
                 share: Optional[BudgetShare] = None) -> None:
        self._source = source
        #: How far a threaded hasher may fall behind before the body is paused.
        self._share = share if share is not None else fixedShare()
        self._cap = cap
        self._expectedSize = expectedSize
        self._expectedChecksum = expectedChecksum
        self.length = source.length
        self.size = 0
        self._md5 = hasher if hasher is not None else InlineMD5()
        self._md5.onDrained = self._hasherDrained
        self._consumerPaused = False
        self._hashPaused = False
        self._consumer = None
        self._done: Optional[Deferred] = None
        self.checksum: Optional[str] = None

    def startProducing(self, consumer) -> Deferred:
        self._consumer = consumer
        done = self._done = Deferred()
        self._source.startProducing(self).addCallbacks(self._sourceDone, self._sourceFailed)
        return done

    def write(self, data: bytes) -> None:
        if self._done is None:
            return
        self.size += len(data)
        if self.size > self._cap:
            self._abort(UploadFailed(413, "Image exceeds the storage quota: the size cap is %d bytes"
                                     % (self._cap,)))
            return
        if self._expectedSize is not None and self.size > self._expectedSize:
            self._abort(UploadFailed(400, "Supplied x-image-meta-size (%d) does not match the"
                                     " size of the uploaded data" % (self._expectedSize,)))
            return
        self._md5.update(data)
        self._consumer.write(data)
        if self._md5.backlog > self._share.high() and not self._hashPaused:
            self._hashPaused = True
            self._source.pauseProducing()

    def _hasherDrained(self) -> None:
        if self._done is None:
            return
        if self._hashPaused and self._md5.backlog <= self._share.low():
            self._hashPaused = False
            if not self._consumerPaused:
                self._source.resumeProducing()

    def _abort(self, error: UploadFailed) -> None:
        done, self._done = self._done, None
        self._source.stopProducing()
        done.errback(Failure(error))

    def _sourceDone(self, _) -> None:
        if self._done is None:
            return
        self._md5.hexdigest().addCallbacks(self._hashed, self._sourceFailed)

    def _hashed(self, checksum: str) -> None:
        done, self._done = self._done, None
        if done is None:
            return
        self.checksum = checksum
        if self._expectedSize is not None and self.size != self._expectedSize:
            done.errback(Failure(UploadFailed(
                400, "Supplied x-image-meta-size (%d) does not match the size of the"
                " uploaded data (%d)" % (self._expectedSize, self.size))))
        elif self._expectedChecksum is not None and self.checksum != self._expectedChecksum:
            done.errback(Failure(UploadFailed(
                400, "Supplied x-image-meta-checksum does not match the checksum of"
                " the uploaded data")))
        else:
            done.callback(None)

    def _sourceFailed(self, failure: Failure) -> None:
        done, self._done = self._done, None
        if done is not None:
            done.errback(failure)

    # IPushProducer: the store's consumer talks to us, we talk to the source.

    def pauseProducing(self) -> None:
        self._consumerPaused = True
        self._source.pauseProducing()

    def resumeProducing(self) -> None:
        self._consumerPaused = False
        if not self._hashPaused:
            self._source.resumeProducing()

    def stopProducing(self) -> None:
        self._done = None
        self._source.stopProducing()


class StreamingRequest(server.Request):
    """
    A request whose upload body streams to the handler instead of being
    buffered.

    The site's C{isUpload(method, path)} says which requests are uploads.
    Those are dispatched from L{gotLength} with C{self.body} set to a
    L{RequestBody}; everything else runs as usual after its (small, capped)
    body is in, readable as C{self.smallBody}.  C{self.content} is an empty
    stand-in: nothing reads a body through it.
    """

    body: Optional[RequestBody] = None
    smallBody = b""
    smallBodyTooLarge = False
    #: The process's small bodies are at L{SMALL_BODIES_MAX}: this one was
    #: not kept.
    smallBodyRefused = False
    #: Bytes of small bodies, of every request, still arriving.
    smallBodiesHeld = 0
    _early = False
    _finishPending = False
    _drained = 0
    _smallSize = 0

    def gotLength(self, length) -> None:
        self.content = BytesIO()
        # One buffer, not a list of reads: a body sent a byte per segment
        # cost 52 bytes of memory per byte as a list of bytes objects.
        self._small = bytearray()
        if length == 0:
            return
        command, path, version = pendingRequestLine(self.channel)
        isUpload: Callable = getattr(self.channel.site, "isUpload", None)
        if isUpload is None or not isUpload(command, path.split(b"?", 1)[0]):
            return
        self.body = RequestBody(self.transport, length, self.channel)
        # Fewer, larger reads while an image streams in: a quarter of the
        # Python work per gigabyte of Twisted's default 64 KiB (measured:
        # 1 GiB uploads ~10-30% faster, no change in peak memory).
        # Under TLS, the TCP transport beneath reads (setting the attribute
        # on the TLS protocol changed nothing).
        tcp = tcpTransport(self.transport) or self.transport
        if getattr(tcp, "bufferSize", UPLOAD_READ_SIZE) < UPLOAD_READ_SIZE:
            tcp.bufferSize = UPLOAD_READ_SIZE
        # We answer "Expect: 100-continue" ourselves, once the upload is
        # accepted, so a refused upload is never sent at all.
        expect = self.requestHeaders.getRawHeaders(b"expect")
        if expect:
            self.requestHeaders.removeHeader(b"expect")
            self.expectsContinue = (expect[0].lower() == b"100-continue"
                                    and version == b"HTTP/1.1")
        self._early = True
        self._reactor().callLater(0, self._dispatch, command, path, version)

    def _reactor(self):
        # The site carries the reactor it was built with (no global import).
        return self.channel.site.reactor

    def _dispatch(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.channel is None or self._disconnected:
            return
        self.method, self.uri, self.clientproto = command, path, version
        self.args = {}
        self.path = path.split(b"?", 1)[0]
        if b"?" in path:
            # twisted.web's parser, as for every other request: bytes in,
            # bytes out, so no escaped byte can make it raise.
            self.args = parse_qs(path.split(b"?", 1)[1], 1)
        self.process()

    expectsContinue = False

    def continueUpload(self) -> None:
        """
        Tell a client that waits for it to send the body.
        """
        if self.expectsContinue and not self.startedWriting:
            self.expectsContinue = False
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def process(self) -> None:
        # Refuse a path that is not UTF-8 here, plainly, before the router
        # logs it as an error; and one with a NUL in it, which no id or
        # member can hold (PostgreSQL refuses the character outright).
        path = unquote_to_bytes(self.path)
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            return self._refusePath(_BAD_PATH)
        if b"\0" in path:
            return self._refusePath(_NUL_PATH)
        hosts = self.requestHeaders.getRawHeaders(b"host") or ()
        if len(hosts) > 1 or (not hosts and self.clientproto == b"HTTP/1.1"):
            # RFC 9112 3.2; with two, the links would name whichever came last.
            return self._refusePath(_ONE_HOST)
        if not _HOST.match(hosts[0] if hosts else b""):
            return self._refusePath(_BAD_HOST)
        if not self.method.isupper():
            # Methods are case-sensitive (RFC 9110 9.1), and "post" is none
            # of ours: the router, which upper-cases them, would run it as
            # a POST, without the body this request read as no upload.  A
            # client's mistake, so a 400 (not RFC 9110's 501: no 5xx here).
            return self._refusePath(_UNKNOWN_METHOD)
        super().process()

    def _refusePath(self, message: bytes, code: int = 400) -> None:
        self.setResponseCode(code)
        self.setHeader(b"content-type", b"text/plain; charset=UTF-8")
        self.setHeader(b"content-length", b"%d" % (len(message),))
        self.write(message)
        self.finish()

    def handleContentChunk(self, data: bytes) -> None:
        if self.body is not None:
            if self._finishPending:
                self._drained += len(data)
                if self._drained > DRAIN_MAX:
                    self._finishNow()
                return
            self.body.dataReceived(data)
            return
        if self.smallBodyTooLarge or self.smallBodyRefused:
            return
        if StreamingRequest.smallBodiesHeld + len(data) > SMALL_BODIES_MAX:
            self.smallBodyRefused = True
            self._dropSmallBody()
            return
        self._small += data
        self._smallSize += len(data)
        StreamingRequest.smallBodiesHeld += len(data)
        if self._smallSize > SMALL_BODY_MAX:
            self.smallBodyTooLarge = True
            self._dropSmallBody()

    def _dropSmallBody(self) -> None:
        StreamingRequest.smallBodiesHeld -= self._smallSize
        self._smallSize = 0
        self._small = bytearray()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._early:
            self.body.bodyComplete()
            if self._finishPending:
                self._finishNow()
            return
        self.smallBody = bytes(getattr(self, "_small", b""))
        self._dropSmallBody()
        super().requestReceived(command, path, version)

    def write(self, data: bytes) -> None:
        """
        Write, and send a small answer's head with its body in one write
        (L{glancetx.web.channel.GlanceChannel.headWithBody}).
        """
        channel = self.channel
        if not self.startedWriting and self._early and self.body is not None \
                and not self.body.ended:
            # Answered before its body ended (a refusal): the rest of the
            # body is drained and the connection closed, so say so; a
            # client that reused it would have its next request read as
            # the body.
            self.setHeader(b"connection", b"close")
        # Only a write small enough to be sent at once carries the head; a
        # larger one (a download's first read) follows it, uncopied.
        if (self.startedWriting or not data or len(data) > SEND_NOW_MAX
                or not hasattr(channel, "headWithBody")):
            return super().write(data)
        channel.headWithBody(partial(super().write, data))

    def finish(self) -> None:
        """
        Finish, but when answering an upload whose body is still arriving,
        read and drop the rest for a while first (bounded), so the client
        reads the answer instead of a reset; then close the connection,
        since the body was never read to its end.
        """
        if self._early and self.body is not None and not self.body.ended \
                and not self._disconnected:
            if self._finishPending:
                return
            self._finishPending = True
            self.channel.persistent = False
            self.body.stopProducing()
            self._drainTimer = self._reactor().callLater(DRAIN_SECONDS, self._finishNow)
            return
        super().finish()

    def _finishNow(self) -> None:
        if not self._finishPending:
            return
        self._finishPending = False
        timer = getattr(self, "_drainTimer", None)
        if timer is not None and timer.active():
            timer.cancel()
        # Outside the parser's call stack, so the channel's state is settled.
        self._reactor().callLater(0, self._reallyFinish)

    def _reallyFinish(self) -> None:
        if not self._disconnected and not self.finished:
            server.Request.finish(self)

    def connectionLost(self, reason) -> None:
        timer = getattr(self, "_drainTimer", None)
        if timer is not None and timer.active():
            timer.cancel()
        self._dropSmallBody()
        super().connectionLost(reason)
        if self.body is not None:
            self.body.connectionLost()


_BAD_PATH = b"The request path is not valid UTF-8.\n"
_NUL_PATH = b"The request path must not contain NUL characters.\n"
_UNKNOWN_METHOD = b"Unknown method: methods are case-sensitive.\n"
_BAD_HOST = b"The Host header is not a host name (and port).\n"
_ONE_HOST = b"A request must carry one Host header (RFC 9112 3.2).\n"

#: A Host header as RFC 3986 writes one (a reg-name in ASCII, an IPv4
#: address, an IPv6 one in brackets), with an optional port, and whose name
#: IDNA can encode: no empty label, none over 63 characters.  Klein hands
#: the name to werkzeug, which raises (a 500 and a traceback) on one it
#: cannot encode; it goes back out in Location headers and the version
#: document's links.
_HOST = re.compile(rb"\A(?:\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9_~-]{1,63}\.)*[A-Za-z0-9_~-]{1,63}\.?)"
                   rb"(?::[0-9]{0,5})?\Z|\A\Z")
