"""
The image service: the lifecycle and the rules, with no HTTP and no SQL.

Every method takes the caller's L{RequestContext} and either returns
records or raises an L{APIError} with the status and plain message the
client should get.  Status changes that can race (queued → saving,
saving → active) are conditional updates in the registry, so two processes
sharing a database cannot both upload one image.
"""

import datetime
import re
import uuid
from typing import Any, Dict, List, Mapping, Optional, Tuple

import attr
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from glancetx import errors
from glancetx.asyncutil import fromCoroutine
from glancetx.budget import SharedBudget
from glancetx.context import RequestContext
from glancetx.notifier import INotifier, payloadFor
from glancetx.policy import Policy, credsFor
from glancetx.protections import PropertyProtections
from glancetx.registry import registry as reg
from glancetx.registry.registry import ImageRecord, ListQuery, MemberRecord
from glancetx.store.remote import userLocationRefusal
from glancetx.store.interface import (
    BadLocation,
    LocationNotFound,
    StoreError,
    StoreUnavailable,
    UploadFailed,
    withoutLocations,
)
from glancetx.uploadleases import UploadLeases
from glancetx.web.streaming import ThreadedMD5, VerifyingBody

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                   r"[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_AMI = ("ami", "ari", "aki")
MAX_INT32 = 2 ** 31 - 1
#: Abandoned uploads killed in one round at most (the rest in the next).
REAP_LIMIT = 100
#: The answer to an upload whose image another process killed meanwhile.
_KILLED_DURING_UPLOAD = ("Image %s was killed during the upload: this server had not renewed"
                         " its upload lease in time.")
#: Seconds after a failed upload to a remote store before a reaper makes
#: sure nothing of it is left: past the store's own two minutes of
#: retries, and again as long as the store cannot be reached.
SWEEP_DELAY = 300
#: Seconds after a scrubber claimed a deleted image's bytes before another
#: takes its removal for dead and tries again: far past any store's
#: timeouts, so a second removal of the same bytes is rare (and harmless:
#: it finds them gone).
REMOVAL_CLAIM_SECONDS = 600


def _target(image: Optional[ImageRecord]) -> Dict[str, Any]:
    """
    What a policy rule sees of an image: its fields and, as Glance v1's
    C{create_mashup_dict} made them, its properties at the top level too
    (one never hides a field of the same name), so a Glance rule such as
    C{not 'true':%(restricted)s} finds the property rather than nothing,
    which under C{not} allowed what it was written to refuse.  They stay
    under C{properties} as well.
    """
    if image is None:
        return {}
    t = image.fields()
    t["project_id"] = image.owner
    for key, value in image.properties.items():
        t.setdefault(key, value)
    t["properties"] = dict(image.properties)
    return t


def _plain(e: Exception) -> str:
    """
    An error's message for a client, a notification or a log line, with
    no location in it (see L{withoutLocations}).
    """
    return withoutLocations(str(e.args[0]) if e.args else "")


#: A URL scheme (RFC 3986 3.1).
_SCHEME = re.compile(r"\A[a-z][a-z0-9+.-]*\Z")


#: The largest size the registry's columns (signed 64-bit) hold.
MAX_SIZE = 2 ** 63 - 1


@attr.s(frozen=True, auto_attribs=True)
class _MetadataWrite:
    """
    An update's fields and properties, checked and not yet written.
    """

    fields: Mapping[str, Any]
    properties: Mapping[str, str]
    purge: bool
    propertyQuota: Optional[int]


@attr.s(auto_attribs=True)
class _DataPlan:
    """
    Where an image's bytes will come from and go to.
    """

    store: Any = None
    source: Any = None
    sourceSize: Optional[int] = None
    #: An update's own metadata, when it supplies data: written in the
    #: transaction that makes the image C{saving} for its upload or copy,
    #: or C{active} at its location (L{ImageService._writeStart}).
    metadata: Optional[_MetadataWrite] = None


@attr.s(auto_attribs=True)
class _Fetching:
    """
    A copy waiting for its source to answer: stopping the server cancels
    the wait, as it aborts an upload under way.
    """

    waiting: Any

    def abort(self, why: str = "") -> None:
        self.waiting.cancel()


class _ShuttingDown(errors.Unavailable):
    """
    Data refused because the server is stopping: nothing of it was stored.
    """


@attr.s(frozen=True, auto_attribs=True)
class ImageChanges:
    """
    What a create or update request asks for, already parsed from headers.
    """

    fields: Mapping[str, Any] = attr.ib(factory=dict)
    properties: Mapping[str, str] = attr.ib(factory=dict)
    store: Optional[str] = None
    location: Optional[str] = None
    copy_from: Optional[str] = None
    purge_properties: bool = True


#: How many times an update is checked again because the image's status
#: changed between its read and its write.
UPDATE_ATTEMPTS = 3


@attr.s
class ImageService:
    """
    Image rules on top of a registry and a set of stores.
    """

    log = Logger()
    #: Pending deletes a scrub claims per query.
    scrubBatch = 100
    #: See L{REMOVAL_CLAIM_SECONDS}.
    removalClaimSeconds = REMOVAL_CLAIM_SECONDS

    registry: reg.Registry = attr.ib()
    stores: Mapping[str, Any] = attr.ib()
    config: Any = attr.ib()
    notifier: INotifier = attr.ib()
    reactor: Any = attr.ib()
    policy: Any = attr.ib(factory=Policy.defaults)
    protections: Any = attr.ib(factory=PropertyProtections.allowAll)
    #: Thread pool for hashing uploads off the reactor thread (None: inline).
    cpuPool: Any = attr.ib(default=None)
    #: Background copy-from jobs, so shutdown and tests can wait for them.
    background: List = attr.ib(factory=list)
    #: Upload memory: how far the hasher may fall behind (see budget.py).
    budget: SharedBudget = attr.ib(factory=lambda: SharedBudget(total=0))
    #: Leases on the uploads under way (None: none taken, as in unit tests
    #: that need none).
    leases: Optional[UploadLeases] = attr.ib(default=None)
    #: Rounds in a row in which this process's reaper reached the database.
    #: It kills only after two: after an outage of the database (or at
    #: start) every live process has then renewed its leases first.
    _reapsInARow: int = attr.ib(default=0, init=False)
    #: The sources of the uploads under way, so that shutdown can end them.
    _uploading: Dict[object, Any] = attr.ib(factory=dict, init=False)
    #: The copies under way: image id to their key in C{_uploading}.
    _copying: Dict[str, object] = attr.ib(factory=dict, init=False)
    _stopping: bool = attr.ib(default=False, init=False)

    # -- access -----------------------------------------------------------

    def _enforce(self, ctx: RequestContext, rule: str,
                 image: Optional[ImageRecord] = None) -> None:
        if not self.policy.enforce(rule, _target(image), credsFor(ctx)):
            raise errors.Forbidden("You are not authorized to complete %s action." % (rule,))

    def _enforceDataRules(self, ctx: RequestContext, changes: ImageChanges, body,
                          image: Optional[ImageRecord]) -> None:
        """
        Glance v1's rules for how a create or update supplies image data:
        C{copy_from}, C{upload_image} (a body or a copy-from) and
        C{set_image_location}, the rules an operator uses to keep
        copy-from and registered locations to admins.
        """
        if changes.copy_from is not None:
            self._enforce(ctx, "copy_from", image)
        if body is not None or changes.copy_from is not None:
            self._enforce(ctx, "upload_image", image)
        if changes.location is not None:
            self._enforce(ctx, "set_image_location", image)

    def _writeAllowed(self, ctx: RequestContext) -> None:
        if ctx.read_only:
            raise errors.Forbidden("Read-only access")

    async def _visible(self, ctx: RequestContext, imageId: str,
                       includeDeleted: bool = False) -> ImageRecord:
        """
        The image if the caller may see it; otherwise a 404 that says no
        more than a missing image would.
        """
        if not imageId.isascii() or (not _UUID.match(imageId) and len(imageId) > 36):
            # No image has such an id; and MySQL's collations would find
            # one with an accent as another's, or refuse it in a latin1
            # column (a 503).
            raise errors.NotFound("Image not found.")
        try:
            image = await self.registry.get(imageId, includeDeleted=includeDeleted)
        except reg.NotFound:
            raise errors.NotFound("Image not found.")
        if ctx.is_admin or image.is_public or (
                ctx.tenant is not None and image.owner == ctx.tenant):
            return image
        if ctx.tenant is not None and await self.registry.isVisible(imageId, ctx.tenant):
            return image
        raise errors.NotFound("Image not found.")

    def _ownerOrAdmin(self, ctx: RequestContext, image: ImageRecord) -> None:
        if not ctx.is_admin and (ctx.tenant is None or image.owner != ctx.tenant):
            raise errors.Forbidden("You are not permitted to modify this image.")

    def _readableProperties(self, ctx: RequestContext, image: ImageRecord) -> ImageRecord:
        if not self.protections.enabled:
            # Every property readable: a list page skips 25 filtering copies.
            return image
        props = {k: v for k, v in image.properties.items()
                 if self.protections.check(k, "read", ctx)}
        if len(props) == len(image.properties):
            return image
        return attr.evolve(image, properties=props)

    # -- reading ------------------------------------------------------------

    @fromCoroutine
    async def show(self, ctx: RequestContext, imageId: str) -> ImageRecord:
        image = await self._visible(ctx, imageId)
        self._enforce(ctx, "get_image", image)
        return self._readableProperties(ctx, image)

    @fromCoroutine
    async def list(self, ctx: RequestContext, query: ListQuery) -> List[ImageRecord]:
        self._enforce(ctx, "get_images")
        if query.marker is not None:
            # A changes-since list shows deleted images, so one of them can
            # end a page and be the next page's marker.
            try:
                await self._visible(ctx, query.marker,
                                    includeDeleted=query.changes_since is not None)
            except errors.NotFound:
                raise errors.BadRequest("Invalid marker: no such image.")
        if self.protections.enabled and not all(
                self.protections.check(k, "read", ctx) for k in query.properties):
            # A property the caller may not read is on no image it is
            # shown: a filter on its value must not pick images out either.
            return []
        if ctx.is_admin and query.restrict_to_visible is False:
            query = attr.evolve(query, visible_to=None)
        else:
            query = attr.evolve(query, restrict_to_visible=True, visible_to=ctx.tenant,
                                is_public=None if not ctx.is_admin else query.is_public)
        try:
            images = await self.registry.list(query)
        except reg.NotFound:
            raise errors.BadRequest("Invalid marker: no such image.")
        return [self._readableProperties(ctx, i) for i in images]

    @fromCoroutine
    async def download(self, ctx: RequestContext, imageId: str) -> Tuple[ImageRecord, Any]:
        """
        The image and a producer of its bytes.
        """
        image = await self._visible(ctx, imageId)
        self._enforce(ctx, "get_image", image)
        self._enforce(ctx, "download_image", image)
        if image.status != "active":
            raise errors.NotFound("Image %s is not active." % (imageId,))
        location = await self.registry.getLocation(imageId)
        store = self._storeFor(location)
        try:
            producer = await store.get(location)
        except LocationNotFound:
            raise errors.NotFound("Image data for %s was not found in the store." % (imageId,))
        except (StoreError, BadLocation) as e:
            self.log.warn("store {store} failed to serve {image_id}: {error}",
                          store=store.name, image_id=imageId, error=_plain(e))
            raise errors.Unavailable("The image store is unavailable; try again later.")
        stated = getattr(producer, "md5", None)
        if image.size is not None and producer.length != image.size:
            damage = ("stored data of {image_id} is {length} bytes, not {size}",
                      dict(length=producer.length, size=image.size))
        elif stated is not None and image.checksum and stated != image.checksum.lower():
            damage = ("stored data of {image_id} has MD5 {stated} by its store's word, not the"
                      " image's checksum {checksum}: it was replaced in the store",
                      dict(stated=stated, checksum=image.checksum))
        else:
            return self._readableProperties(ctx, image), producer
        producer.stopProducing()
        self.log.error(damage[0], image_id=imageId, **damage[1])
        raise errors.Unavailable("The stored image data is damaged; it is not served.")

    def sent(self, ctx: RequestContext, image: ImageRecord, sent: int,
             destination: Optional[str] = None) -> None:
        """
        Glance v1's image.send, once a download has ended: INFO if it sent
        the whole image, ERROR (with what it did send) if not.
        """
        payload = {"bytes_sent": sent, "image_id": image.id, "owner_id": image.owner,
                   "receiver_tenant_id": ctx.tenant, "receiver_user_id": ctx.user,
                   "destination_ip": destination}
        whole = sent == (image.size or 0)
        self.notifier.notify("image.send", payload, "INFO" if whole else "ERROR")

    def _storeFor(self, location: Optional[str]):
        scheme = (location or "").split("://", 1)[0]
        for store in self.stores.values():
            if scheme in store.schemes:
                return store
        raise errors.Unavailable("No configured store can serve this image's location.")

    # -- validation ---------------------------------------------------------

    def _fields(self, ctx: RequestContext, changes: ImageChanges,
                current: Optional[ImageRecord]) -> Dict[str, Any]:
        """
        The fields a create or update will write, read as Glance read them
        and checked.
        """
        fields = dict(changes.fields)
        # Only admins set an image's owner; anyone else's is ignored, as
        # Glance's registry ignored it, so scripts that always pass one work.
        if not ctx.is_admin:
            fields.pop("owner", None)
        # An aki, ari or ami format given without the other sets the other
        # to the same, as Glance did: the two must match.
        disk, cont = fields.get("disk_format"), fields.get("container_format")
        if disk in _AMI and cont is None:
            fields["container_format"] = disk
        elif cont in _AMI and disk is None:
            fields["disk_format"] = cont
        self._checkFields(ctx, fields, current)
        return fields

    def _checkFields(self, ctx: RequestContext, fields: Mapping[str, Any],
                     current: Optional[ImageRecord]) -> None:
        name = fields.get("name")
        if name is not None and len(name) > 255:
            raise errors.BadRequest("Image name too long: %d" % (len(name),))
        owner = fields.get("owner")
        if owner is not None and len(owner) > 255:
            raise errors.BadRequest("Image owner too long: %d" % (len(owner),))
        for key in ("min_ram", "min_disk"):
            if key in fields and not 0 <= fields[key] <= MAX_INT32:
                raise errors.BadRequest("Invalid %s: must be between 0 and %d" % (key, MAX_INT32))
        if "size" in fields and fields["size"] is not None and fields["size"] < 0:
            raise errors.BadRequest("Invalid size: must not be negative")
        disk = fields.get("disk_format", current.disk_format if current else None)
        cont = fields.get("container_format", current.container_format if current else None)
        if "disk_format" in fields and fields["disk_format"] is not None \
                and fields["disk_format"] not in self.config.disk_formats:
            raise errors.BadRequest("Invalid disk format '%s' for image." % (fields["disk_format"],))
        if "container_format" in fields and fields["container_format"] is not None \
                and fields["container_format"] not in self.config.container_formats:
            raise errors.BadRequest("Invalid container format '%s' for image."
                                    % (fields["container_format"],))
        if disk and cont and (disk in _AMI or cont in _AMI) and disk != cont:
            raise errors.BadRequest("Invalid mix of disk and container formats. When setting a"
                                    " disk or container format to one of 'aki', 'ari', or 'ami',"
                                    " the container and disk formats must match.")
        if fields.get("is_public") and not (current is not None and current.is_public):
            self._enforce(ctx, "publicize_image", current)
        if "status" in fields:
            now = current.status if current is not None else "queued"
            if fields["status"] != now:
                raise errors.Forbidden("Users may not set an image's status.")
        if "id" in fields and current is None:
            if fields["id"] is None or not _UUID.match(fields["id"]):
                raise errors.BadRequest("Invalid id: must be a UUID")
        if current is not None and "id" in fields and fields["id"] != current.id:
            raise errors.Forbidden("An image's id cannot change.")
        if "checksum" in fields and fields["checksum"] is not None \
                and not re.match(r"^[0-9a-f]{32}$", fields["checksum"]):
            raise errors.BadRequest("Invalid checksum: must be 32 lower-case hex digits")
        if "size" in fields and fields["size"] is not None \
                and fields["size"] > self.config.image_size_cap:
            raise errors.TooLarge("Denying attempt to upload image larger than %d bytes."
                                  % (self.config.image_size_cap,))

    def _checkPropertyQuota(self, count: int) -> None:
        quota = self.config.image_property_quota
        if quota >= 0 and count > quota:
            raise errors.TooLarge("Attempted to set %d properties, but the quota is %d."
                                  % (count, quota))

    def _checkProtections(self, ctx: RequestContext, current: Mapping[str, str],
                          new: Mapping[str, str], purge: bool) -> Dict[str, str]:
        """
        Check property changes against the protections; return the full set
        to write (properties the caller cannot read are kept as they were).
        """
        result = dict(new)
        for k, v in new.items():
            if k not in current:
                if not self.protections.check(k, "create", ctx):
                    raise errors.Forbidden("Property '%s' is protected" % (k,))
            elif not self.protections.check(k, "read", ctx):
                # Refused whatever the value, as Glance v1 did: were the
                # same value let through as a no-op, a caller could find a
                # property it may not read by guessing until one passed.
                raise errors.Forbidden("Property '%s' is protected" % (k,))
            elif current[k] != v:
                if not self.protections.check(k, "update", ctx):
                    raise errors.Forbidden("Property '%s' is protected" % (k,))
        if purge:
            for k, v in current.items():
                if k in new:
                    continue
                if not self.protections.check(k, "read", ctx):
                    result[k] = v  # invisible to the caller: not theirs to drop
                elif not self.protections.check(k, "delete", ctx):
                    raise errors.Forbidden("Property '%s' is protected" % (k,))
        return result

    def _storeNamed(self, name: Optional[str]):
        name = name or self.config.default_store
        store = self.stores.get(name)
        if store is None or not store.writable:
            raise errors.BadRequest("Store for scheme %s not found" % (name,))
        return store

    def _locationStore(self, location: str):
        scheme, sep, _ = location.partition("://")
        scheme = scheme.lower()
        if not sep or not _SCHEME.match(scheme):
            # Not echoed: what comes before a later "://" may be anything,
            # credentials included ("smb:user:secret@host/?u=http://...").
            scheme = ""
        if scheme == "file" or not scheme:
            raise errors.BadRequest("External sources are not supported: '%s'"
                                    % (scheme or "no scheme"))
        for name, store in self.stores.items():
            if name != "file" and scheme in store.schemes:
                refusal = userLocationRefusal(store, location)
                if refusal is not None:
                    raise errors.BadRequest(refusal)
                return store
        raise errors.BadRequest("External source scheme '%s' is not supported" % (scheme,))

    async def _planData(self, changes: ImageChanges, body, diskFormat, containerFormat,
                        size) -> "_DataPlan":
        """
        Check how the request supplies image data (a body, a location or a
        copy-from source: at most one) before anything is written.  A
        location or source must be usable and must answer now: a refused
        address or an unreachable source is the client's 400, not a killed
        image later.
        """
        sources = [x for x in (body, changes.location, changes.copy_from) if x is not None]
        if len(sources) > 1:
            raise errors.BadRequest("Provide image data in only one way: a body, a location"
                                    " or x-glance-api-copy-from.")
        if sources and not (diskFormat and containerFormat):
            missing = "disk_format" if not diskFormat else "container_format"
            raise errors.BadRequest("%s is required when image data is supplied" % (missing,))
        plan = _DataPlan()
        if body is not None or changes.copy_from is not None or changes.store is not None:
            plan.store = self._storeNamed(changes.store)
        uri = changes.location if changes.location is not None else changes.copy_from
        if uri is None:
            return plan
        plan.source = self._locationStore(uri)
        try:
            plan.sourceSize = await plan.source.get_size(uri)
        except (StoreError, BadLocation, LocationNotFound) as e:
            raise errors.BadRequest("Cannot use this %s: %s" % (
                "location" if changes.location is not None else "copy-from source",
                _plain(e) or "unreachable"))
        if changes.location is not None and size not in (None, plan.sourceSize):
            raise errors.BadRequest("Supplied x-image-meta-size (%d) does not match the size"
                                    " at the location (%d)" % (size, plan.sourceSize))
        if changes.copy_from is not None and plan.sourceSize > self.config.image_size_cap:
            # Refused now, as a declared size over the cap is, rather than
            # killed once the cap's worth of bytes has been fetched.
            raise errors.TooLarge("Denying attempt to copy an image of %d bytes, larger than"
                                  " %d bytes." % (plan.sourceSize, self.config.image_size_cap))
        if plan.sourceSize > MAX_SIZE:
            # No database column holds it (the insert failed with a 500).
            raise errors.BadRequest("Cannot use this location: it reports a size of %d bytes,"
                                    " more than any image can have" % (plan.sourceSize,))
        return plan

    @staticmethod
    def _takeSourceSize(changes: ImageChanges, plan: "_DataPlan", fields: Dict[str, Any],
                        declared: Optional[int]) -> None:
        """
        A copy-from image with no declared size takes the size its source
        reports, as Glance's did: it shows while the copy is queued, and
        the copy is then held to it, so a source that changed is a failed
        copy rather than an image of other bytes.
        """
        if changes.copy_from is not None and declared is None:
            fields["size"] = plan.sourceSize

    async def _supplyData(self, image: ImageRecord, changes: ImageChanges, body,
                          plan: "_DataPlan") -> ImageRecord:
        if body is not None:
            return await self._store(image, body, plan.store, plan.metadata)
        if changes.location is not None:
            return await self._register(image, changes.location, plan.sourceSize,
                                        plan.metadata)
        if changes.copy_from is not None:
            return await self._beginCopy(image, changes.copy_from, plan.source, plan.store,
                                         plan.metadata)
        return image

    # -- create and update -------------------------------------------------

    @fromCoroutine
    async def create(self, ctx: RequestContext, changes: ImageChanges,
                     body=None) -> ImageRecord:
        self._writeAllowed(ctx)
        self._enforce(ctx, "add_image")
        self._enforceDataRules(ctx, changes, body, None)
        fields = self._fields(ctx, changes, None)
        self._checkPropertyQuota(len(changes.properties))
        self._checkProtections(ctx, {}, changes.properties, purge=False)
        plan = await self._planData(changes, body, fields.get("disk_format"),
                                    fields.get("container_format"), fields.get("size"))
        self._takeSourceSize(changes, plan, fields, fields.get("size"))
        fields.pop("status", None)
        fields.setdefault("id", str(uuid.uuid4()))
        fields["id"] = fields["id"].lower()
        if "owner" not in fields:
            fields["owner"] = ctx.tenant
        fields["status"] = "queued"
        if body is not None or changes.copy_from is not None:
            # Before the record: a 503 that left a queued image with no
            # bytes, whose id no one was told, invited a retry beside it.
            self._refuseWhileStopping()
        try:
            image = await self.registry.create(fields, changes.properties)
        except reg.Conflict:
            raise errors.Conflict("An image with identifier %s already exists" % (fields["id"],))
        self.notifier.notify("image.create", payloadFor(image))
        try:
            image = await self._supplyData(image, changes, body, plan)
        except errors.NotFound:
            # Deleted (by its id) before its data was taken: this request's
            # own image is not "not found", it lost a race.
            raise errors.Conflict("Image %s was deleted before its data was stored."
                                  % (image.id,))
        except _ShuttingDown:
            # The server began to stop while the record was written.
            await self._uploadFailed(image.id, "the server stopped before its data arrived",
                                     unstarted=True)
            raise
        return self._readableProperties(ctx, image)

    @fromCoroutine
    async def update(self, ctx: RequestContext, imageId: str, changes: ImageChanges,
                     body=None) -> ImageRecord:
        self._writeAllowed(ctx)
        for _ in range(UPDATE_ATTEMPTS):
            image = await self._visible(ctx, imageId)
            try:
                image, plan = await self._updateFrom(ctx, image, changes, body)
                break
            except reg.Conflict:
                # The image left the status this update was checked
                # against (another request activated, killed or began
                # uploading it): check again against what it is now.
                continue
        else:
            raise errors.Conflict("The image changed while it was being updated; try again.")
        image = await self._supplyData(image, changes, body, plan)
        # Once its data is handled, as Glance v1 sent it: Ceilometer's
        # image.size meter reads the size from it.
        self.notifier.notify("image.update", payloadFor(image))
        return self._readableProperties(ctx, image)

    async def _updateFrom(self, ctx: RequestContext, image: ImageRecord,
                          changes: ImageChanges, body) -> Tuple[ImageRecord, "_DataPlan"]:
        """
        Check an update against C{image} as read, and write it only if the
        image is still in that status.

        @raise reg.Conflict: it is not.
        """
        self._ownerOrAdmin(ctx, image)
        self._enforce(ctx, "modify_image", image)
        self._enforceDataRules(ctx, changes, body, image)
        fields = self._fields(ctx, changes, image)
        if image.status == "active":
            for key in ("size", "checksum"):
                if key in fields and fields[key] != getattr(image, key):
                    raise errors.Forbidden("Cannot change %s of an active image" % (key,))
            for key in ("disk_format", "container_format"):
                if key in fields and fields[key] != getattr(image, key):
                    raise errors.Forbidden("Forbidden to modify '%s' of an active image" % (key,))
        elif image.status == "saving":
            # Its bytes are arriving: it becomes active only with both.
            for key in ("disk_format", "container_format"):
                if key in fields and fields[key] is None:
                    raise errors.Forbidden("Forbidden to clear '%s' of an image whose data is"
                                           " being uploaded" % (key,))
        fields.pop("id", None)
        fields.pop("status", None)
        if changes.location is not None and image.status != "queued":
            raise errors.BadRequest("A location can be set only on a queued image")
        if (body is not None or changes.copy_from is not None) and image.status != "queued":
            raise errors.Conflict("Cannot upload to an image with status %s" % (image.status,))
        # As in Glance: a PUT that carries the image's data purges no
        # properties, so reserving with properties and then uploading with
        # plain curl keeps them.
        purge = changes.purge_properties and body is None
        props = self._checkProtections(ctx, image.properties, changes.properties, purge)
        total = props if purge else {**image.properties, **props}
        self._checkPropertyQuota(len(total))
        plan = await self._planData(changes, body,
                                    fields.get("disk_format", image.disk_format),
                                    fields.get("container_format", image.container_format),
                                    fields.get("size", image.size))
        self._takeSourceSize(changes, plan, fields, fields.get("size", image.size))
        quota = self.config.image_property_quota
        write = _MetadataWrite(fields, props, purge, quota if quota >= 0 else None)
        if body is not None or changes.copy_from is not None or changes.location is not None:
            # Written with the image's change to saving (or, for a
            # location, to active), in one conditional transaction: a
            # request that loses the race for the image then changes
            # nothing, as its 409 says (written first, a loser's
            # disk_format went active with the winner's bytes).
            plan.metadata = write
            return image, plan
        try:
            image = await self.registry.update(
                image.id, fields, props, purgeProperties=purge, expectStatus=[image.status],
                propertyQuota=write.propertyQuota)
        except reg.NotFound:
            raise errors.NotFound("Image not found.")
        except reg.QuotaExceeded as e:
            # Another update added properties since this one looked.
            self._checkPropertyQuota(e.args[0])
            raise
        return image, plan

    # -- bytes in -------------------------------------------------------------

    async def _store(self, image: ImageRecord, source, store,
                     metadata: Optional[_MetadataWrite] = None) -> ImageRecord:
        """
        Move an image from queued to active with the bytes C{source}
        produces, or leave it killed with nothing stored; C{metadata} is
        written as it starts, only if it does.
        """
        self._refuseWhileStopping()
        token = id(source)
        self._uploading[token] = source
        try:
            return await self._storeFrom(image, source, store, metadata)
        finally:
            self._uploading.pop(token, None)

    def _refuseWhileStopping(self) -> None:
        if self._stopping:
            raise _ShuttingDown("The server is shutting down.")

    async def stopUploads(self, grace: float = 30.0) -> None:
        """
        The server is stopping: refuse new uploads, end those under way
        (a client's upload loses its connection), and wait, at most
        C{grace} seconds, until each has killed its image and removed its
        partial bytes.  The registry and the stores still run meanwhile;
        an upload cut off by the process exiting would stay C{saving}
        with its bytes left behind.
        """
        self._stopping = True
        for source in list(self._uploading.values()):
            abort = getattr(source, "abort", None)
            if abort is not None:
                abort()
        deadline = self.reactor.seconds() + grace
        while self._uploading and self.reactor.seconds() < deadline:
            await deferLater(self.reactor, 0.05, lambda: None)
        if self._uploading:
            self.log.warn("{count} uploads still under way at shutdown",
                          count=len(self._uploading))

    async def _storeFrom(self, image: ImageRecord, source, store,
                         metadata: Optional[_MetadataWrite]) -> ImageRecord:
        saving = await self._claim(image, store, metadata)
        try:
            return await self._receive(self._checkedAgainst(image, saving, metadata),
                                       source, store)
        finally:
            self._releaseLease(image.id)

    async def _writeStart(self, image: ImageRecord, metadata: Optional[_MetadataWrite],
                          change: Mapping[str, Any], **options: Any) -> ImageRecord:
        """
        Take a queued image to C{change} (C{saving} for an upload or a
        copy, C{active} at a location) together with the request's
        C{metadata}, in one conditional transaction, so that a request
        that loses the race for the image (409) has changed nothing.
        """
        write = metadata or _MetadataWrite({}, {}, False, None)
        # A purge with no properties is the empty set, not "leave them".
        properties = write.properties if write.purge else (write.properties or None)
        try:
            return await self.registry.update(
                image.id, {**write.fields, **change}, properties,
                purgeProperties=write.purge, expectStatus=["queued"], requireFormats=True,
                propertyQuota=write.propertyQuota, **options)
        except reg.Conflict as e:
            if e.current is not None and e.current.status == "queued":
                raise errors.BadRequest("disk_format and container_format are required when"
                                        " image data is supplied")
            raise errors.Conflict("Image %s is not queued: another upload may be in progress"
                                  % (image.id,))
        except reg.NotFound:
            raise errors.NotFound("Image not found.")
        except reg.QuotaExceeded as e:
            # Another update added properties since this one looked.
            self._checkPropertyQuota(e.args[0])
            raise

    async def _claim(self, image: ImageRecord, store,
                     metadata: Optional[_MetadataWrite]) -> ImageRecord:
        """
        Make a queued image C{saving} for bytes bound for C{store}, with
        this process's upload lease, which it then renews until
        L{_releaseLease}: should the process die, a reaper of any process
        sharing the database kills the image once the lease runs out.
        """
        lease = self.leases.take(image.id, store.name) if self.leases is not None else None
        saving = await self._writeStart(image, metadata, {"status": "saving"}, lease=lease)
        # An upload that lost the race above never held it.
        if lease is not None:
            self.leases.hold(image.id)
        return saving

    def _releaseLease(self, imageId: str) -> None:
        if self.leases is not None:
            self.leases.release(imageId)

    @staticmethod
    def _checkedAgainst(image: ImageRecord, saving: ImageRecord,
                        metadata: Optional[_MetadataWrite]) -> ImageRecord:
        """
        What bytes are checked against (a size or checksum the request
        gave, or a copy's source reported), as the image was before they
        began: image.prepare shows it so.
        """
        return attr.evolve(saving, status=image.status) if metadata is not None else image

    async def _receive(self, image: ImageRecord, source, store) -> ImageRecord:
        """
        The upload proper, once the image is C{saving} for it.
        """
        self.notifier.notify("image.prepare", payloadFor(image))
        share = self.budget.join()
        hasher = (ThreadedMD5(self.reactor, self.cpuPool, share)
                  if self.cpuPool is not None else None)
        verifying = VerifyingBody(source, self.config.image_size_cap,
                                  expectedSize=image.size, expectedChecksum=image.checksum,
                                  hasher=hasher, share=share)
        try:
            stored = await store.add(image.id, verifying)
        except UploadFailed as e:
            await self._uploadFailed(image.id, "upload failed: %s" % (e.message,), store, e)
            raise errors.errorForCode(e.code, e.message)
        except StoreError as e:
            if await self._uploadFailed(image.id, "store error: %s" % (_plain(e),),
                                        store, e) == "killed":
                # A reaper took this process for dead and removed the
                # parts: that failed the store, and a retry would not help.
                raise errors.Conflict(_KILLED_DURING_UPLOAD % (image.id,))
            raise errors.Unavailable("Error storing the image data; the store is unavailable.")
        except BaseException as e:
            await self._uploadFailed(image.id, "unexpected error: %r" % (e,), store, e)
            raise
        finally:
            share.leave()
        try:
            image = await self.registry.update(
                image.id, {"status": "active", "size": stored.size,
                           "checksum": verifying.checksum},
                expectStatus=["saving"], location=stored.location)
        except reg.NotFound:
            # Deleted while its bytes arrived: keep nothing.
            await self._deleteBytes(stored.location, image.id)
            await self._endLease(image.id)
            raise errors.Conflict("Image %s was deleted during the upload." % (image.id,))
        except reg.Conflict:
            # Killed by another process that took this one for dead (its
            # lease ran out while the database could not be reached).
            await self._deleteBytes(stored.location, image.id)
            raise errors.Conflict(_KILLED_DURING_UPLOAD % (image.id,))
        except reg.Unreachable as e:
            # The bytes stay: the activation may have committed after all
            # (see Registry's deadline).  If it did not, the image stays
            # saving until its upload lease runs out.
            self.log.warn("image {image_id} was stored but could not be made active ({error});"
                          " unless it was, a reaper kills it and removes its data once its"
                          " upload lease runs out", image_id=image.id, error=_plain(e))
            raise
        self._activated(image, uploaded=True)
        return image

    async def _uploadFailed(self, imageId: str, why: str, store: Any = None,
                            error: Optional[BaseException] = None,
                            unstarted: bool = False) -> Optional[str]:
        """
        Kill the image of a failed upload (C{unstarted}: see L{_kill}).
        Returns the status that kept it from being killed here, if one did
        (C{killed}: by another process; C{deleted}).
        """
        swept = (getattr(store, "sweptAfterFailure", False)
                 or getattr(error, "leftInStore", False))
        reminder = None
        if swept and self.leases is not None:
            # The store removes the parts itself, retrying while it cannot be
            # reached, but only for a while and only in this process: a store
            # down for longer (or a restart) left them for good.  So the
            # kill leaves a reminder for a reaper, in the same commit.
            reminder = reg.UploadLease(
                imageId, reg.SWEEP_HOLDER,
                self.leases.now() + datetime.timedelta(seconds=SWEEP_DELAY), store.name)
        kept = await self._kill(imageId, why, reminder, unstarted)
        if kept != "deleted":
            # Glance's ERROR notification: the payload is the message.  None
            # for an upload or copy that a delete ended: that is no failure
            # (it said "store error: ...: the image was deleted").
            self.notifier.notify("image.upload", withoutLocations("Image %s %s" % (imageId, why)),
                                 "ERROR")
        if swept:
            # Where the kill did not happen here (the image was deleted, or
            # killed by a reaper, meanwhile): unless one is there already.
            await self._sweepLater(imageId, store.name)
        return kept

    async def _sweepLater(self, imageId: str, storeName: str) -> None:
        """
        Have a reaper (of any process) make sure, in L{SWEEP_DELAY}
        seconds, that nothing of a failed upload of C{imageId} is left in
        the store.
        """
        if self.leases is None:
            return
        at = self.leases.now() + datetime.timedelta(seconds=SWEEP_DELAY)
        try:
            await self.registry.sweepLater(imageId, storeName, at)
        except Exception as e:
            self.log.warn("could not leave a reminder to remove what the failed upload of"
                          " image {image_id} may have left in the {store} store: {error}",
                          image_id=imageId, store=storeName, error=_plain(e))

    async def _kill(self, imageId: str, why: str,
                    reminder: Optional[reg.UploadLease] = None,
                    unstarted: bool = False) -> Optional[str]:
        """
        Kill an image this process's upload or copy made C{saving}.  Only
        C{saving}: nothing else can have taken it from there but a reaper
        or a delete, whereas a queued image may be another client's to
        upload (a failed copy that still found it queued once killed the
        upload that had begun meanwhile).  Or, C{unstarted}, the queued
        image of a create whose data was refused: no one else was told
        its id, so nothing else can have begun its upload.

        Returns the status that kept the image from being killed here, if
        one did.
        """
        # Redacted as the notification is: an unexpected error's repr may
        # quote a location.
        try:
            await self.registry.update(imageId, {"status": "killed"},
                                       expectStatus=["queued" if unstarted else "saving"],
                                       lease=reminder)
        except reg.Conflict as e:
            return e.current.status if e.current is not None else None
        except reg.NotFound:
            await self._endLease(imageId)
            return "deleted"
        except reg.Unreachable:
            # Its upload lease, no longer renewed, runs out, and a reaper
            # kills it once the database is back; an unstarted one has none.
            self.log.warn("image {image_id} could not be marked killed ({why}): the"
                          " database is unreachable; {then}", image_id=imageId,
                          why=withoutLocations(why), then="it stays queued with no data"
                          if unstarted else "it will be once its upload lease runs out")
            return None
        self.log.info("image {image_id} killed: {why}", image_id=imageId,
                      why=withoutLocations(why))
        return None

    async def _endLease(self, imageId: str) -> None:
        """
        An upload ended on an image deleted meanwhile, having removed what
        it stored: no status change ended its lease, so end it here, or
        this process would go on renewing it.  If the registry cannot be
        reached, the lease runs out later, and its reaper finds nothing
        left to remove.
        """
        if self.leases is None:
            return
        try:
            await self.registry.endUpload(imageId, self.leases.holder)
        except Exception as e:
            self.log.warn("could not end the upload lease of deleted image {image_id}:"
                          " {error}", image_id=imageId, error=_plain(e))

    async def _deleteBytes(self, location: Optional[str], imageId: str = "",
                           retryInBackground: bool = True,
                           unreachable: Optional[Dict[str, int]] = None) -> bool:
        """
        Remove an image's bytes, as far as the store lets us now.  Bytes
        already gone are what was wanted.  If the store fails, a deleted
        image that still records these bytes goes back to
        C{pending_delete}, so that a scrubber (of any server, after a
        restart too) tries again, as Glance's scrubber did; if it cannot
        be reached, the store meanwhile retries for a while in the
        background, unless C{retryInBackground} is false (the scrubber is
        itself the retry).  (Before, bytes whose store stayed down past
        those retries, or refused the delete, were left behind for good.)

        C{unreachable}, one scrub's record of the stores it found down (by
        name, with how many images it then put back untried): such a store
        is not tried again in that scrub.

        Returns whether the bytes are gone (or were none).
        """
        if not location:
            return True
        store = None
        try:
            store = self._storeFor(location)
            if unreachable is not None and store.name in unreachable:
                if await self._requeueDelete(imageId, location):
                    unreachable[store.name] += 1
                return False
            if store.writable:
                await store.delete(location)
            return True
        except LocationNotFound:
            return True
        except Exception as e:
            self.log.warn("could not delete the data of image {image_id} from the"
                          " {store} store: {error}", image_id=imageId,
                          store=getattr(store, "name", "?"), error=_plain(e))
            if isinstance(e, StoreUnavailable):
                if unreachable is not None:
                    unreachable[store.name] = 0
                if retryInBackground and hasattr(store, "deleteLater"):
                    store.deleteLater(location)
            if imageId and await self._requeueDelete(imageId, location):
                self.log.info("image {image_id} is pending_delete again: the scrubber will"
                              " try again to remove its data", image_id=imageId)
            return False

    async def _removeDeletedBytes(self, imageId: str, location: str, **kw: Any) -> bool:
        """
        Remove the bytes of a deleted image this process claimed (see
        L{_deleteBytes}), and record that they are gone; until then a
        scrubber that finds the claim stale tries again.  Returns whether
        they are gone.
        """
        if not await self._deleteBytes(location, imageId, **kw):
            return False
        try:
            await self.registry.forgetDeletedBytes(imageId, location)
        except Exception as e:
            self.log.warn("the data of image {image_id} is removed, but the registry could"
                          " not record it ({error}): a scrubber will find it gone later",
                          image_id=imageId, error=_plain(e))
        return True

    async def _requeueDelete(self, imageId: str, location: str) -> bool:
        try:
            return await self.registry.requeueDelete(imageId, location)
        except Exception as e:
            self.log.warn("could not put image {image_id} back in pending_delete: {error}",
                          image_id=imageId, error=_plain(e))
            return False

    async def _register(self, image: ImageRecord, location: str, size: int,
                        metadata: Optional[_MetadataWrite] = None) -> ImageRecord:
        image = await self._writeStart(image, metadata, {"status": "active", "size": size},
                                       location=location)
        self._activated(image)
        return image

    def _activated(self, image: ImageRecord, uploaded: bool = False) -> None:
        """
        Glance v1's events of an image made active: C{image.upload} for
        bytes it stored, then C{image.activate} and C{image.update} (the
        active image, with its size, which Ceilometer's image.size meter
        reads from C{image.upload} and C{image.update}).
        """
        events = ("image.upload",) if uploaded else ()
        for event in events + ("image.activate", "image.update"):
            self.notifier.notify(event, payloadFor(image))

    async def _beginCopy(self, image: ImageRecord, source: str, sourceStore, store,
                         metadata: Optional[_MetadataWrite]) -> ImageRecord:
        """
        Make the image C{saving} for a copy from C{source}, with this
        process's upload lease, before answering; then copy in the
        background.  (Claimed only once the source began to send, the
        image stayed C{queued} meanwhile: an upload could take it, which
        the copy, failing, then killed; and a copy whose process died
        left it queued for ever, with no lease for a reaper to find.)
        """
        self._refuseWhileStopping()
        saving = await self._claim(image, store, metadata)
        copying = Deferred.fromCoroutine(self._copy(
            self._checkedAgainst(image, saving, metadata), source, sourceStore, store))
        self.background.append(copying)
        copying.addBoth(lambda _: self.background.remove(copying))
        return saving

    async def _copy(self, image: ImageRecord, source: str, sourceStore, store) -> None:
        token = object()
        self._copying[image.id] = token
        try:
            try:
                fetching = ensureDeferred(sourceStore.get(source))
                self._uploading[token] = _Fetching(fetching)
                producer = await fetching
            except Exception as e:
                await self._uploadFailed(
                    image.id, "the server stopped before the copy began"
                    if self._stopping else "copy-from source unreadable: %s" % (e,))
                return
            if self._stopping:
                getattr(producer, "abort", lambda: None)()
                await self._uploadFailed(image.id, "the server stopped before the copy began")
                return
            self._uploading[token] = producer
            try:
                await self._receive(image, producer, store)
            except errors.APIError as e:
                self.log.info("copy-from for {image_id} failed: {error}",
                              image_id=image.id, error=e.message)
            except Exception:
                self.log.failure("copy-from for {image_id} failed", image_id=image.id)
        finally:
            self._uploading.pop(token, None)
            if self._copying.get(image.id) is token:
                del self._copying[image.id]
            self._releaseLease(image.id)

    def _abortCopy(self, imageId: str) -> None:
        """
        Stop this process's copy of an image just deleted: it would fetch
        its whole source, up to image_size_cap, for nothing.  (A copy in
        another process fetches on, and removes what it stored when its
        activation finds the image gone.)
        """
        source = self._uploading.get(self._copying.get(imageId))
        abort = getattr(source, "abort", None)
        if abort is not None:
            abort("the image was deleted")

    # -- delete ---------------------------------------------------------------

    @fromCoroutine
    async def delete(self, ctx: RequestContext, imageId: str) -> ImageRecord:
        self._writeAllowed(ctx)
        image = await self._visible(ctx, imageId)
        self._ownerOrAdmin(ctx, image)
        self._enforce(ctx, "delete_image", image)
        if image.protected:
            raise errors.Forbidden("Image is protected; it cannot be deleted.")
        try:
            # An image with bytes is pending_delete first, even when they
            # are removed at once: should the database commit this but
            # answer too late, a scrubber still finds them.
            image, _ = await self.registry.delete(imageId, delayed=True)
        except reg.NotFound:
            raise errors.NotFound("Image not found.")
        except reg.Protected:
            raise errors.Forbidden("Image is protected; it cannot be deleted.")
        self._abortCopy(imageId)
        if image.status == "pending_delete" and not self.config.delayed_delete:
            await self._deleteNow(imageId)
            image = attr.evolve(image, status="deleted")
        self.notifier.notify("image.delete", payloadFor(image))
        return image

    async def _deleteNow(self, imageId: str) -> None:
        """
        Take a just-deleted image's bytes from C{pending_delete} and remove
        them.  The delete is committed whatever happens here: if the
        database cannot be reached, the scrubber removes them later.
        """
        try:
            location = await self.registry.claimPendingDelete(imageId)
        except reg.Unreachable as e:
            self.log.warn("image {image_id} is deleted; its data waits for the scrubber,"
                          " since the registry could not be reached: {error}",
                          image_id=imageId, error=_plain(e))
            return
        # None: another process's scrubber claimed them first.
        if location is not None:
            await self._removeDeletedBytes(imageId, location)

    @fromCoroutine
    async def killAbandonedUploads(self) -> int:
        """
        Kill the images whose upload's process died (its lease ran out), as
        a failed upload would have, and remove what it stored.  Returns how
        many were killed.
        """
        if self.leases is None:
            return 0
        # A lease that ran out while the database could not be reached says
        # nothing of its holder: until this reaper has reached the database
        # twice in a row, it only looks.
        limit = REAP_LIMIT if self._reapsInARow >= 2 else 0
        # Each lease ended here stays as a reminder until what its upload
        # stored is removed: should this process die before, another
        # reaper removes it once the reminder runs out.
        claimUntil = self.leases.now() + datetime.timedelta(seconds=SWEEP_DELAY)
        try:
            ended = await self.registry.killAbandonedUploads(self.leases.now(), limit,
                                                             claimUntil)
        except BaseException:
            self._reapsInARow = 0
            raise
        self._reapsInARow += 1
        count = 0
        for lease, imageKilled in ended:
            if imageKilled:
                why = ("upload abandoned: its upload lease ran out (the process receiving"
                       " it stopped, or could not reach the database)")
                self.log.info("image {image_id} killed: {why}", image_id=lease.image_id, why=why)
                self.notifier.notify("image.upload", "Image %s %s" % (lease.image_id, why),
                                     "ERROR")
                count += 1
            # Killed here, or deleted while its upload ran: either way
            # what the upload stored is this reaper's to remove.
            if await self._removeAbandoned(lease.store, lease.image_id):
                await self._endReminder(lease.image_id)
        return count

    async def _removeAbandoned(self, storeName: str, imageId: str) -> bool:
        """
        Remove what an abandoned upload of C{imageId} left in a store.
        Returns whether that is over (done, or not to be tried again);
        False: the store could not be reached, and the image's reminder
        stays, for a reaper to try again when it runs out, whatever
        restarts come between.
        """
        store = self.stores.get(storeName)
        if store is None:
            self.log.warn("image {image_id}'s abandoned upload went to the {store} store,"
                          " which this server does not have: whatever it left there stays",
                          image_id=imageId, store=storeName)
            return True
        try:
            await store.removeAbandoned(imageId, retry=False)
        except Exception as e:
            self.log.warn("could not remove what an abandoned upload of image {image_id}"
                          " left in the {store} store: {error}", image_id=imageId,
                          store=storeName, error=_plain(e))
            return not isinstance(e, StoreUnavailable)
        return True

    async def _endReminder(self, imageId: str) -> None:
        try:
            await self.registry.endUpload(imageId, reg.SWEEP_HOLDER)
        except Exception as e:
            # It runs out, and a reaper then finds nothing left to remove.
            self.log.info("could not end the sweep reminder of image {image_id}: {error}",
                          image_id=imageId, error=_plain(e))

    @fromCoroutine
    async def scrub(self) -> int:
        """
        Remove the bytes of images deleted (with C{delayed_delete}) more
        than C{scrub_time} seconds ago; Glance's scrubber, run in-process.
        Without C{delayed_delete}, an image is pending_delete only because
        its store could not be reached when it was deleted: it is retried
        at once.  Returns how many images were scrubbed.

        Every image due is tried, a page at a time (one page a wakeup fell
        behind for good once more images were deleted between wakeups than
        a page holds), but a store found unreachable is tried once a run:
        each try would wait out its timeouts, and the images of other
        stores behind them with it.
        """
        wait = self.config.scrub_time if self.config.delayed_delete else 0
        now = datetime.datetime.utcnow()
        before = now - datetime.timedelta(seconds=wait)
        stale = await self.registry.requeueStaleRemovals(
            now - datetime.timedelta(seconds=self.removalClaimSeconds))
        if stale:
            self.log.info("{count} deleted images whose data a scrubber claimed and never"
                          " removed (its server stopped?) are pending_delete again",
                          count=stale)
        done = 0
        unreachable: Dict[str, int] = {}
        after = None
        # Only images whose stores this server has: those of a store taken
        # out of C{stores} (or one only other servers have) were claimed
        # and put back, two writes each every run, with nothing removed.
        schemes = sorted({s for store in self.stores.values() for s in store.schemes})
        while True:
            page = await self.registry.pendingDeletes(before, self.scrubBatch, after, schemes)
            if not page or self._stopping:
                break
            for after in page:
                if self._stopping:
                    # Shutdown waits for this run: it ends with this image.
                    break
                imageId = after[1]
                location = await self.registry.claimPendingDelete(imageId)
                if location is None:
                    continue
                if await self._removeDeletedBytes(imageId, location, retryInBackground=False,
                                                  unreachable=unreachable):
                    done += 1
        if done:
            self.log.info("scrubbed {count} deleted images", count=done)
        for name, waiting in unreachable.items():
            if waiting:
                self.log.warn("{count} more deleted images wait for the {store} store,"
                              " which could not be reached", count=waiting, store=name)
        if not self._stopping:
            await self._warnOfRemovalsElsewhere(before, schemes)
        return done

    async def _warnOfRemovalsElsewhere(self, before: datetime.datetime,
                                       schemes: List[str]) -> None:
        count, scheme = await self.registry.pendingDeletesElsewhere(before, schemes)
        if count:
            # Only a scheme's name is said: a location may hold credentials.
            self.log.warn("{count} deleted images wait for a server with the store of their"
                          " locations ({scheme}, for one), which this server does not have",
                          count=count,
                          scheme=scheme + "://" if scheme and _SCHEME.fullmatch(scheme)
                          else "?")

    # -- members -------------------------------------------------------------

    @fromCoroutine
    async def members(self, ctx: RequestContext, imageId: str) -> List[MemberRecord]:
        image = await self._visible(ctx, imageId)
        self._enforce(ctx, "get_members", image)
        members = await self.registry.members(imageId)
        if self._seesAllMembers(ctx, image):
            return members
        return [m for m in members if m.member == ctx.tenant]

    @staticmethod
    def _seesAllMembers(ctx: RequestContext, image: ImageRecord) -> bool:
        """
        Who may see every membership of C{image}: its owner and admins.
        Anyone else sees only its own, as in Glance, so a member does not
        learn who else the image is shared with.
        """
        return ctx.is_admin or (ctx.tenant is not None and image.owner == ctx.tenant)

    @fromCoroutine
    async def member(self, ctx: RequestContext, imageId: str, member: str) -> MemberRecord:
        image = await self._visible(ctx, imageId)
        self._enforce(ctx, "get_member", image)
        if member != ctx.tenant and not self._seesAllMembers(ctx, image):
            raise errors.NotFound("Member not found.")
        try:
            return await self.registry.member(imageId, member)
        except reg.NotFound:
            raise errors.NotFound("Member not found.")

    async def _mayShare(self, ctx: RequestContext, image: ImageRecord,
                        ownerOnly: bool) -> Optional[str]:
        """
        Refuse a caller who may not change C{image}'s members.

        @return: the member whose C{can_share} allows it, to be checked
            again as the change is made; C{None} for the owner or an admin.
        """
        self._writeAllowed(ctx)
        if ctx.is_admin or (ctx.tenant is not None and image.owner == ctx.tenant):
            return None
        if not ownerOnly and ctx.tenant is not None:
            try:
                me = await self.registry.member(image.id, ctx.tenant)
            except reg.NotFound:
                me = None
            if me is not None and me.can_share:
                return ctx.tenant
        raise errors.Forbidden("You are not permitted to share this image.")

    @fromCoroutine
    async def replaceMembers(self, ctx: RequestContext, imageId: str,
                             members: Mapping[str, Optional[bool]]) -> None:
        image = await self._visible(ctx, imageId)
        await self._mayShare(ctx, image, ownerOnly=True)
        self._enforce(ctx, "modify_member", image)
        # The whole list is held to add_member and delete_member for what
        # it adds and drops, as one member at a time would be.
        target, creds = _target(image), credsFor(ctx)
        try:
            await self.registry.replaceMembers(
                imageId, members, self._memberQuota(),
                mayAdd=self.policy.enforce("add_member", target, creds),
                mayRemove=self.policy.enforce("delete_member", target, creds))
        except reg.QuotaExceeded:
            raise errors.TooLarge("The limit of %d members for an image has been exceeded."
                                  % (self.config.image_member_quota,))
        except reg.MembersRefused as e:
            rule = "add_member" if e.args[0] == "add" else "delete_member"
            raise errors.Forbidden("You are not authorized to complete %s action." % (rule,))
        except reg.NotFound:
            raise errors.NotFound("Image not found.")

    def _memberQuota(self) -> int:
        q = self.config.image_member_quota
        return q if q >= 0 else 2 ** 31

    @fromCoroutine
    async def addMember(self, ctx: RequestContext, imageId: str, member: str,
                        canShare: Optional[bool]) -> None:
        image = await self._visible(ctx, imageId)
        sharer = await self._mayShare(ctx, image, ownerOnly=False)
        # Glance v1 governed adding one member, as replacing them all, by
        # modify_member; add_member (v2's name) is honoured as well.
        self._enforce(ctx, "modify_member", image)
        self._enforce(ctx, "add_member", image)
        try:
            await self.registry.addMember(imageId, member, canShare, self._memberQuota(),
                                          sharer=sharer)
        except reg.MembersRefused:
            raise errors.Forbidden("You are not permitted to share this image.")
        except reg.NotFound:
            raise errors.NotFound("Image not found.")
        except reg.QuotaExceeded:
            raise errors.TooLarge("The limit of %d members for an image has been exceeded."
                                  % (self.config.image_member_quota,))
        except reg.Conflict:
            raise errors.Conflict("The member was changed concurrently; try again.")

    @fromCoroutine
    async def deleteMember(self, ctx: RequestContext, imageId: str, member: str) -> None:
        image = await self._visible(ctx, imageId)
        await self._mayShare(ctx, image, ownerOnly=True)
        self._enforce(ctx, "delete_member", image)
        try:
            await self.registry.deleteMember(imageId, member)
        except reg.NotFound:
            raise errors.NotFound("Member not found.")

    @fromCoroutine
    async def sharedImages(self, ctx: RequestContext, member: str) -> List[MemberRecord]:
        if ctx.is_admin or member == ctx.tenant:
            return await self.registry.sharedWith(member)
        # Someone asking about another tenant learns only of the images it
        # shared with that tenant itself (see _seesAllMembers): its own
        # images, which it sees whatever their visibility.
        if ctx.tenant is None:
            return []
        return await self.registry.sharedWith(member, owner=ctx.tenant)
