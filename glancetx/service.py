"""
The twistd service: configuration in, a listening image service out.

This is the only module that touches the global reactor; everything it
builds is handed the reactor and thread pools it needs.
"""

import os
import subprocess
import sys
from typing import Optional

from sqlalchemy.engine.url import make_url
from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.threadpool import ThreadPool
from twisted.web import server
from twisted.logger import Logger

from glancetx.amqpnotifier import fromConfig as notifiersFromConfig
from glancetx.auth import NoAuth
from glancetx.budget import SharedBudget
from glancetx.config import Config
from glancetx.errors import ConfigError
from glancetx.images import ImageService
from glancetx.lazytls import checkCanListen, listeningService, listensBeyondLoopback
from glancetx.notifier import Notifiers
from glancetx.registry.schema import HEAD_REVISION, refuseUnknownRevision
from glancetx.registry.registry import Registry, Unreachable
from glancetx.signals import quietRepeatedStops, sayOnHangUp
from glancetx.store.cachewarm import CacheWarmer
from glancetx.store.filesystem import FilesystemStore
from glancetx.uploadleases import UploadLeases
from glancetx.web.accesslog import AppendedLog
from glancetx.web.app import V1_ALIASES, GlanceAPI
from glancetx.web.channel import GlanceChannel
from glancetx.web.sendfile import Sendfile
from glancetx.web.streaming import StreamingRequest

log = Logger()


class ThreadPoolService(service.Service):
    """
    Ties a named, bounded thread pool's life to the service's.
    """

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


def _logFailure(f):
    def failed(failure):
        if failure.check(Unreachable):
            # The database is down: say so, once a round, without a traceback.
            log.warn("periodic task could not reach the database ({code})",
                     code=failure.value.args[0] if failure.value.args else "?")
            return None
        log.failure("periodic task failed", failure)

    def run():
        return f().addErrback(failed)
    return run


class StopInOrder(service.MultiService):
    """
    Children stop one after another, the last added first, each once the
    one before it has finished: the listening port closes, then uploads
    under way are ended and cleaned up while the registry and the thread
    pools, added earlier, still run.  (MultiService stops all its children
    at once.)
    """

    def stopService(self):
        service.Service.stopService(self)
        return Deferred.fromCoroutine(self._stopAll())

    async def _stopAll(self) -> None:
        for child in reversed(list(self)):
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                log.failure("stopping {service}", service=child)


class UploadsService(service.Service):
    """
    At shutdown, ends the uploads under way and waits for their images to
    be killed and their partial bytes removed (L{ImageService.stopUploads}).
    """

    def __init__(self, images) -> None:
        self.images = images

    def stopService(self):
        super().stopService()
        return Deferred.fromCoroutine(self.images.stopUploads())


class RegistryService(service.Service):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def stopService(self):
        super().stopService()
        return self.registry.close()


class GlanceSite(server.Site):
    """
    A Site whose requests stream upload bodies; it answers the streaming
    request's question of which requests are uploads.

    The access log (combined log format) goes to the twistd log, as
    twistd web's does, unless C{accessLog} names a file of its own: a line
    through the log observers costs about as much again as a HEAD
    request's own work, a line written to a file a few microseconds.
    """

    protocol = GlanceChannel
    requestFactory = StreamingRequest
    displayTracebacks = False

    def __init__(self, api: GlanceAPI, reactor, accessLog: str = "") -> None:
        super().__init__(api.resource(), logPath=accessLog or None)
        self.api = api
        self.reactor = reactor

    #: When a failed access log write was last said (reactor seconds).
    _logFailureSaid: Optional[float] = None

    def log(self, request) -> None:
        """
        The access log line.  A write that fails (a full disk) is said at
        most once a minute; it raised out of twisted.web's C{finish}
        before the request was cleaned up, with a traceback per request,
        and a C{Connection: close} connection stayed open.
        """
        try:
            super().log(request)
        except OSError as e:
            now = self.reactor.seconds()
            if self._logFailureSaid is None or now - self._logFailureSaid >= 60:
                self._logFailureSaid = now
                log.warn("the access log {path} cannot be written ({error}); requests"
                         " go on, unlogged", path=self.logPath, error=e.strerror or str(e))

    def _openLogFile(self, path: str) -> AppendedLog:
        # Not twisted.web's LogFile, which rotated it every megabyte into
        # files that were never deleted (see glancetx.web.accesslog).
        return AppendedLog(path, self.reactor)

    def isUpload(self, method: bytes, path: bytes) -> bool:
        return self.api.isUpload(method, path)

    def getResourceFor(self, request):
        # /v1.0/... and /v1.1/... route as /v1/... (see V1_ALIASES); the
        # request's uri, and so the access log, keeps what the client sent.
        if request.postpath and request.postpath[0] in V1_ALIASES:
            request.postpath[0] = b"v1"
        return super().getResourceFor(request)


def _failureIn(output: str) -> str:
    """
    The message of the exception a Python process's C{output} ends with:
    the first line of its last traceback that is not a frame, without the
    exception's class (SQLAlchemy's messages end in a link and the SQL).
    """
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    for line in lines[starts[-1] + 1:] if starts else reversed(lines):
        if line.strip() and not line.startswith(" "):
            head, sep, message = line.partition(": ")
            return message if sep and " " not in head else line
    return "unknown error"


def prepareRegistry(url: str) -> None:
    """
    Create or upgrade the schema of the embedded SQLite registry; for a
    shared database, insist it was synced with C{glancetx-manage db sync}.

    Alembic runs in a child process: it is needed for seconds at start-up,
    and its modules would otherwise stay resident for the server's life.
    """
    if url.startswith("sqlite"):
        # The file's path, without a ?query (which named a file of its own).
        path = make_url(url).database or ""
        try:
            if path:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            current = schemaRevision(url)
        except OSError as e:
            raise ConfigError("sql_connection: cannot create the directory of %s: %s"
                              % (path, e.strerror))
        except Exception as e:
            # sqlite3's own text ("unable to open database file"): a
            # directory that is read-only or not a directory.
            raise ConfigError("sql_connection: cannot open %s: %s"
                              % (path, str(getattr(e, "orig", e)).splitlines()[0]))
        if current != HEAD_REVISION:
            done = subprocess.run(
                [sys.executable, "-c",
                 "import sys; from glancetx.registry import migrate; migrate.sync(sys.argv[1])",
                 url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise ConfigError("sql_connection: migrating the database failed: %s"
                                  % (_failureIn(done.stdout.decode("utf-8", "replace")),))
        if path:
            useWAL(path)
        return
    try:
        current = schemaRevision(url)
    except Exception as e:
        raise ConfigError("sql_connection: cannot connect: %s" % (str(e).splitlines()[0],))
    refuseUnknownRevision(current, "sql_connection: ")
    if current is None:
        raise ConfigError("sql_connection: " + noSchema(url))
    if current != HEAD_REVISION:
        raise ConfigError("sql_connection: database schema is at %s, not %s; run"
                          " 'glancetx-manage db sync' first" % (current, HEAD_REVISION))


def useWAL(path: str) -> None:
    """
    Put the SQLite file in WAL mode once, at start, while nothing else has
    it open: the switch needs an exclusive lock, and the registry's pooled
    connections (the statistics refresh among them) open side by side.
    """
    import sqlite3

    db = sqlite3.connect(path, timeout=30)
    try:
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()


def noSchema(url: str) -> str:
    """
    What to say of a database with no glancetx revision: one that has its
    tables all the same holds what a failed sync left (MySQL's DDL is not
    undone), and another sync would fail on them.
    """
    if _lookAt(url, lambda conn: conn.dialect.has_table(conn, "images")):
        return ("the database has glancetx's tables but no schema revision (left by a db sync"
                " that failed part way?): drop them, then run 'glancetx-manage db sync'")
    return "the database has no glancetx schema; run 'glancetx-manage db sync' first"


def schemaRevision(url: str):
    """
    The alembic revision the database is at (None when it has no schema),
    read without importing alembic.
    """
    def revision(conn):
        if not conn.dialect.has_table(conn, "alembic_version"):
            return None
        return conn.execute("SELECT version_num FROM alembic_version").scalar()
    return _lookAt(url, revision)


def _lookAt(url: str, look):
    """
    What C{look} finds over one short-lived connection to C{url}.
    """
    import sqlalchemy

    from glancetx.registry.timeouts import connectArgs

    engine = sqlalchemy.create_engine(url, connect_args=connectArgs(url, quick=True))
    try:
        with engine.connect() as conn:
            return look(conn)
    finally:
        engine.dispose()


def makeStores(config: Config, reactor, diskPool: ThreadPool,
               budget: Optional[SharedBudget] = None):
    stores = {}
    if budget is None:
        budget = SharedBudget(total=0)
    warmer = None
    if config.filesystem_store_direct_io and config.filesystem_store_warm_cache:
        # Every upload in flight holds a share of the budget: new images
        # are read into the cache only while none is.
        warmer = CacheWarmer(reactor, diskPool, idle=lambda: budget.holders == 0)
        reactor.addSystemEventTrigger("before", "shutdown", warmer.stop)
    fs = FilesystemStore(config.filesystem_store_datadir, reactor, diskPool, budget,
                         directIO=config.filesystem_store_direct_io, warmer=warmer,
                         earlyFlush=config.filesystem_store_early_flush)
    fs.prepare()
    stores["file"] = fs
    if "http" in config.stores or "s3" in config.stores or "swift" in config.stores:
        from glancetx.store import remote
        stores.update(remote.makeRemoteStores(config, reactor))
    return stores


def makeAccess(config: Config, reactor):
    """
    The policy, property protections and auth strategy the options name.
    """
    from glancetx.auth import makeAuth
    from glancetx.policy import Policy
    from glancetx.protections import PropertyProtections

    raw = config.raw
    policyFile = raw.get("policy_file", "").strip()
    policy = Policy.fromFile(policyFile, reactor) if policyFile else Policy.defaults()
    protectionFile = raw.get("property_protection_file", "").strip()
    if protectionFile:
        protections = PropertyProtections.fromFile(
            protectionFile, raw.get("property_protection_rule_format", "roles").strip(),
            policy)
    else:
        protections = PropertyProtections.allowAll()
    return policy, protections, makeAuth(raw, policy, reactor)


#: glibc mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tuneMalloc(arenas: int = 2, mmapThreshold: int = 1024 * 1024,
               trimThreshold: int = 16 * 1024 * 1024) -> None:
    """
    Fit glibc's allocator to a stream of 256 KiB socket reads.

    Each thread that allocates gets its own malloc arena; chunks of image
    data allocated on the reactor thread and freed on disk threads then
    leave every arena holding freed memory.  Two arenas keep the resident
    size near what is live (what MALLOC_ARENA_MAX=2 does).

    Left to itself, glibc serves each chunk with a fresh mmap, or from heap
    top that it gives back to the kernel as soon as the chunk is freed;
    either way each chunk's pages fault in again, one 4 KiB page at a time:
    150,000 page faults and about 0.7 s of kernel time per GiB uploaded
    (bench.threadcpu; /proc/PID/stat minflt).  Serving chunks below 1 MiB
    from the heap, and keeping up to 16 MiB of free heap, takes that to a
    few hundred faults.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(_M_ARENA_MAX, arenas)
        libc.mallopt(_M_MMAP_THRESHOLD, mmapThreshold)
        libc.mallopt(_M_TRIM_THRESHOLD, trimThreshold)
    except (OSError, AttributeError):
        pass


def buildService(config: Config, reactor=None):
    """
    Build the whole service: thread pools, registry, stores, the image
    service, and the listening site.
    """
    if reactor is None:
        from twisted.internet import reactor
    tuneMalloc()
    reactor.addSystemEventTrigger("before", "shutdown", quietRepeatedStops, reactor)
    sayOnHangUp()
    top = StopInOrder()
    diskPool = ThreadPool(1, config.disk_threads, name="glancetx-disk")
    ThreadPoolService(diskPool).setServiceParent(top)
    cpuPool = ThreadPool(1, 2, name="glancetx-cpu")
    ThreadPoolService(cpuPool).setServiceParent(top)
    prepareRegistry(config.sql_connection)
    registry = Registry(config.sql_connection, reactor)
    RegistryService(registry).setServiceParent(top)
    stats = TimerService(600, _logFailure(registry.optimize))
    stats.clock = reactor
    stats.setServiceParent(top)
    # One upload memory budget for the hashers and the disk writers.
    budget = SharedBudget()
    stores = makeStores(config, reactor, diskPool, budget)
    policy, protections, auth = makeAccess(config, reactor)
    notifiers, notifierServices = notifiersFromConfig(reactor, config.raw)
    # They stop after the uploads under way have ended, so the events of
    # those go out first.
    for s in notifierServices:
        s.setServiceParent(top)
    leases = UploadLeases(registry, config.upload_lease_seconds)
    images = ImageService(registry=registry, stores=stores, config=config,
                          notifier=Notifiers(notifiers), reactor=reactor,
                          policy=policy, protections=protections, cpuPool=cpuPool,
                          budget=budget, leases=leases)
    # Every process renews its own leases and kills uploads whose process
    # died; both run at start too, so a restart ends what a crash left.
    for job in (leases.renew, images.killAbandonedUploads):
        timer = TimerService(leases.interval, _logFailure(job))
        timer.clock = reactor
        timer.setServiceParent(top)
    sendfilePool = ThreadPool(1, config.disk_threads * 2, name="glancetx-sendfile")
    ThreadPoolService(sendfilePool).setServiceParent(top)
    sendfile = Sendfile(reactor, sendfilePool, limit=config.disk_threads * 2,
                        stallSeconds=config.client_socket_timeout)
    reactor.addSystemEventTrigger("before", "shutdown", sendfile.stop)
    # With delayed_delete off too: a delete whose store was down leaves
    # its image pending_delete for the scrubber.
    scrubber = TimerService(config.wakeup_time, _logFailure(images.scrub))
    scrubber.clock = reactor
    scrubber.setServiceParent(top)
    api = GlanceAPI(images, config, auth, sendfile)
    if config.access_log:
        try:
            os.makedirs(os.path.dirname(config.access_log), exist_ok=True)
            # Opened for real once the port listens, where a failure was a
            # traceback.
            with open(config.access_log, "ab"):
                pass
        except OSError as e:
            raise ConfigError("access_log: cannot open %s: %s"
                              % (config.access_log, e.strerror))
    site = GlanceSite(api, reactor, config.access_log)
    UploadsService(images).setServiceParent(top)
    checkCanListen(config.port)
    if isinstance(auth, NoAuth) and listensBeyondLoopback(config.port):
        log.warn("auth_strategy is noauth and the API listens beyond loopback ({port}):"
                 " every caller who can reach it is an admin", port=config.port)
    listeningService(config.port, site, reactor).setServiceParent(top)
    top.api = api
    return top
