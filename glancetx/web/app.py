"""
The Images v1 API as Klein routes.

Handlers translate HTTP to L{ImageService} calls and back; every refusal is
an L{APIError} rendered in one place (L{GlanceAPI.apiError}), and anything
unexpected is a bare 500 to the client and a logged failure here.
"""

import json
import re
from typing import Any, Dict, Optional

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.web.iweb import UNKNOWN_LENGTH
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound
from werkzeug.routing import BaseConverter

from glancetx import errors
from glancetx.asyncutil import shield
from glancetx.auth import NoAuth
from glancetx.registry.registry import ListQuery, Unreachable
from glancetx.store.interface import withoutLocations
from glancetx.web import headers as hdrs
from glancetx.web.sendfile import Stalled, Stopped, sendfileFile

#: Routes whose request bodies are image bytes, streamed (see streaming.py).
UPLOAD_ENDPOINTS = frozenset({"createImage", "updateImage"})
_UPLOAD_METHODS = frozenset({b"POST", b"PUT"})

#: The version document's two ids: Glance's version negotiation served
#: /v1.0/... and /v1.1/... as /v1/..., and so does this API.
V1_ALIASES = frozenset({b"v1.0", b"v1.1"})


def v1Path(path: bytes) -> bytes:
    """
    C{path} with a leading /v1.0 or /v1.1 segment read as /v1.
    """
    head, sep, rest = path[1:].partition(b"/")
    return b"/v1" + sep + rest if head in V1_ALIASES else path


class ImageIdConverter(BaseConverter):
    """
    An image id in a path, read lower-cased: ids are stored lower-cased
    (an x-image-meta-id in capitals included), so the form a client gave
    still names its image.  "detail" is the detailed list, never an id, so
    a method the list does not take is a 405 that names only its own.
    """

    regex = r"(?!detail/?$)[^/]+"

    def to_python(self, value: str) -> str:
        return value.lower()


_SURROGATE = re.compile("[\ud800-\udfff]")


def _checkMemberId(member: str) -> None:
    """
    What a member id may not hold, whether it comes in a body's
    C{memberships} or in a path (where a C{/}, sent as C{%2F}, is part of
    it: the member routes take the rest of the path, so that any member a
    body can name, a path can name too).
    """
    if "\0" in member:
        raise errors.BadRequest("member_id must not contain NUL characters")
    if _SURROGATE.search(member):
        # JSON's "\ud800" alone: no UTF-8 for the database.
        raise errors.BadRequest("member_id must be valid Unicode text")


#: Answers are trees of dicts and lists built here, never cyclic.  Not
#: checking for cycles (a dict entry per container, 26 for a list page of
#: 25) takes about a tenth off encoding a list page.
_encoder = json.JSONEncoder(check_circular=False)


def _checksumAsETag(request, image) -> None:
    """
    Glance v1 answered a HEAD, a download, a create and an update with the
    image's checksum as the ETag, once it had one.
    """
    if image.checksum:
        request.setHeader(b"etag", image.checksum.encode("ascii"))


def _json(request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=UTF-8")
    data = _encoder.encode(body).encode("utf-8")
    request.setHeader(b"content-length", b"%d" % (len(data),))
    return data


def _baseURL(request) -> str:
    host = request.getHeader(b"host")
    if not host:
        # An HTTP/1.0 client may send none: the address it reached, an
        # IPv6 one in brackets.
        h = request.getHost()
        address = "[%s]" % (h.host,) if ":" in h.host else h.host
        host = ("%s:%d" % (address, h.port)).encode("ascii")
    scheme = "https" if request.isSecure() else "http"
    return "%s://%s" % (scheme, host.decode("latin-1"))


def _versions(request) -> Dict[str, Any]:
    base = _baseURL(request)
    return {"versions": [
        {"id": "v1.1", "status": "CURRENT",
         "links": [{"rel": "self", "href": base + "/v1/"}]},
        {"id": "v1.0", "status": "SUPPORTED",
         "links": [{"rel": "self", "href": base + "/v1/"}]},
    ]}


#: A download's send failing for these is the client gone, not the store.
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def _peerHost(request) -> Optional[str]:
    """
    The client's address, for image.send's C{destination_ip}; None on a
    UNIX socket.
    """
    return getattr(request.getClientAddress(), "host", None)


def _bodySent(request, error: Optional[BaseException]) -> int:
    """
    The bytes of a download's body that went out before it ended: what the
    sendfile thread reports (on C{error}), or what twisted.web wrote.
    """
    sent = getattr(error, "bytesSent", None)
    return sent if sent is not None else request.sentLength


class GlanceAPI:
    """
    One instance per service; its Klein app is bound to it.
    """

    app = Klein()
    app.url_map.converters["image"] = ImageIdConverter
    log = Logger()

    def __init__(self, service, config, auth=None, sendfile=None) -> None:
        self.service = service
        self.config = config
        self.auth = auth or NoAuth()
        self.sendfile = sendfile

    def resource(self):
        return self.app.resource()

    def _routesTo(self, path: str, method: str) -> Optional[str]:
        """
        The endpoint a request for C{path} would reach, if any.
        """
        try:
            endpoint, _ = self.app.url_map.bind("localhost").match(path, method=method)
        except HTTPException:
            return None
        return endpoint

    def isUpload(self, method: bytes, path: bytes) -> bool:
        """
        Whether a request with a body should stream it to an upload handler
        (asked by the streaming request at header time).  Only POST and
        PUT routes take uploads; other methods skip the URL map.
        """
        if method not in _UPLOAD_METHODS:
            return False
        try:
            endpoint = self._routesTo(v1Path(path).decode("utf-8"), method.decode("ascii"))
        except UnicodeDecodeError:
            return False
        return endpoint in UPLOAD_ENDPOINTS

    def _context(self, request):
        return self.auth.authenticate(request.requestHeaders)

    # -- errors ------------------------------------------------------------

    @app.handle_errors(errors.APIError)
    def apiError(self, request, failure):
        return self._error(request, failure.value.code, failure.value.message)

    @app.handle_errors(MethodNotAllowed)
    def methodNotAllowed(self, request, failure):
        path = "/" + "/".join(segment.decode("utf-8") for segment in request.postpath)
        if self._routesTo(path, "GET") == "unknownPath":
            # Only the catch-all matched: no resource has this path, so it
            # is not there for this method either.
            return self._unknownPath(request, path[1:])
        allowed = sorted(failure.value.valid_methods or [])
        request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
        return self._error(request, 405, "Method not allowed")

    @app.handle_errors(RouteNotFound)
    def routeNotFound(self, request, failure):
        return self._error(request, 404, "Not found")

    @app.handle_errors(HTTPException)
    def otherHTTPError(self, request, failure):
        return self._error(request, failure.value.code or 400, "Bad request")

    @app.handle_errors(Unreachable)
    def registryUnreachable(self, request, failure):
        self.log.warn("the database failed answering {method} {path}: {code}",
                      method=request.method.decode("latin-1"),
                      path=request.path.decode("latin-1"), code=failure.value.args[0])
        return self._error(request, 503, "The image registry is unavailable; try again later.")

    @app.handle_errors(CancelledError)
    def cancelled(self, request, failure):
        return None

    @app.handle_errors(Exception)
    def unexpected(self, request, failure):
        self.log.failure("unexpected error answering {method} {path}", failure,
                         method=request.method, path=request.path)
        return self._error(request, 500, "Internal server error")

    def _error(self, request, code: int, message: str) -> bytes:
        request.setResponseCode(code)
        accept = (request.getHeader(b"accept") or b"").lower()
        if b"application/json" in accept:
            request.setHeader(b"content-type", b"application/json; charset=UTF-8")
            data = json.dumps({"error": {"code": code, "message": message}}).encode("utf-8")
        else:
            request.setHeader(b"content-type", b"text/plain; charset=UTF-8")
            data = (message + "\n").encode("utf-8")
        request.setHeader(b"content-length", b"%d" % (len(data),))
        return data

    # -- versions ----------------------------------------------------------

    @app.route("/", methods=["GET", "HEAD"])
    def root(self, request):
        return _json(request, 300, _versions(request))

    @app.route("/versions", methods=["GET", "HEAD"])
    def versions(self, request):
        return _json(request, 200, _versions(request))

    @app.route("/<path:anything>", methods=["GET", "HEAD"], endpoint="unknownPath")
    def _unknownPath(self, request, anything):
        if anything.split("/")[0] == "v1":
            return self._error(request, 404, "Not found")
        return _json(request, 300, _versions(request))

    # -- lists -------------------------------------------------------------

    async def _list(self, request):
        ctx = self._context(request)
        q = hdrs.parseListQuery(request.args, self.config.limit_param_default,
                                self.config.api_limit_max, ctx.is_admin)
        return await self.service.list(ctx, ListQuery(**q))

    @app.route("/v1/images", methods=["GET", "HEAD"])
    async def listImages(self, request):
        images = await self._list(request)
        return _json(request, 200, {"images": [hdrs.briefDict(i) for i in images]})

    @app.route("/v1/images/detail", methods=["GET", "HEAD"])
    async def listImagesDetail(self, request):
        images = await self._list(request)
        return _json(request, 200, {"images": [hdrs.imageDict(i) for i in images]})

    # -- one image ---------------------------------------------------------

    def _metaHeaders(self, request, image) -> None:
        for name, value in hdrs.imageHeaders(image).items():
            request.setHeader(name, value)
        _checksumAsETag(request, image)
        request.setHeader(b"location", ("%s/v1/images/%s" % (
            _baseURL(request), image.id)).encode("utf-8"))

    @app.route("/v1/images/<image:imageId>", methods=["GET", "HEAD"])
    async def showImage(self, request, imageId):
        ctx = self._context(request)
        if request.method == b"HEAD":
            image = await self.service.show(ctx, imageId)
            self._metaHeaders(request, image)
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(b"content-length", b"%d" % (image.size or 0,))
            return b""
        image, producer = await self.service.download(ctx, imageId)
        self._metaHeaders(request, image)
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", str(producer.length).encode("ascii"))
        sent = None
        opened = sendfileFile(producer)
        if opened is not None and self.sendfile is not None:
            sent = self.sendfile.send(request, opened, producer.length)
        destination = _peerHost(request)
        try:
            if sent is not None:
                try:
                    await shield(sent)
                finally:
                    producer.stopProducing()  # closes the file
            else:
                request.registerProducer(producer, True)
                try:
                    await producer.startProducing(request)
                finally:
                    # None once the client hung up (twisted.web lets go).
                    if request.channel is not None:
                        request.unregisterProducer()
        except CancelledError:
            producer.stopProducing()
            self.service.sent(ctx, image, _bodySent(request, None), destination)
            raise
        except Exception as e:
            self.service.sent(ctx, image, _bodySent(request, e), destination)
            if request.channel is None or isinstance(e, _CLIENT_GONE):
                self.log.info("download of {image_id} ended: the client hung up",
                              image_id=imageId)
                if request.channel is not None:
                    request.transport.abortConnection()
                raise CancelledError()
            # The store ended early: never pass a short body off as whole.
            if isinstance(e, Stopped):
                self.log.info("download of {image_id} cut short: {why}",
                              image_id=imageId, why=withoutLocations(str(e)))
            elif isinstance(e, Stalled):
                # As the channel says it of a download through memory.
                self.log.info("download of {image_id} ended: its client read nothing for"
                              " {seconds} seconds", image_id=imageId,
                              seconds=self.config.client_socket_timeout)
            else:
                self.log.warn("download of {image_id} broke off: {error}",
                              image_id=imageId, error=withoutLocations(repr(e)))
            request.channel.persistent = False
            request.transport.abortConnection()
            raise CancelledError()
        self.service.sent(ctx, image, producer.length, destination)
        return None

    def _uploadBody(self, request):
        body = request.body
        if body is None:
            return None
        ctype = (request.getHeader(b"content-type") or b"application/octet-stream")
        if ctype.split(b";")[0].strip().lower() != b"application/octet-stream":
            raise errors.BadRequest("Content-Type must be application/octet-stream")
        if body.length is not UNKNOWN_LENGTH and body.length > self.config.image_size_cap:
            raise errors.TooLarge("Denying attempt to upload image larger than %d bytes."
                                  % (self.config.image_size_cap,))
        body.onStart = request.continueUpload
        return body

    def _changes(self, request):
        changes = hdrs.changesFromHeaders(request.requestHeaders.getAllRawHeaders())
        body = request.body
        size = changes.fields.get("size")
        if body is not None and size is not None and body.length is not UNKNOWN_LENGTH \
                and body.length != size:
            raise errors.BadRequest("Supplied x-image-meta-size (%d) does not match the"
                                    " Content-Length of the request (%d)" % (size, body.length))
        return changes

    @app.route("/v1/images", methods=["POST"], endpoint="createImage")
    async def createImage(self, request):
        ctx = self._context(request)
        changes = self._changes(request)
        body = self._uploadBody(request)
        image = await shield(self.service.create(ctx, changes, body))
        request.setHeader(b"location", ("%s/v1/images/%s" % (
            _baseURL(request), image.id)).encode("utf-8"))
        _checksumAsETag(request, image)
        return _json(request, 201, {"image": hdrs.imageDict(image)})

    @app.route("/v1/images/<image:imageId>", methods=["PUT"], endpoint="updateImage")
    async def updateImage(self, request, imageId):
        ctx = self._context(request)
        changes = self._changes(request)
        body = self._uploadBody(request)
        image = await shield(self.service.update(ctx, imageId, changes, body))
        _checksumAsETag(request, image)
        return _json(request, 200, {"image": hdrs.imageDict(image)})

    @app.route("/v1/images/<image:imageId>", methods=["DELETE"])
    async def deleteImage(self, request, imageId):
        ctx = self._context(request)
        await self.service.delete(ctx, imageId)
        request.setResponseCode(200)
        request.setHeader(b"content-length", b"0")
        return b""

    # -- members -------------------------------------------------------------

    def _jsonBody(self, request) -> Optional[Any]:
        if request.smallBodyTooLarge:
            raise errors.TooLarge("Request body too large")
        if request.smallBodyRefused:
            raise errors.Unavailable("Too many request bodies are arriving at once;"
                                     " try again.")
        if not request.smallBody.strip():
            return None
        try:
            return json.loads(request.smallBody.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            # RecursionError: arrays nested deeper than the parser goes.
            raise errors.BadRequest("Malformed JSON in request body")

    @app.route("/v1/images/<image:imageId>/members", methods=["GET"])
    async def listMembers(self, request, imageId):
        ctx = self._context(request)
        members = await self.service.members(ctx, imageId)
        return _json(request, 200, {"members": [
            {"member_id": m.member, "can_share": m.can_share} for m in members]})

    @app.route("/v1/images/<image:imageId>/members", methods=["PUT"])
    async def replaceMembers(self, request, imageId):
        ctx = self._context(request)
        body = self._jsonBody(request)
        if not isinstance(body, dict) or not isinstance(body.get("memberships"), list):
            raise errors.BadRequest('Expected a body of the form {"memberships": [...]}')
        members: Dict[str, Optional[bool]] = {}
        for entry in body["memberships"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("member_id"), str) \
                    or not entry["member_id"].strip() or len(entry["member_id"]) > 255:
                raise errors.BadRequest("Each membership needs a member_id string")
            _checkMemberId(entry["member_id"])
            # None: a member listed already keeps its own; a new one has none.
            canShare = entry.get("can_share")
            if canShare is not None and not isinstance(canShare, bool):
                raise errors.BadRequest("can_share must be true or false")
            members[entry["member_id"]] = canShare
        await self.service.replaceMembers(ctx, imageId, members)
        request.setResponseCode(204)
        return b""

    @app.route("/v1/images/<image:imageId>/members/<path:member>", methods=["GET"])
    async def showMember(self, request, imageId, member):
        ctx = self._context(request)
        m = await self.service.member(ctx, imageId, member)
        return _json(request, 200, {"member": {"member_id": m.member,
                                               "can_share": m.can_share}})

    @app.route("/v1/images/<image:imageId>/members/<path:member>", methods=["PUT"])
    async def addMember(self, request, imageId, member):
        ctx = self._context(request)
        if len(member) > 255:
            raise errors.BadRequest("member id too long")
        if not member.strip():
            raise errors.BadRequest("member id must not be blank")
        _checkMemberId(member)
        body = self._jsonBody(request)
        canShare = None
        if body is not None:
            if not isinstance(body, dict) or not isinstance(body.get("member", {}), dict):
                raise errors.BadRequest('Expected a body of the form {"member": {...}}')
            canShare = body.get("member", {}).get("can_share")
            if canShare is not None and not isinstance(canShare, bool):
                raise errors.BadRequest("can_share must be true or false")
        await self.service.addMember(ctx, imageId, member, canShare)
        request.setResponseCode(204)
        return b""

    @app.route("/v1/images/<image:imageId>/members/<path:member>", methods=["DELETE"])
    async def deleteMember(self, request, imageId, member):
        ctx = self._context(request)
        await self.service.deleteMember(ctx, imageId, member)
        request.setResponseCode(204)
        return b""

    @app.route("/v1/shared-images/<path:member>", methods=["GET"])
    async def sharedImages(self, request, member):
        ctx = self._context(request)
        shared = await self.service.sharedImages(ctx, member)
        return _json(request, 200, {"shared_images": [
            {"image_id": m.image_id, "can_share": m.can_share} for m in shared]})
