"""
Image metadata in SQL, reached only through alchimia so that no query
blocks the reactor.

Every alchimia call in the project lives in this folder.  The registry keeps
a few long-lived alchimia connections (each with its own worker thread) and
hands one to each unit of work; races between processes are settled by
conditional UPDATEs, never by state held in this process.
"""

import datetime
import functools
import random
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple,
                    TypeVar)

import attr
import sqlalchemy
from alchimia import TWISTED_STRATEGY
from sqlalchemy import (Integer, and_, bindparam, case, exists, false, func, literal_column,
                        or_, select)
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from twisted.internet.defer import Deferred, DeferredQueue, TimeoutError, gatherResults
from twisted.internet.task import deferLater
from twisted.logger import Logger

from glancetx.asyncutil import firstOf, fromCoroutine
from glancetx.registry import timeouts
from glancetx.registry.batch import ReadBatcher
from glancetx.registry.paging import PastMarker
from glancetx.registry.schema import image_members, image_properties, image_uploads, images
from glancetx.registry.timeouts import WORK_SECONDS, connectArgs

T = TypeVar("T")

#: Columns of the images table callers may read and write (not location,
#: which is read with L{Registry.getLocation} only).
IMAGE_FIELDS = (
    "id", "name", "disk_format", "container_format", "size", "virtual_size",
    "status", "is_public", "checksum", "min_disk", "min_ram", "owner",
    "protected", "created_at", "updated_at", "deleted_at", "deleted",
)

#: Sort keys a list may use, and the column it sorts on: for a nullable
#: one, its COALESCE, which the database computes (migration 0006), so
#: that paging with a marker is a plain comparison on every database and
#: an index on (deleted, key, id) gives the order.
SORT_KEYS = {
    "id": images.c.id,
    "name": images.c.sort_name,
    "status": images.c.status,
    "disk_format": images.c.sort_disk_format,
    "container_format": images.c.sort_container_format,
    "size": images.c.sort_size,
    "created_at": images.c.created_at,
    "updated_at": images.c.sort_updated_at,
}

#: The index a page sorted by each key walks (see L{_listStatement}).
SORT_INDEXES = {
    "id": "ix_images_sort_id",
    "name": "ix_images_sort_name",
    "status": "ix_images_sort_status",
    "disk_format": "ix_images_sort_disk_format",
    "container_format": "ix_images_sort_container_format",
    "size": "ix_images_sort_size",
    "created_at": "ix_images_deleted_created_at_id",
    "updated_at": "ix_images_sort_updated_at",
}

#: How many characters of a property's value its index holds (migration
#: 0006's value_prefix).
PROPERTY_PREFIX = 64


class NotFound(Exception):
    """
    No such image (or member), or it is deleted.
    """


class Conflict(Exception):
    """
    A unique key is taken (an image id that exists) or the row was not in
    the state the conditional update required.

    @ivar current: the image as it is now, for the second case.
    """

    def __init__(self, message: str, current: Optional["ImageRecord"] = None) -> None:
        super().__init__(message)
        self.current = current


class Unreachable(Exception):
    """
    The database could not be reached, lost the connection, or refused the
    work for a reason of its own; trying again later may succeed.
    """


class RegistryError(Exception):
    """
    The database refused a statement (a bug, or a schema out of date).  It
    keeps only the error's class, code and statement.
    """


class Protected(Exception):
    """
    The image is protected, so it cannot be deleted.
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

    def shownSize(self) -> int:
        """
        The size the image shows (in answers and notifications): 0 until
        its bytes are known (queued, or killed before then), as Glance
        showed it.  The record keeps None, so that an upload is held only
        to a size the client declared.
        """
        return self.size if self.size is not None else 0


@attr.s(frozen=True, slots=True, auto_attribs=True)
class UploadLease:
    """
    An upload under way: the process that receives it (C{holder}), until
    when it has vouched for it, and the store its bytes go to.
    """

    image_id: str
    holder: str
    expires_at: datetime.datetime
    store: str


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


def _dueForRemoval(deletedBefore: datetime.datetime):
    return and_(images.c.status == "pending_delete", images.c.deleted_at < deletedBefore)


def requeueStale(claimedBefore: datetime.datetime):
    """
    The statement that puts back in C{pending_delete} the removals claimed
    before C{claimedBefore} (L{Registry.requeueStaleRemovals}; bench
    million times it too).  The column is NULL but for claimed removals
    (migration 0006), and has an index of its own.
    """
    return images.update().where(images.c.removal_claimed_at < claimedBefore).values(
        status="pending_delete")


def _servedBy(schemes: Sequence[str]):
    """
    The images whose bytes a server with stores of C{schemes} can remove
    (and those with none).
    """
    return or_(images.c.location.is_(None),
               *[images.c.location.startswith(s + "://", autoescape=True) for s in schemes])


def _row(row) -> Dict[str, Any]:
    return {name: row[name] for name in IMAGE_FIELDS}


class _ConnectionPool:
    """
    A fixed number of alchimia connections, each with its own worker thread,
    lent out one unit of work at a time.  A connection that raised a
    database error is closed and replaced rather than returned, since it may
    be broken; so is one whose work ran past its deadline, but its place is
    taken only once its thread is free, so a silent database cannot make
    threads pile up.
    """

    log = Logger()

    def __init__(self, engine, size: int, clock) -> None:
        self._engine = engine
        self._clock = clock
        # Idle connections, or None: a place freed for a new one.
        self._idle: DeferredQueue = DeferredQueue()
        self._size = size
        self._made = 0
        self._all: List[Any] = []

    async def acquire(self, seconds: float):
        """
        A connection, within C{seconds} if all are lent out.

        @raise TimeoutError: none came free in time.
        """
        deadline = self._clock.seconds() + seconds
        while True:
            if not self._idle.pending and self._made < self._size:
                self._made += 1
                try:
                    # Bounded by the driver's own connect timeouts.
                    conn = await self._engine.connect()
                except BaseException:
                    self._freed()
                    raise
                self._all.append(conn)
                return conn
            wait = self._idle.get()
            wait.addTimeout(max(0.0, deadline - self._clock.seconds()), self._clock)
            conn = await wait
            if conn is not None:
                return conn

    @property
    def size(self) -> int:
        return self._size

    def release(self, conn, broken: bool = False) -> None:
        if broken:
            self._all.remove(conn)
            # The close waits, on the connection's thread, for any work
            # still running there; only then is its place free.
            conn.close().addErrback(lambda f: None).addBoth(lambda _: self._freed())
            return
        self._idle.put(conn)

    def _freed(self) -> None:
        self._made -= 1
        if self._idle.waiting:
            # Someone waits: it makes the new connection.
            self._idle.put(None)

    async def closeAll(self, seconds: float) -> None:
        """
        Close every connection; a connection whose thread is still held by
        a silent database is left to it (the threads are daemons) after
        C{seconds}, so that the server's stop does not wait on it.
        """
        conns, self._all = self._all, []
        closes = [c.close().addErrback(lambda f: None) for c in conns]
        timer = deferLater(self._clock, seconds, lambda: None)
        await firstOf(gatherResults(closes), timer)
        timer.cancel()
        busy = sum(1 for d in closes if not d.called)
        if busy:
            self.log.warn("{count} database connections were still busy at shutdown;"
                          " left open", count=busy)


class _TooLate(Exception):
    """
    Rolls back a transaction whose caller has been answered already.
    Nobody waits for it: the caller's Deferred timed out.
    """


def runOnConnection(conn, work: Callable[[Any], T]) -> "Deferred[T]":
    """
    Run C{work(sqlalchemyConnection)} on an alchimia connection's own worker
    thread, as one job.

    alchimia turns every C{execute}, C{fetchall}, C{begin} and C{commit} into
    its own round trip to that thread; a read of one image would take six.
    A whole unit of work crossing the thread boundary once, with only plain
    values coming back, is the pattern buildbot uses for the same reason.
    alchimia 0.8.1 (pinned exactly) offers no public call for it, so this
    one function uses its connection's worker; a test holds it to that
    version.
    """
    return conn._defer_to_cxn(work, conn._connection)


def _bindProperties(rows) -> Dict[str, Dict[str, str]]:
    out: Dict[str, Dict[str, str]] = {}
    for imageId, name, value in rows:
        out.setdefault(imageId, {})[name] = value
    return out


# Statements built once, so SQLAlchemy's compiled cache can keep them.
# An image and its properties come back from one statement: a row per
# property (or one row with no property), the image's columns repeated.
_WITH_PROPS = images.outerjoin(image_properties, and_(
    image_properties.c.image_id == images.c.id,
    image_properties.c.deleted == False))  # noqa: E712
_IMAGE_AND_PROPS = [images, image_properties.c.name.label("prop_name"),
                    image_properties.c.value.label("prop_value")]
_GET_LIVE = select(_IMAGE_AND_PROPS).select_from(_WITH_PROPS).where(and_(
    images.c.id == bindparam("id"), images.c.deleted == False))  # noqa: E712
_GET_ANY = select(_IMAGE_AND_PROPS).select_from(_WITH_PROPS).where(
    images.c.id == bindparam("id"))
_INSERT_IMAGE = images.insert()
_INSERT_PROPERTY = image_properties.insert()
_INSERT_MEMBER = image_members.insert()
_LOCATION = select([images.c.location]).where(images.c.id == bindparam("id"))
_TAKE_LEASE = image_uploads.insert()
_END_LEASE = image_uploads.delete().where(image_uploads.c.image_id == bindparam("id"))
_END_HOLDERS_LEASE = image_uploads.delete().where(and_(
    image_uploads.c.image_id == bindparam("id"),
    image_uploads.c.holder == bindparam("lease_holder")))
_RENEW_LEASES = image_uploads.update().where(
    image_uploads.c.holder == bindparam("lease_holder")).values(
    expires_at=bindparam("new_expiry", type_=image_uploads.c.expires_at.type))
#: The holder of a lease left to remind reapers of a failed upload's
#: parts (L{Registry.sweepLater}); no process renews it.
SWEEP_HOLDER = "sweep"
_EXPIRED_LEASES = select([image_uploads.c.image_id, image_uploads.c.holder,
                           image_uploads.c.expires_at, image_uploads.c.store]).where(
    image_uploads.c.expires_at < bindparam("now", type_=image_uploads.c.expires_at.type)
).order_by(image_uploads.c.expires_at).limit(bindparam("limit", type_=Integer))
_LEASE_EXPIRED = exists().where(and_(
    image_uploads.c.image_id == images.c.id,
    image_uploads.c.expires_at < bindparam("now", type_=image_uploads.c.expires_at.type)))
_KILL_ABANDONED = images.update().where(and_(
    images.c.id == bindparam("image_id"), images.c.status == "saving",
    images.c.deleted == False, _LEASE_EXPIRED)).values(  # noqa: E712
    status="killed", updated_at=bindparam("now", type_=images.c.updated_at.type))
_END_EXPIRED_LEASE = image_uploads.delete().where(and_(
    image_uploads.c.image_id == bindparam("id"),
    image_uploads.c.expires_at < bindparam("now", type_=image_uploads.c.expires_at.type)))
_CLAIM_EXPIRED_LEASE = image_uploads.update().where(and_(
    image_uploads.c.image_id == bindparam("id"),
    image_uploads.c.expires_at < bindparam("now", type_=image_uploads.c.expires_at.type))
).values(holder=SWEEP_HOLDER,
         expires_at=bindparam("claim_until", type_=image_uploads.c.expires_at.type))
_MEMBERS = select([image_members.c.member, image_members.c.can_share]).where(and_(
    image_members.c.image_id == bindparam("id"),
    image_members.c.deleted == False)).order_by(image_members.c.member)  # noqa: E712


def _getImage(sqlconn, imageId: str, includeDeleted: bool = False) -> ImageRecord:
    rows = sqlconn.execute(_GET_ANY if includeDeleted else _GET_LIVE, id=imageId).fetchall()
    if not rows or rows[0]["id"] != imageId:
        # MySQL's collations find "ID", "id " and "íd" as "id": the id
        # asked for is another image's, or none.
        raise NotFound(imageId)
    props = {r["prop_name"]: r["prop_value"] for r in rows if r["prop_name"] is not None}
    return ImageRecord(properties=props, **_row(rows[0]))


_PROPERTIES_OF = select([image_properties.c.image_id, image_properties.c.name,
                         image_properties.c.value]).where(and_(
    image_properties.c.image_id.in_(bindparam("ids", expanding=True)),
    image_properties.c.deleted == False))  # noqa: E712


def _propertiesFor(sqlconn, imageIds: Sequence[str]) -> Dict[str, Dict[str, str]]:
    if not imageIds:
        return {}
    return _bindProperties(sqlconn.execute(_PROPERTIES_OF, ids=list(imageIds)).fetchall())


def _insertProperties(sqlconn, imageId: str, properties: Mapping[str, str], now) -> None:
    if properties:
        sqlconn.execute(_INSERT_PROPERTY, [
            {"image_id": imageId, "name": k, "value": v, "created_at": now,
             "updated_at": now, "deleted": False}
            for k, v in properties.items()
        ])


def _members(sqlconn, imageId: str) -> List[MemberRecord]:
    return [MemberRecord(imageId, m, bool(c)) for m, c in sqlconn.execute(_MEMBERS, id=imageId)]


#: Taken first by every transaction that changes an image's members: the
#: writers of one image then queue on its row, all in one lock order,
#: rather than racing to insert the same member or deadlocking over each
#: other's rows.  (Updates and deletes take the same row lock with their
#: first statement.  SQLite, one writer at a time, compiles no FOR UPDATE.)
_LOCK_IMAGE = select([images.c.id]).where(and_(
    images.c.id == bindparam("id"), images.c.deleted == False)).with_for_update()  # noqa: E712


#: The next (MySQL) or this (PostgreSQL, before its first query)
#: transaction's isolation.
_REPEATABLE_READ = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"


def _beginSnapshot(sqlconn, sqlite: bool) -> None:
    """
    Begin a transaction whose statements all see one snapshot: pysqlite
    begins none before a SELECT, and MySQL and PostgreSQL take one
    snapshot for a whole transaction only at repeatable read, which must
    be set before its first query.  (On PostgreSQL the pool's ping may
    have begun one; psycopg2 must end it itself, or it would not begin
    the next.)
    """
    if sqlite:
        sqlconn.execute("BEGIN")
        return
    raw = sqlconn.connection.connection
    if sqlconn.dialect.name == "postgresql" and raw.get_transaction_status() != 0:
        try:
            raw.rollback()
        except sqlconn.dialect.dbapi.Error as e:
            sqlconn.invalidate()
            raise DBAPIError.instance(None, None, e, sqlconn.dialect.dbapi.Error,
                                      connection_invalidated=True) from None
    sqlconn.execute(_REPEATABLE_READ)


def _lockImage(sqlconn, imageId: str) -> None:
    """
    Hold the image's row until the transaction ends.

    @raise NotFound: it is gone (deleted since the caller looked, while
        this waited for the lock): a member added now would outlive it.
    """
    if not sqlconn.execute(_LOCK_IMAGE, id=imageId).fetchall():
        raise NotFound(imageId)


#: A transaction that failed with one of these is run again from the start:
#: MySQL's deadlock (1213) and lock wait timeout (1205), PostgreSQL's
#: deadlock (40P01) and serialization failure (40001).  Rare with the
#: image row lock, but a database may still pick a victim.
TRANSACTION_ATTEMPTS = 5

#: Seconds a rolled-back transaction waits, at random up to this many
#: times its attempt, before it runs again.  Run again at once, a deadlock
#: victim could take its first lock back before the transaction that won
#: did, and the two deadlocked again and again (under load on PostgreSQL,
#: one ran five times, its last attempt).
RETRY_PAUSE = 0.02


def _code(error: DBAPIError) -> Any:
    """
    A database error's code, which is all of it that is logged: the
    server's own text may quote a statement's values (PostgreSQL's
    "Failing row contains", with a location's credentials).  An error
    with no code did not come from a statement (a connection refused or
    lost, a database that is gone, SQLite's "database is locked"), and
    its driver's first line says why.
    """
    pgcode = getattr(error.orig, "pgcode", None)
    if pgcode:
        return pgcode
    args = getattr(error.orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    lines = str(error.orig).strip().splitlines()
    name = type(error.orig).__name__
    return "%s: %s" % (name, lines[0][:200]) if lines else name


#: The codes of a lock wait that ran out (PostgreSQL's lock_timeout,
#: InnoDB's innodb_lock_wait_timeout), as L{Unreachable} carries them.
_LOCK_WAITS = ("55P03", "1205")


def _isTransient(error: DBAPIError) -> bool:
    orig = error.orig
    if getattr(orig, "pgcode", None) in ("40P01", "40001"):
        return True
    args = getattr(orig, "args", ())
    # Not MySQL's lock wait timeout (1205), nor PostgreSQL's (55P03): the
    # lock is held elsewhere for longer than a retry could wait.
    return bool(args) and args[0] == 1213


def _purgeDeletedMembers(sqlconn, imageId: str) -> None:
    sqlconn.execute(image_members.delete().where(and_(
        image_members.c.image_id == imageId,
        image_members.c.deleted == True)))  # noqa: E712


def _visibility(withTenant: bool):
    """
    Public images, and with a tenant (bound as C{tenant}) those it owns or
    that are shared with it.
    """
    clauses = [images.c.is_public == True]  # noqa: E712
    if withTenant:
        tenant = bindparam("tenant", type_=image_members.c.member.type)
        shared = select([image_members.c.image_id]).where(and_(
            image_members.c.member == tenant,
            image_members.c.deleted == False))  # noqa: E712
        clauses.append(images.c.owner == tenant)
        clauses.append(images.c.id.in_(shared))
    return or_(*clauses)


_IS_VISIBLE = select([images.c.id]).where(and_(
    images.c.id == bindparam("id"), _visibility(True)))

#: A list's columns: the image fields, in IMAGE_FIELDS order (never location),
#: which is also the order of ImageRecord's fields.
_LIST_COLUMNS = [images.c[name] for name in IMAGE_FIELDS]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class _ListShape:
    """
    Everything about a list query but its values: lists of one shape share
    one statement, with every value a bound parameter, so SQLAlchemy
    compiles each shape once (a fresh statement per request cost more than
    running it, and filled the compiled cache without end).
    """

    sort_key: str
    desc: bool
    changes_since: bool
    #: None: no restriction; False: public only; True: a tenant's view.
    visibility: Optional[bool]
    is_public: bool
    filters: Tuple[str, ...]
    #: For each property filter, by name: whether its value is as long as
    #: the prefix the index holds, and so is compared whole too.
    properties: Tuple[bool, ...]
    marker: bool
    #: Walk the sort key's index on MySQL/MariaDB (see L{_walkIfCommon}).
    walk: bool = False

    @classmethod
    def of(cls, query: "ListQuery") -> "_ListShape":
        return cls(
            sort_key=query.sort_key, desc=query.sort_dir == "desc",
            changes_since=query.changes_since is not None,
            visibility=(query.visible_to is not None) if query.restrict_to_visible else None,
            is_public=query.is_public is not None,
            filters=tuple(sorted(query.filters)),
            properties=tuple(len(value) >= PROPERTY_PREFIX
                             for _, value in sorted(query.properties.items())),
            marker=query.marker is not None)

    def params(self, query: "ListQuery") -> Dict[str, Any]:
        p: Dict[str, Any] = {"limit": query.limit}
        if self.changes_since:
            p["changes_since"] = query.changes_since
        if self.visibility:
            p["tenant"] = query.visible_to
        if self.is_public:
            p["is_public"] = query.is_public
        for name in self.filters:
            p["f_" + name] = query.filters[name]
        if "f_size_min" in p:
            p["f_size_min"] = max(p["f_size_min"], 0)
        for i, (name, value) in enumerate(sorted(query.properties.items())):
            p["pn%d" % i], p["pp%d" % i] = name, value[:PROPERTY_PREFIX]
            if self.properties[i]:
                p["pv%d" % i] = value
        return p


#: How many images a property filter's value must name for a MariaDB
#: list to walk the sort order rather than start from the property.
COMMON_PROPERTY = 2000

_PROPERTY_MATCHES = select([func.count()]).select_from(
    select([image_properties.c.id]).where(and_(
        image_properties.c.name == bindparam("name", type_=image_properties.c.name.type),
        image_properties.c.value_prefix == bindparam(
            "prefix", type_=image_properties.c.value_prefix.type),
    )).limit(COMMON_PROPERTY).alias("matches"))


def _walkIfCommon(sqlconn, shape: _ListShape, params: Mapping[str, Any]) -> _ListShape:
    """
    On MySQL and MariaDB, the shape of a list filtered only on properties
    whose values many images have, made to walk the sort key's index.

    MariaDB always starts such a list from the property's index, then
    sorts what it found: right for a value few images have (4 ms at a
    million images, where walking the sort order took past 30 s), wrong
    for a common one (5-6 s for a value a tenth of the images have, where
    the walk finds a page in a few hundred rows).  It costs the walk
    without its LIMIT; so it is told, after a count that stops at
    L{COMMON_PROPERTY} rows of the index.  PostgreSQL costs both.
    """
    if (sqlconn.dialect.name != "mysql" or not shape.properties or shape.filters
            or shape.changes_since):
        return shape
    for i in range(len(shape.properties)):
        found = sqlconn.execute(_PROPERTY_MATCHES, name=params["pn%d" % i],
                                prefix=params["pp%d" % i]).scalar()
        if found < COMMON_PROPERTY:
            return shape
    return attr.evolve(shape, walk=True)


@functools.lru_cache(maxsize=256)
def _markerStatement(sortKey: str, visibility: Optional[bool], includeDeleted: bool):
    cond = [images.c.id == bindparam("marker")]
    if not includeDeleted:
        # Deleted since the service checked it, its sort key may have
        # changed (status, updated_at): the page would start elsewhere.
        cond.append(images.c.deleted == False)  # noqa: E712
    if visibility is not None:
        cond.append(_visibility(visibility))
    return select([SORT_KEYS[sortKey].label("k"), images.c.id]).where(and_(*cond))


@functools.lru_cache(maxsize=256)
def _listStatement(shape: _ListShape):
    cond = []
    if shape.changes_since:
        cond.append(images.c.updated_at >= bindparam("changes_since",
                                                     type_=images.c.updated_at.type))
    else:
        cond.append(images.c.deleted == False)  # noqa: E712
    if shape.visibility is not None:
        cond.append(_visibility(shape.visibility))
    if shape.is_public:
        cond.append(images.c.is_public == bindparam("is_public", type_=images.c.is_public.type))
    for name in shape.filters:
        # A range or a value of a sort key is a range of its index, with
        # no second comparison of the same thing (the planner would take
        # the two for two filters, and a common value for a rare one).
        # The sizes of images with none (-1) fall below every size the
        # query names (L{_ListShape.params} keeps them at 0 or more); the
        # format '' names no image without one.
        if name in ("size_min", "size_max"):
            column = images.c.sort_size
        elif name in ("disk_format", "container_format"):
            column = SORT_KEYS[name]
            cond.append(images.c[name].isnot(None))
        else:
            column = images.c[name]
        value = bindparam("f_" + name, type_=column.type)
        if name == "size_min":
            cond.append(column >= value)
        elif name == "size_max":
            cond.append(column.between(literal_column("0"), value))
        else:
            cond.append(column == value)
    for i, long in enumerate(shape.properties):
        match = [
            image_properties.c.image_id == images.c.id,
            image_properties.c.name == bindparam("pn%d" % i, type_=image_properties.c.name.type),
            image_properties.c.value_prefix == bindparam(
                "pp%d" % i, type_=image_properties.c.value_prefix.type),
            image_properties.c.deleted == False]  # noqa: E712
        if long:
            # A value shorter than the prefix is its own prefix, and is
            # compared once: the planner takes two comparisons for two
            # filters, and the rows that match a common value for few.
            match.append(image_properties.c.value == bindparam(
                "pv%d" % i, type_=image_properties.c.value.type))
        cond.append(exists().where(and_(*match)))
    key = SORT_KEYS[shape.sort_key]
    if shape.marker:
        cond.append(PastMarker(key, images.c.id, shape.desc))
    order = [key] if key is images.c.id else [key, images.c.id]
    order = [c.desc() if shape.desc else c.asc() for c in order]
    statement = select(_LIST_COLUMNS).where(and_(*cond)).order_by(*order).limit(
        bindparam("limit", type_=Integer))
    unfiltered = not shape.changes_since and not shape.filters and not shape.properties
    if shape.walk or (unfiltered and (shape.marker or (
            shape.is_public and shape.visibility is None))):
        # MariaDB reads the index on deleted alone even so, and then every
        # row before the marker (31 s at a million images, against 9 ms with
        # the range): its ORDER BY ... LIMIT costing.  An admin's is_public
        # list it answered by intersecting the indexes on is_public and on
        # deleted, then sorting what they shared (1.6 s for is_public=false,
        # against 7 ms walking).  Not with a filter, whose own index may be
        # the better walk, unless it is a common property value
        # (L{_walkIfCommon}); nor for a tenant's is_public list, which the
        # tenant's own few images answer.
        statement = statement.with_hint(
            images, "FORCE INDEX (%s)" % (SORT_INDEXES[shape.sort_key],), "mysql")
    return statement


def _sqliteTuning(dbapiConnection, record) -> None:
    """
    WAL lets readers go on while a writer commits, and synchronous=NORMAL
    makes a commit one fsync of the log instead of several; a crash of the
    process loses nothing, a power cut at worst the last commits.
    """
    cursor = dbapiConnection.cursor()
    # Switching to WAL takes an exclusive lock and fails at once ("database
    # is locked") beside another connection; the mode is kept in the file,
    # so switch only a database not in it yet (the server's is switched by
    # prepareRegistry before any pooled connection opens).
    if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Registry:
    """
    The image catalogue.  Every method returns a Deferred.
    """

    log = Logger()

    #: Seconds a unit of work may take, waiting for a connection included,
    #: before it fails with L{Unreachable}.
    timeout = WORK_SECONDS
    #: Seconds the close at shutdown waits for connections still at work.
    closeSeconds = 5.0

    def __init__(self, url: str, reactor, poolSize: Optional[int] = None) -> None:
        kwargs: Dict[str, Any] = {}
        sqlite = url.startswith("sqlite")
        # Reads and writes each have connections of their own: writes that
        # wait on a lock held elsewhere (another process's transaction, an
        # image's row) would otherwise hold every connection, and each read,
        # which waits on no lock, would queue behind them.  SQLite has one
        # writer at a time: more than one writing connection here would only
        # take turns by sleeping in its busy handler.
        readers = poolSize or (3 if sqlite else 4)
        writers = 1 if sqlite else readers
        # Ours are held for the life of the process; SQLAlchemy's pool only
        # opens them.
        kwargs["pool_size"] = readers + writers
        if sqlite:
            # In WAL mode readers run beside the one writer; a writer that
            # finds the database busy waits (timeout) rather than failing.
            kwargs["connect_args"] = {"check_same_thread": False,
                                      "timeout": timeouts.LOCK_SECONDS}
            kwargs["poolclass"] = sqlalchemy.pool.QueuePool
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["pool_recycle"] = 3600
            kwargs["connect_args"] = connectArgs(url)
        if url.startswith("mysql"):
            # As PostgreSQL does by default: each statement sees what is
            # committed, and InnoDB takes no gap locks, which otherwise
            # deadlock writers of neighbouring images.
            kwargs["isolation_level"] = "READ COMMITTED"
        self._engine = sqlalchemy.create_engine(
            url, strategy=TWISTED_STRATEGY, reactor=reactor, **kwargs
        )
        # A failed statement's parameters (a location, with its
        # credentials) stay out of its error's text, and so out of logs.
        # (alchimia's engine does not pass the flag on to create_engine.)
        self._engine._engine.hide_parameters = True
        if sqlite:
            sqlalchemy.event.listen(self._engine._engine, "connect", _sqliteTuning)
        elif url.startswith("postgresql"):
            sqlalchemy.event.listen(self._engine._engine, "connect",
                                    timeouts.postgresLimits)
        elif url.startswith("mysql"):
            sqlalchemy.event.listen(self._engine._engine, "connect",
                                    timeouts.mariadbLimits)
        self._clock = reactor
        self._writers = _ConnectionPool(self._engine, writers, reactor)
        self._readers = _ConnectionPool(self._engine, readers, reactor)
        # Bounded: statements built per call (updates) would otherwise each
        # stay in it for good.
        self._compiled = sqlalchemy.util.LRUCache(500)
        self._sqlite = sqlite
        # SQLite only: other databases keep their planner statistics fresh.
        self._statsGeneration = 0
        self._statsSeen: Dict[int, int] = {}
        self.url = url
        #: Single-statement reads by id, batched per reactor turn.
        self._reads = ReadBatcher(reactor, self._runRead, (NotFound,))

    async def _run(self, work: Callable[[Any], T], transaction: bool = True,
                   writes: Optional[bool] = None) -> T:
        """
        One unit of work on a pooled connection, in one transaction (or in
        autocommit for single reads), in one trip to its thread: on a
        writer's connection if it C{writes} (as every transaction is taken
        to), else on a reader's.

        A transaction the database rolled back (deadlock, serialization
        failure) runs again; so does work whose connection was lost before
        anything was committed (the database restarted, or ended idle
        connections), on another connection.

        @raise Unreachable: the database cannot be reached, or failed the
            work for a reason of its own (not the work's).
        """
        pool = self._writers if (transaction if writes is None else writes) else self._readers
        attempt = 1
        lost = 0
        deadline = self._clock.seconds() + self.timeout
        while True:
            try:
                conn = await pool.acquire(max(0.0, deadline - self._clock.seconds()))
            except DBAPIError as e:
                raise Unreachable(_code(e)) from None
            except TimeoutError:
                raise Unreachable("no connection free within %d s" % (self.timeout,)) from None
            broken = False
            # Set on the reactor's thread, read on the connection's: a
            # list, as the GIL makes its append seen at once.
            answered: List[bool] = []
            try:
                running = runOnConnection(
                    conn, self._job(conn, work, transaction, answered,
                                    snapshot=transaction and writes is False))
                running.addTimeout(max(0.0, deadline - self._clock.seconds()), self._clock)
                return await running
            except TimeoutError:
                # Its thread may still be waiting on the database; the
                # connection is not lent again, and the work, if it gets
                # as far as its commit, rolls back instead.
                answered.append(True)
                broken = True
                self.log.warn("the database did not answer within {seconds} s",
                              seconds=self.timeout)
                raise Unreachable("no answer within %d s" % (self.timeout,)) from None
            except DBAPIError as e:
                broken = bool(e.connection_invalidated)
                if broken and getattr(e, "glancetxUncommitted", not transaction) \
                        and lost < pool.size:
                    lost += 1
                    self.log.info("database connection lost; running the work again on"
                                  " another ({code})", code=_code(e))
                    continue
                if (not broken and transaction and attempt < TRANSACTION_ATTEMPTS
                        and _isTransient(e)):
                    # The code only: a statement's parameters may hold a
                    # location's credentials.
                    self.log.info("transaction rolled back by the database ({code}); "
                                  "running it again", code=_code(e))
                    await deferLater(self._clock, random.uniform(0, RETRY_PAUSE * attempt),
                                     lambda: None)
                    attempt += 1
                    continue
                if broken or isinstance(e, (OperationalError, InterfaceError)):
                    raise Unreachable(_code(e)) from None
                # The database's own text may quote the values (PostgreSQL's
                # "Failing row contains", with a location's credentials).
                raise RegistryError("%s (%s) in: %s" % (
                    type(e.orig).__name__, _code(e), e.statement)) from None
            finally:
                pool.release(conn, broken=broken)

    def _job(self, conn, work: Callable[[Any], T], transaction: bool,
             answered: List[bool], snapshot: bool = False) -> Callable[[Any], T]:
        """
        C{work} as its connection's thread runs it.  A read in a
        transaction (C{snapshot}) sees one snapshot of the database in all
        its statements, as a list's page and its images' properties must:
        under read committed each statement saw what was committed when
        it began, so an update committed between the two showed an image
        with the name it had before and the properties it had after.
        A transaction whose
        caller was C{answered} (L{Unreachable}, when the deadline passed)
        while it ran is rolled back, not committed: that caller was told
        it failed, and a database that is slow (not locked, so no lock
        timeout ends the wait) would otherwise keep it, as an upload's
        activation committed after its client was answered 503.  Only a
        commit already under way when the deadline passes can still land.
        """
        cache = self._compiled
        reloadStats = (self._sqlite
                       and self._statsSeen.get(id(conn), 0) != self._statsGeneration)
        self._statsSeen[id(conn)] = self._statsGeneration
        sqlite = self._sqlite

        def job(sqlconn):
            if reloadStats:
                sqlconn.execute("ANALYZE sqlite_schema")
            sqlconn = sqlconn.execution_options(compiled_cache=cache)
            if not transaction:
                try:
                    return work(sqlconn)
                finally:
                    if not sqlite:
                        # psycopg2 and PyMySQL begin a transaction with the
                        # first SELECT, and SQLAlchemy 1.3 ends only
                        # writes'.  On a connection pooled for the life of
                        # the process it would hold its read locks until
                        # the connection next wrote, and a migration's
                        # ALTER TABLE would wait for them, every later
                        # query queued behind it; and MySQL refuses a
                        # snapshot's isolation inside it.  So does a read
                        # that found nothing (NotFound).
                        try:
                            sqlconn.connection.rollback()
                        except Exception:
                            # The read has its answer; a connection that
                            # cannot roll back is broken, and is replaced.
                            sqlconn.invalidate()
            with sqlconn.begin():
                try:
                    if snapshot:
                        _beginSnapshot(sqlconn, sqlite)
                    result = work(sqlconn)
                except DBAPIError as e:
                    # Failed before its commit: nothing of it was kept.
                    e.glancetxUncommitted = True
                    raise
                if answered:
                    raise _TooLate()
                return result
        return job

    @fromCoroutine
    async def optimize(self) -> None:
        """
        Refresh SQLite's query-planner statistics.  Without them SQLite
        walks the created_at index for every list, even where the name
        index would find a page at once; PostgreSQL and MySQL keep their own
        statistics.  A full ANALYZE (an approximate one, with analysis_limit,
        misjudges the deleted column and picks the wrong index); on the
        database thread, ~0.1 s per 100,000 images.
        """
        if not self._sqlite:
            return

        def work(sqlconn):
            sqlconn.execute("ANALYZE")
        await self._run(work, transaction=False, writes=True)
        # Other open connections keep the statistics they loaded; each
        # reloads them before its next unit of work.
        self._statsGeneration += 1

    @fromCoroutine
    async def close(self) -> None:
        await gatherResults([Deferred.fromCoroutine(pool.closeAll(self.closeSeconds))
                             for pool in (self._writers, self._readers)])

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

        def work(sqlconn):
            try:
                sqlconn.execute(_INSERT_IMAGE, row)
            except IntegrityError:
                raise Conflict("an image with this id exists")
            _insertProperties(sqlconn, row["id"], properties, now)
            return ImageRecord(properties=dict(properties),
                               **{k: row.get(k) for k in IMAGE_FIELDS})
        return await self._run(work)

    def _runRead(self, work: Callable[[Any], T]) -> "Deferred[T]":
        """
        A read of one statement: it sees one snapshot by itself, so it
        runs without a transaction, saving the round trip that sets a
        snapshot's isolation on PostgreSQL and MySQL.
        """
        return Deferred.fromCoroutine(self._run(work, transaction=False))

    def get(self, imageId: str, includeDeleted: bool = False) -> "Deferred[ImageRecord]":
        return self._reads.submit(lambda c: _getImage(c, imageId, includeDeleted))

    def getLocation(self, imageId: str) -> "Deferred[Optional[str]]":
        def work(sqlconn):
            row = sqlconn.execute(_LOCATION, id=imageId).first()
            return None if row is None else row[0]
        return self._reads.submit(work)

    @fromCoroutine
    async def update(self, imageId: str, values: Mapping[str, Any],
                     properties: Optional[Mapping[str, str]] = None,
                     purgeProperties: bool = False,
                     expectStatus: Optional[Iterable[str]] = None,
                     location: Any = attr.NOTHING,
                     lease: Optional["UploadLease"] = None,
                     requireFormats: bool = False,
                     propertyQuota: Optional[int] = None) -> ImageRecord:
        """
        Change an image's fields and properties in one transaction.

        @param expectStatus: when given, the update happens only if the
            image's status is one of these at that moment (a conditional
            UPDATE); otherwise L{Conflict}.
        @param properties: properties to set; with C{purgeProperties}, also
            the complete new set (others are removed).
        @param lease: the upload lease to take with this change (to
            C{saving}).  A change to any other status ends the image's lease.
        @param requireFormats: the update happens only if the image then
            has both formats (one that is becoming C{active}); otherwise
            L{Conflict}.
        @param propertyQuota: the most live properties the image may have
            after the change, counted in the same transaction (another
            update may have added some since the caller looked); otherwise
            L{QuotaExceeded}.
        """
        now = _now()
        row = dict(values)
        row["updated_at"] = now
        if location is not attr.NOTHING:
            row["location"] = location
        endsLease = "status" in values and values["status"] != "saving"

        def work(sqlconn):
            cond = and_(images.c.id == imageId, images.c.deleted == False)  # noqa: E712
            if expectStatus is not None:
                cond = and_(cond, images.c.status.in_(list(expectStatus)))
            if requireFormats:
                for name in ("disk_format", "container_format"):
                    if name not in row:
                        cond = and_(cond, images.c[name].isnot(None))
                    elif row[name] is None:
                        cond = and_(cond, false())
            result = sqlconn.execute(images.update().where(cond).values(**row))
            if result.rowcount == 0:
                # Tell a missing image from one in the wrong state.
                raise Conflict("image is not in a state that allows this",
                               _getImage(sqlconn, imageId))
            # Leaving saving ends a lease, and an image enters it only once
            # (from queued), so a lease being taken finds no row before it.
            if endsLease:
                sqlconn.execute(_END_LEASE, id=imageId)
            if lease is not None:
                sqlconn.execute(_TAKE_LEASE, image_id=imageId, holder=lease.holder,
                                expires_at=lease.expires_at, store=lease.store)
            if properties is not None:
                self._setProperties(sqlconn, imageId, properties, purgeProperties, now)
            image = _getImage(sqlconn, imageId)
            if propertyQuota is not None and len(image.properties) > propertyQuota:
                raise QuotaExceeded(len(image.properties))
            return image
        return await self._run(work)

    @staticmethod
    def _setProperties(sqlconn, imageId, properties, purge, now) -> None:
        current = _propertiesFor(sqlconn, [imageId]).get(imageId, {})
        # Rows soft-deleted with an image never come back, so only live rows
        # matter; a stale deleted row with the same name is cleared first.
        sqlconn.execute(image_properties.delete().where(and_(
            image_properties.c.image_id == imageId,
            image_properties.c.deleted == True)))  # noqa: E712
        if purge:
            gone = [k for k in current if k not in properties]
            if gone:
                sqlconn.execute(image_properties.delete().where(and_(
                    image_properties.c.image_id == imageId,
                    image_properties.c.name.in_(gone))))
        for name, value in properties.items():
            if name in current:
                if current[name] != value:
                    sqlconn.execute(image_properties.update().where(and_(
                        image_properties.c.image_id == imageId,
                        image_properties.c.name == name)).values(value=value, updated_at=now))
            else:
                _insertProperties(sqlconn, imageId, {name: value}, now)

    @fromCoroutine
    async def delete(self, imageId: str,
                     delayed: bool = False) -> Tuple[ImageRecord, Optional[str]]:
        """
        Soft-delete an unprotected image with its properties and members.
        Returns it and the location of its bytes as they were when it was
        deleted: an upload that became active a moment before left one.

        @param delayed: an image with bytes goes to C{pending_delete}, for
            the scrubber, rather than to C{deleted}.
        @raise Protected: the image is protected.
        """
        now = _now()
        status = (case([(images.c.location.isnot(None), "pending_delete")], else_="deleted")
                  if delayed else "deleted")

        def work(sqlconn):
            result = sqlconn.execute(images.update().where(and_(
                images.c.id == imageId, images.c.deleted == False,  # noqa: E712
                images.c.protected == False)).values(  # noqa: E712
                deleted=True, deleted_at=now, updated_at=now, status=status))
            if result.rowcount == 0:
                if _getImage(sqlconn, imageId).protected:
                    raise Protected(imageId)
                raise NotFound(imageId)
            for table in (image_properties, image_members):
                sqlconn.execute(table.update().where(and_(
                    table.c.image_id == imageId, table.c.deleted == False)).values(  # noqa: E712
                    deleted=True, deleted_at=now))
            # An upload's lease stays: the upload ends it, or, if its
            # process died, the reaper, which removes what it stored.
            location = sqlconn.execute(_LOCATION, id=imageId).scalar()
            return _getImage(sqlconn, imageId, includeDeleted=True), location
        return await self._run(work)

    @fromCoroutine
    async def pendingDeletes(self, deletedBefore: datetime.datetime, limit: int = 100,
                             after: Optional[Tuple[datetime.datetime, str]] = None,
                             schemes: Optional[Sequence[str]] = None,
                             ) -> List[Tuple[datetime.datetime, str]]:
        """
        The scrubber's work list, a page at a time: (deleted_at, id) of
        images in C{pending_delete} deleted before a time, oldest first,
        from just past C{after} (the last one of the page before), so that
        images put back while their store is down are not met again.
        Only those whose locations have one of C{schemes}, if given: the
        stores this server has.
        """
        def work(sqlconn):
            due = _dueForRemoval(deletedBefore)
            if schemes is not None:
                due = and_(due, _servedBy(schemes))
            if after is not None:
                due = and_(due, or_(
                    images.c.deleted_at > after[0],
                    and_(images.c.deleted_at == after[0], images.c.id > after[1])))
            rows = sqlconn.execute(select([images.c.deleted_at, images.c.id]).where(
                due).order_by(images.c.deleted_at, images.c.id).limit(limit))
            return [(r[0], r[1]) for r in rows]
        return await self._runRead(work)

    @fromCoroutine
    async def pendingDeletesElsewhere(self, deletedBefore: datetime.datetime,
                                      schemes: Sequence[str]) -> Tuple[int, Optional[str]]:
        """
        How many images in C{pending_delete}, deleted before a time, have
        locations of none of C{schemes} (they wait for a server with
        another store), and the scheme of one of them.
        """
        def work(sqlconn):
            elsewhere = and_(_dueForRemoval(deletedBefore), ~_servedBy(schemes))
            count, example = sqlconn.execute(select(
                [func.count(), func.min(images.c.location)]).where(elsewhere)).first()
            return count, (example.split("://", 1)[0] if example and "://" in example
                           else None)
        return await self._runRead(work)

    @fromCoroutine
    async def claimPendingDelete(self, imageId: str) -> Optional[str]:
        """
        Move a C{pending_delete} image to C{deleted} and return its location,
        or None if another process claimed it first (a conditional UPDATE:
        several scrubbing processes never delete one image's bytes twice).
        The image keeps its location until L{forgetDeletedBytes}: should
        this process die first, L{requeueStaleRemovals} finds it.
        """
        def work(sqlconn):
            location = sqlconn.execute(_LOCATION, id=imageId).scalar()
            result = sqlconn.execute(images.update().where(and_(
                images.c.id == imageId, images.c.status == "pending_delete")).values(
                status="deleted", updated_at=_now()))
            return location if result.rowcount == 1 else None
        return await self._run(work)

    @fromCoroutine
    async def requeueDelete(self, imageId: str, location: str) -> bool:
        """
        Put a deleted image whose bytes at C{location} could not be removed
        (the store failed, or could not be reached) back in C{pending_delete}, so a
        scrubber tries again.  Only if it is still C{deleted} and its bytes
        are still those: returns whether it was put back.
        """
        def work(sqlconn):
            result = sqlconn.execute(images.update().where(and_(
                images.c.id == imageId, images.c.status == "deleted",
                images.c.location == location)).values(status="pending_delete"))
            return result.rowcount == 1
        return await self._run(work)

    @fromCoroutine
    async def forgetDeletedBytes(self, imageId: str, location: str) -> bool:
        """
        Clear the location of a deleted image whose bytes at C{location}
        are gone.  A deleted image that still has one is a removal under
        way, or one whose process died part way.
        """
        def work(sqlconn):
            result = sqlconn.execute(images.update().where(and_(
                images.c.id == imageId, images.c.status == "deleted",
                images.c.location == location)).values(location=None))
            return result.rowcount == 1
        return await self._run(work)

    @fromCoroutine
    async def requeueStaleRemovals(self, claimedBefore: datetime.datetime) -> int:
        """
        Put back in C{pending_delete} the deleted images whose bytes a
        scrubber claimed before C{claimedBefore} and never recorded as
        removed: its process died (or its store held it that long; a
        second removal of the same bytes finds them gone).  Before, their
        bytes stayed in the store for good.  Returns how many.
        """
        def work(sqlconn):
            return sqlconn.execute(requeueStale(claimedBefore)).rowcount
        return await self._run(work)

    # -- upload leases ----------------------------------------------------

    @fromCoroutine
    async def renewUploads(self, holder: str, expiresAt: datetime.datetime) -> int:
        """
        Push every lease C{holder} holds forward to C{expiresAt}, in one
        statement.  Returns how many it holds.
        """
        def work(sqlconn):
            return sqlconn.execute(_RENEW_LEASES, lease_holder=holder,
                                   new_expiry=expiresAt).rowcount
        return await self._run(work)

    @fromCoroutine
    async def endUpload(self, imageId: str, holder: str) -> None:
        """
        End C{holder}'s lease on C{imageId}, if it still has one: its upload
        is over and left nothing to remove (the image was deleted while its
        bytes arrived, so no status change ended the lease).
        """
        def work(sqlconn):
            sqlconn.execute(_END_HOLDERS_LEASE, id=imageId, lease_holder=holder)
        await self._run(work)

    @fromCoroutine
    async def sweepLater(self, imageId: str, store: str, at: datetime.datetime) -> bool:
        """
        Leave a reminder that a failed upload of C{imageId} may have left
        parts in C{store}: an upload lease of no process, running out at
        C{at}, which a reaper (any process's, after restarts too) then ends
        by removing what is there.  Not if the image has a lease already.
        Returns whether it was left.
        """
        def work(sqlconn):
            if sqlconn.execute(select([image_uploads.c.image_id]).where(
                    image_uploads.c.image_id == imageId)).first() is not None:
                return False
            sqlconn.execute(image_uploads.insert().values(
                image_id=imageId, holder=SWEEP_HOLDER, expires_at=at, store=store))
            return True
        return await self._run(work)

    @fromCoroutine
    async def killAbandonedUploads(self, now: datetime.datetime, limit: int = 100,
                                   claimUntil: Optional[datetime.datetime] = None,
                                   ) -> List[Tuple["UploadLease", bool]]:
        """
        End the upload leases that ran out before C{now}, and kill their
        images still in C{saving}: their process stopped renewing them, so
        it died.  Each is a conditional statement on the lease's expiry, so
        a lease renewed meanwhile keeps its image, and of several processes
        reaping at once only one ends each lease.  Returns each lease this
        call ended, with whether it killed its image (not if the image was
        deleted meanwhile): whoever ends a lease removes what its upload
        stored.  At most C{limit}, and none for 0 (the query then only
        shows that the database answers).

        With C{claimUntil}, an ended lease is not deleted: it becomes a
        sweep reminder (L{sweepLater}) running out then, which the caller
        ends once the removal is done (L{endUpload} with L{SWEEP_HOLDER}).
        A caller that dies first leaves it for another reaper.
        """
        def expired(sqlconn):
            return [UploadLease(*r) for r in sqlconn.execute(_EXPIRED_LEASES, now=now,
                                                             limit=limit)]

        def reap(lease):
            def work(sqlconn):
                killed = sqlconn.execute(_KILL_ABANDONED, image_id=lease.image_id, now=now)
                if claimUntil is None:
                    claimed = sqlconn.execute(_END_EXPIRED_LEASE, id=lease.image_id, now=now)
                else:
                    claimed = sqlconn.execute(_CLAIM_EXPIRED_LEASE, id=lease.image_id,
                                              now=now, claim_until=claimUntil)
                return claimed.rowcount == 1, killed.rowcount == 1
            return work

        ended = []
        # Each in a transaction of its own: an image whose row another
        # transaction holds (its process froze mid-write) would hold up
        # every other kill with it, run after run.
        for lease in await self._runRead(expired):
            try:
                claimed, killed = await self._run(reap(lease))
            except Unreachable as e:
                if str(e) in _LOCK_WAITS:
                    self.log.warn("the abandoned upload of image {image_id} is passed over"
                                  " for now: another transaction holds its image ({code})",
                                  image_id=lease.image_id, code=str(e))
                    continue
                if ended:
                    # The database went away: what was reaped so far is
                    # still the caller's to clean up.
                    break
                raise
            if claimed:
                ended.append((lease, killed))
        return ended

    # -- lists ------------------------------------------------------------

    def isVisible(self, imageId: str, tenant: Optional[str]) -> "Deferred[bool]":
        """
        Whether a non-admin of C{tenant} may see the image at all.
        """
        if tenant is None:
            raise ValueError("isVisible needs a tenant")

        def work(sqlconn):
            return sqlconn.execute(_IS_VISIBLE, id=imageId, tenant=tenant).first() is not None
        return self._reads.submit(work)

    @fromCoroutine
    async def list(self, query: ListQuery) -> List[ImageRecord]:
        """
        One page of images, ordered by the sort key then id, with their
        properties fetched in one more query.

        @raise NotFound: the marker is not an image this caller can see.
        """
        shape = _ListShape.of(query)
        params = shape.params(query)

        def work(sqlconn):
            statement = _listStatement(_walkIfCommon(sqlconn, shape, params))
            if query.marker is not None:
                markerParams = {"marker": query.marker}
                if shape.visibility:
                    markerParams["tenant"] = query.visible_to
                marker = sqlconn.execute(
                    _markerStatement(shape.sort_key, shape.visibility, shape.changes_since),
                    markerParams).first()
                if marker is None:
                    raise NotFound(query.marker)
                params["mkey"], params["mid"] = marker[0], marker[1]
            # The columns are ImageRecord's fields, in order.
            rows = sqlconn.execute(statement, params).fetchall()
            props = _propertiesFor(sqlconn, [r[0] for r in rows])
            return [ImageRecord(*r, properties=props.get(r[0], {})) for r in rows]
        return await self._run(work, writes=False)

    # -- members ------------------------------------------------------------

    @fromCoroutine
    async def members(self, imageId: str) -> List[MemberRecord]:
        return await self._runRead(lambda c: _members(c, imageId))

    @fromCoroutine
    async def member(self, imageId: str, member: str) -> MemberRecord:
        for m in await self.members(imageId):
            if m.member == member:
                return m
        raise NotFound(member)

    @fromCoroutine
    async def replaceMembers(self, imageId: str, members: Mapping[str, Optional[bool]],
                             quota: int, mayAdd: bool = True, mayRemove: bool = True) -> None:
        """
        Make the member list exactly C{members} (member → can_share, or
        None: a member already there keeps its own, a new one cannot share).

        Whether the list adds or drops anyone is known only under the
        image's lock, so a caller who may not (C{mayAdd}, C{mayRemove})
        is refused there, with L{MembersRefused}, rather than on a list
        read before that another request may since have changed.
        """
        now = _now()

        def work(sqlconn):
            _lockImage(sqlconn, imageId)
            _purgeDeletedMembers(sqlconn, imageId)
            current = {m.member: m.can_share for m in _members(sqlconn, imageId)}
            if len(members) > quota:
                raise QuotaExceeded("too many members")
            gone = [m for m in current if m not in members]
            if gone and not mayRemove:
                raise MembersRefused("remove")
            if not mayAdd and any(m not in current for m in members):
                raise MembersRefused("add")
            if gone:
                sqlconn.execute(image_members.delete().where(and_(
                    image_members.c.image_id == imageId,
                    image_members.c.member.in_(gone))))
            for member, canShare in members.items():
                if member in current:
                    if canShare is not None and current[member] != canShare:
                        sqlconn.execute(image_members.update().where(and_(
                            image_members.c.image_id == imageId,
                            image_members.c.member == member)).values(
                            can_share=canShare, updated_at=now))
                else:
                    sqlconn.execute(_INSERT_MEMBER, image_id=imageId, member=member,
                                    can_share=bool(canShare), status="accepted",
                                    created_at=now, updated_at=now, deleted=False)
        await self._run(work)

    @fromCoroutine
    async def addMember(self, imageId: str, member: str, canShare: Optional[bool],
                        quota: int, sharer: Optional[str] = None) -> None:
        """
        Add C{member}, or change its C{can_share}.

        @param sharer: the member whose C{can_share} allows this, checked
            again under the image's lock (its right may have been taken
            away since); otherwise L{MembersRefused}.
        """
        now = _now()

        def work(sqlconn):
            _lockImage(sqlconn, imageId)
            _purgeDeletedMembers(sqlconn, imageId)
            current = {m.member: m.can_share for m in _members(sqlconn, imageId)}
            if sharer is not None and not current.get(sharer):
                raise MembersRefused("share")
            if member in current:
                if canShare is not None:
                    sqlconn.execute(image_members.update().where(and_(
                        image_members.c.image_id == imageId,
                        image_members.c.member == member)).values(
                        can_share=canShare, updated_at=now))
                return
            if len(current) >= quota:
                raise QuotaExceeded("too many members")
            try:
                sqlconn.execute(_INSERT_MEMBER, image_id=imageId, member=member,
                                can_share=bool(canShare), status="accepted", created_at=now,
                                updated_at=now, deleted=False)
            except IntegrityError:
                raise Conflict("member was added concurrently")
        await self._run(work)

    @fromCoroutine
    async def deleteMember(self, imageId: str, member: str) -> None:
        def work(sqlconn):
            _lockImage(sqlconn, imageId)
            result = sqlconn.execute(image_members.delete().where(and_(
                image_members.c.image_id == imageId,
                image_members.c.member == member,
                image_members.c.deleted == False)))  # noqa: E712
            if result.rowcount == 0:
                raise NotFound(member)
        await self._run(work)

    @fromCoroutine
    async def sharedWith(self, member: str, owner: Optional[str] = None) -> List[MemberRecord]:
        """
        The memberships of C{member} in images not deleted; only in images
        C{owner} owns, if given (in one query: a tenant asking about another
        read each shared image after, one query an image).
        """
        def work(sqlconn):
            cond = [image_members.c.member == member,
                    image_members.c.deleted == False,  # noqa: E712
                    images.c.deleted == False]  # noqa: E712
            if owner is not None:
                cond.append(images.c.owner == owner)
            rows = sqlconn.execute(select([
                image_members.c.image_id, image_members.c.can_share]).select_from(
                image_members.join(images, images.c.id == image_members.c.image_id)).where(
                and_(*cond)).order_by(image_members.c.image_id))
            return [MemberRecord(i, member, bool(c)) for i, c in rows]
        return await self._runRead(work)


class QuotaExceeded(Exception):
    """
    A member or property quota would be passed.
    """


class MembersRefused(Exception):
    """
    A change of an image's members its caller may not make: a replacement
    that would add (C{args[0]} is C{"add"}) or remove (C{"remove"})
    members, or an addition by a member no longer allowed to share
    (C{"share"}).
    """
