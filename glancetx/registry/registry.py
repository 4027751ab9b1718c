"""
Image metadata in SQL, reached only through alchimia so that no query
blocks the reactor.

Every alchimia call in the project lives in this folder.  The registry keeps
a few long-lived alchimia connections (each with its own worker thread) and
hands one to each unit of work; races between processes are settled by
conditional UPDATEs, never by state held in this process.
"""

import datetime
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import attr
import sqlalchemy
from alchimia import TWISTED_STRATEGY
from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from twisted.internet.defer import DeferredQueue
from twisted.logger import Logger

from glancetx.asyncutil import fromCoroutine
from glancetx.registry.schema import image_members, image_properties, images

#: Columns of the images table callers may read and write (not location,
#: which is read with L{Registry.getLocation} only).
IMAGE_FIELDS = (
    "id", "name", "disk_format", "container_format", "size", "virtual_size",
    "status", "is_public", "checksum", "min_disk", "min_ram", "owner",
    "protected", "created_at", "updated_at", "deleted_at", "deleted",
)

#: Sort keys a list may use, and the expression it sorts on.  Nullable
#: columns are coalesced so that paging with a marker is a plain comparison
#: on every database.
SORT_KEYS = {
    "id": images.c.id,
    "name": func.coalesce(images.c.name, ""),
    "status": images.c.status,
    "disk_format": func.coalesce(images.c.disk_format, ""),
    "container_format": func.coalesce(images.c.container_format, ""),
    "size": func.coalesce(images.c.size, -1),
    "created_at": images.c.created_at,
    "updated_at": func.coalesce(images.c.updated_at, images.c.created_at),
}


class NotFound(Exception):
    """
    No such image (or member), or it is deleted.
    """


class Conflict(Exception):
    """
    A unique key is taken (an image id that exists) or the row was not in
    the state the conditional update required.
    """


def _now() -> datetime.datetime:
    return datetime.datetime.utcnow()


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ImageRecord:
    """
    One image's metadata as the registry holds it (never its location).
    """

    id: str
    name: Optional[str]
    disk_format: Optional[str]
    container_format: Optional[str]
    size: Optional[int]
    virtual_size: Optional[int]
    status: str
    is_public: bool
    checksum: Optional[str]
    min_disk: int
    min_ram: int
    owner: Optional[str]
    protected: bool
    created_at: datetime.datetime
    updated_at: Optional[datetime.datetime]
    deleted_at: Optional[datetime.datetime]
    deleted: bool
    properties: Mapping[str, str] = attr.ib(factory=dict)

    def fields(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in IMAGE_FIELDS}


@attr.s(frozen=True, slots=True, auto_attribs=True)
class MemberRecord:
    image_id: str
    member: str
    can_share: bool


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ListQuery:
    """
    What a list asks for; built and validated by the web layer.
    """

    filters: Mapping[str, Any] = attr.ib(factory=dict)
    properties: Mapping[str, str] = attr.ib(factory=dict)
    changes_since: Optional[datetime.datetime] = None
    marker: Optional[str] = None
    limit: int = 25
    sort_key: str = "created_at"
    sort_dir: str = "desc"
    #: None: everything (an admin's is_public=none).  Otherwise the tenant
    #: whose view to take: public, owned by it, or shared with it.
    visible_to: Optional[str] = None
    restrict_to_visible: bool = False
    #: True/False filters on is_public after visibility.
    is_public: Optional[bool] = None


def _row(row) -> Dict[str, Any]:
    return {name: row[name] for name in IMAGE_FIELDS}


class _ConnectionPool:
    """
    A fixed number of alchimia connections, lent out one unit of work at a
    time.  A connection that raised a database error is closed and replaced
    rather than returned, since it may be broken.
    """

    def __init__(self, engine, size: int) -> None:
        self._engine = engine
        self._idle: DeferredQueue = DeferredQueue()
        self._size = size
        self._made = 0
        self._all: List[Any] = []

    async def acquire(self):
        if not self._idle.pending and self._made < self._size:
            self._made += 1
            try:
                conn = await self._engine.connect()
            except BaseException:
                self._made -= 1
                raise
            self._all.append(conn)
            return conn
        return await self._idle.get()

    def release(self, conn, broken: bool = False) -> None:
        if broken:
            self._made -= 1
            self._all.remove(conn)
            conn.close().addErrback(lambda f: None)
            return
        self._idle.put(conn)

    async def closeAll(self) -> None:
        conns, self._all = self._all, []
        for conn in conns:
            try:
                await conn.close()
            except Exception:
                pass


class _Unit:
    """
    An async context manager: one pooled connection inside one transaction,
    committed on success and rolled back on any error.
    """

    def __init__(self, pool: _ConnectionPool) -> None:
        self._pool = pool

    async def __aenter__(self):
        self._conn = await self._pool.acquire()
        try:
            self._tx = await self._conn.begin()
        except BaseException:
            self._pool.release(self._conn, broken=True)
            raise
        return self._conn

    async def __aexit__(self, excType, exc, tb):
        broken = False
        try:
            if excType is None:
                await self._tx.commit()
            else:
                await self._tx.rollback()
                broken = isinstance(exc, DBAPIError) and exc.connection_invalidated
        except BaseException:
            broken = True
            raise
        finally:
            self._pool.release(self._conn, broken=broken)
        return False


class Registry:
    """
    The image catalogue.  Every method returns a Deferred.
    """

    log = Logger()

    def __init__(self, url: str, reactor, poolSize: Optional[int] = None) -> None:
        kwargs: Dict[str, Any] = {}
        if url.startswith("sqlite"):
            # One connection: SQLite serialises writers anyway, and one
            # worker thread means no "database is locked" retries.
            poolSize = 1
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            kwargs["poolclass"] = sqlalchemy.pool.StaticPool
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["pool_recycle"] = 3600
        self._engine = sqlalchemy.create_engine(
            url, strategy=TWISTED_STRATEGY, reactor=reactor, **kwargs
        )
        self._pool = _ConnectionPool(self._engine, poolSize or 4)
        self.url = url

    def _unit(self) -> _Unit:
        return _Unit(self._pool)

    @fromCoroutine
    async def close(self) -> None:
        await self._pool.closeAll()

    # -- images ---------------------------------------------------------

    @fromCoroutine
    async def create(self, values: Mapping[str, Any], properties: Mapping[str, str],
                     location: Optional[str] = None) -> ImageRecord:
        now = _now()
        row = {
            "is_public": False, "protected": False, "min_disk": 0, "min_ram": 0,
            "deleted": False, "created_at": now, "updated_at": now,
        }
        row.update(values)
        row["location"] = location
        async with self._unit() as conn:
            try:
                await conn.execute(images.insert().values(**row))
            except IntegrityError:
                raise Conflict("an image with this id exists")
            await self._insertProperties(conn, row["id"], properties, now)
            return await self._get(conn, row["id"])

    async def _insertProperties(self, conn, imageId: str,
                                properties: Mapping[str, str], now) -> None:
        if properties:
            await conn.execute(image_properties.insert(), [
                {"image_id": imageId, "name": k, "value": v, "created_at": now,
                 "updated_at": now, "deleted": False}
                for k, v in properties.items()
            ])

    async def _get(self, conn, imageId: str, includeDeleted: bool = False) -> ImageRecord:
        q = select([images]).where(images.c.id == imageId)
        if not includeDeleted:
            q = q.where(images.c.deleted == False)  # noqa: E712
        result = await conn.execute(q)
        row = await result.first()
        if row is None:
            raise NotFound(imageId)
        props = await self._properties(conn, [imageId])
        return ImageRecord(properties=props.get(imageId, {}), **_row(row))

    async def _properties(self, conn, imageIds: Sequence[str]) -> Dict[str, Dict[str, str]]:
        if not imageIds:
            return {}
        q = select([image_properties.c.image_id, image_properties.c.name,
                    image_properties.c.value]).where(
            and_(image_properties.c.image_id.in_(list(imageIds)),
                 image_properties.c.deleted == False))  # noqa: E712
        result = await conn.execute(q)
        out: Dict[str, Dict[str, str]] = {}
        for imageId, name, value in await result.fetchall():
            out.setdefault(imageId, {})[name] = value
        return out

    @fromCoroutine
    async def get(self, imageId: str, includeDeleted: bool = False) -> ImageRecord:
        async with self._unit() as conn:
            return await self._get(conn, imageId, includeDeleted)

    @fromCoroutine
    async def getLocation(self, imageId: str) -> Optional[str]:
        async with self._unit() as conn:
            result = await conn.execute(
                select([images.c.location]).where(images.c.id == imageId))
            row = await result.first()
            return None if row is None else row[0]

    @fromCoroutine
    async def update(self, imageId: str, values: Mapping[str, Any],
                     properties: Optional[Mapping[str, str]] = None,
                     purgeProperties: bool = False,
                     expectStatus: Optional[Iterable[str]] = None,
                     location: Any = attr.NOTHING) -> ImageRecord:
        """
        Change an image's fields and properties in one transaction.

        @param expectStatus: when given, the update happens only if the
            image's status is one of these at that moment (a conditional
            UPDATE); otherwise L{Conflict}.
        @param properties: properties to set; with C{purgeProperties}, also
            the complete new set (others are removed).
        """
        now = _now()
        row = dict(values)
        row["updated_at"] = now
        if location is not attr.NOTHING:
            row["location"] = location
        async with self._unit() as conn:
            cond = and_(images.c.id == imageId, images.c.deleted == False)  # noqa: E712
            if expectStatus is not None:
                cond = and_(cond, images.c.status.in_(list(expectStatus)))
            result = await conn.execute(images.update().where(cond).values(**row))
            if result.rowcount == 0:
                # Tell a missing image from one in the wrong state.
                await self._get(conn, imageId)
                raise Conflict("image is not in a state that allows this")
            if properties is not None:
                await self._setProperties(conn, imageId, properties, purgeProperties, now)
            return await self._get(conn, imageId)

    async def _setProperties(self, conn, imageId, properties, purge, now) -> None:
        current = (await self._properties(conn, [imageId])).get(imageId, {})
        # Rows soft-deleted with an image never come back, so only live rows
        # matter; a stale deleted row with the same name is cleared first.
        await conn.execute(image_properties.delete().where(and_(
            image_properties.c.image_id == imageId,
            image_properties.c.deleted == True)))  # noqa: E712
        if purge:
            gone = [k for k in current if k not in properties]
            if gone:
                await conn.execute(image_properties.delete().where(and_(
                    image_properties.c.image_id == imageId,
                    image_properties.c.name.in_(gone))))
        for name, value in properties.items():
            if name in current:
                if current[name] != value:
                    await conn.execute(image_properties.update().where(and_(
                        image_properties.c.image_id == imageId,
                        image_properties.c.name == name)).values(value=value, updated_at=now))
            else:
                await self._insertProperties(conn, imageId, {name: value}, now)

    @fromCoroutine
    async def delete(self, imageId: str, status: str = "deleted") -> ImageRecord:
        """
        Soft-delete an image with its properties and members.
        """
        now = _now()
        async with self._unit() as conn:
            result = await conn.execute(images.update().where(and_(
                images.c.id == imageId, images.c.deleted == False)).values(  # noqa: E712
                deleted=True, deleted_at=now, updated_at=now, status=status))
            if result.rowcount == 0:
                raise NotFound(imageId)
            for table in (image_properties, image_members):
                await conn.execute(table.update().where(and_(
                    table.c.image_id == imageId, table.c.deleted == False)).values(  # noqa: E712
                    deleted=True, deleted_at=now))
            return await self._get(conn, imageId, includeDeleted=True)

    # -- lists ------------------------------------------------------------

    def _visibility(self, tenant: Optional[str]):
        shared = select([image_members.c.image_id]).where(and_(
            image_members.c.member == tenant,
            image_members.c.deleted == False))  # noqa: E712
        clauses = [images.c.is_public == True]  # noqa: E712
        if tenant is not None:
            clauses.append(images.c.owner == tenant)
            clauses.append(images.c.id.in_(shared))
        return or_(*clauses)

    @fromCoroutine
    async def isVisible(self, imageId: str, tenant: Optional[str]) -> bool:
        """
        Whether a non-admin of C{tenant} may see the image at all.
        """
        async with self._unit() as conn:
            result = await conn.execute(select([images.c.id]).where(and_(
                images.c.id == imageId, self._visibility(tenant))))
            return (await result.first()) is not None

    @fromCoroutine
    async def list(self, query: ListQuery) -> List[ImageRecord]:
        """
        One page of images, ordered by the sort key then id, with their
        properties fetched in one more query.

        @raise NotFound: the marker is not an image this caller can see.
        """
        cond = []
        if query.changes_since is not None:
            cond.append(images.c.updated_at >= query.changes_since)
        else:
            cond.append(images.c.deleted == False)  # noqa: E712
        if query.restrict_to_visible:
            cond.append(self._visibility(query.visible_to))
        if query.is_public is not None:
            cond.append(images.c.is_public == query.is_public)
        for name, value in query.filters.items():
            if name == "size_min":
                cond.append(images.c.size >= value)
            elif name == "size_max":
                cond.append(images.c.size <= value)
            else:
                cond.append(images.c[name] == value)
        for name, value in query.properties.items():
            cond.append(exists().where(and_(
                image_properties.c.image_id == images.c.id,
                image_properties.c.name == name,
                image_properties.c.value == value,
                image_properties.c.deleted == False)))  # noqa: E712
        key = SORT_KEYS[query.sort_key]
        desc = query.sort_dir == "desc"
        async with self._unit() as conn:
            if query.marker is not None:
                mcond = [images.c.id == query.marker]
                if query.restrict_to_visible:
                    mcond.append(self._visibility(query.visible_to))
                result = await conn.execute(
                    select([key.label("k"), images.c.id]).where(and_(*mcond)))
                marker = await result.first()
                if marker is None:
                    raise NotFound(query.marker)
                mkey, mid = marker[0], marker[1]
                if desc:
                    cond.append(or_(key < mkey, and_(key == mkey, images.c.id < mid)))
                else:
                    cond.append(or_(key > mkey, and_(key == mkey, images.c.id > mid)))
            order = [key.desc(), images.c.id.desc()] if desc else [key.asc(), images.c.id.asc()]
            q = select([images]).where(and_(*cond)).order_by(*order).limit(query.limit)
            result = await conn.execute(q)
            rows = [_row(r) for r in await result.fetchall()]
            props = await self._properties(conn, [r["id"] for r in rows])
        return [ImageRecord(properties=props.get(r["id"], {}), **r) for r in rows]

    # -- members ------------------------------------------------------------

    @fromCoroutine
    async def members(self, imageId: str) -> List[MemberRecord]:
        async with self._unit() as conn:
            return await self._members(conn, imageId)

    async def _members(self, conn, imageId: str) -> List[MemberRecord]:
        result = await conn.execute(select([
            image_members.c.member, image_members.c.can_share]).where(and_(
                image_members.c.image_id == imageId,
                image_members.c.deleted == False)).order_by(  # noqa: E712
                image_members.c.member))
        return [MemberRecord(imageId, m, bool(c)) for m, c in await result.fetchall()]

    @fromCoroutine
    async def member(self, imageId: str, member: str) -> MemberRecord:
        for m in await self.members(imageId):
            if m.member == member:
                return m
        raise NotFound(member)

    @fromCoroutine
    async def replaceMembers(self, imageId: str, members: Mapping[str, bool],
                             quota: int) -> None:
        """
        Make the member list exactly C{members} (member → can_share).
        """
        now = _now()
        async with self._unit() as conn:
            await self._purgeDeletedMembers(conn, imageId)
            current = {m.member: m.can_share for m in await self._members(conn, imageId)}
            if len(members) > quota:
                raise QuotaExceeded("too many members")
            gone = [m for m in current if m not in members]
            if gone:
                await conn.execute(image_members.delete().where(and_(
                    image_members.c.image_id == imageId,
                    image_members.c.member.in_(gone))))
            for member, canShare in members.items():
                if member in current:
                    if current[member] != canShare:
                        await conn.execute(image_members.update().where(and_(
                            image_members.c.image_id == imageId,
                            image_members.c.member == member)).values(
                            can_share=canShare, updated_at=now))
                else:
                    await conn.execute(image_members.insert().values(
                        image_id=imageId, member=member, can_share=canShare,
                        status="accepted", created_at=now, updated_at=now, deleted=False))

    async def _purgeDeletedMembers(self, conn, imageId: str) -> None:
        await conn.execute(image_members.delete().where(and_(
            image_members.c.image_id == imageId,
            image_members.c.deleted == True)))  # noqa: E712

    @fromCoroutine
    async def addMember(self, imageId: str, member: str, canShare: Optional[bool],
                        quota: int) -> None:
        now = _now()
        async with self._unit() as conn:
            await self._purgeDeletedMembers(conn, imageId)
            current = {m.member: m.can_share for m in await self._members(conn, imageId)}
            if member in current:
                if canShare is not None:
                    await conn.execute(image_members.update().where(and_(
                        image_members.c.image_id == imageId,
                        image_members.c.member == member)).values(
                        can_share=canShare, updated_at=now))
                return
            if len(current) >= quota:
                raise QuotaExceeded("too many members")
            try:
                await conn.execute(image_members.insert().values(
                    image_id=imageId, member=member, can_share=bool(canShare),
                    status="accepted", created_at=now, updated_at=now, deleted=False))
            except IntegrityError:
                raise Conflict("member was added concurrently")

    @fromCoroutine
    async def deleteMember(self, imageId: str, member: str) -> None:
        async with self._unit() as conn:
            result = await conn.execute(image_members.delete().where(and_(
                image_members.c.image_id == imageId,
                image_members.c.member == member,
                image_members.c.deleted == False)))  # noqa: E712
            if result.rowcount == 0:
                raise NotFound(member)

    @fromCoroutine
    async def sharedWith(self, member: str) -> List[MemberRecord]:
        async with self._unit() as conn:
            result = await conn.execute(select([
                image_members.c.image_id, image_members.c.can_share]).select_from(
                image_members.join(images, images.c.id == image_members.c.image_id)).where(and_(
                    image_members.c.member == member,
                    image_members.c.deleted == False,  # noqa: E712
                    images.c.deleted == False)).order_by(image_members.c.image_id))  # noqa: E712
            return [MemberRecord(i, member, bool(c)) for i, c in await result.fetchall()]


class QuotaExceeded(Exception):
    """
    A member or property quota would be passed.
    """
