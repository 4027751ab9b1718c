"""
Real databases for tests: each test gets its own database, created before
and dropped after it, or its own RabbitMQ virtual host.  PostgreSQL,
MariaDB and RabbitMQ run on this machine and in CI; where one is not
reachable the test is skipped, except under CI=true, where that is a
failure.
"""

import os
import shutil
import subprocess
import uuid

from twisted.trial.unittest import SkipTest

PG_ADMIN = os.environ.get("GLANCETX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL_ADMIN = os.environ.get("GLANCETX_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/")


def unavailable(what: str, why: str):
    message = "%s is not available: %s" % (what, why)
    if os.environ.get("CI") == "true":
        raise AssertionError(message)
    raise SkipTest(message)


def _name() -> str:
    return "glancetx_test_" + uuid.uuid4().hex[:12]


def sqliteURL(testCase) -> str:
    path = os.path.abspath(testCase.mktemp())
    os.makedirs(path)
    return "sqlite:///" + os.path.join(path, "glance.sqlite")


def postgresURL(testCase) -> str:
    try:
        import psycopg2
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres",
                                 dbname="postgres", connect_timeout=5)
    except Exception as e:
        unavailable("PostgreSQL", str(e).strip())
    admin.autocommit = True
    name = _name()
    with admin.cursor() as c:
        c.execute("CREATE DATABASE %s" % (name,))

    def drop():
        with admin.cursor() as c:
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                      " WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            c.execute("DROP DATABASE IF EXISTS %s" % (name,))
        admin.close()

    testCase.addCleanup(drop)
    return "postgresql://postgres@127.0.0.1:5432/" + name


def mysqlURL(testCase, charset: str = "utf8mb4") -> str:
    try:
        import pymysql
        admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="",
                                connect_timeout=5, autocommit=True)
    except Exception as e:
        unavailable("MariaDB", str(e).strip())
    name = _name()
    with admin.cursor() as c:
        c.execute("CREATE DATABASE %s CHARACTER SET %s" % (name, charset))

    def drop():
        with admin.cursor() as c:
            c.execute("DROP DATABASE IF EXISTS %s" % (name,))
        admin.close()

    testCase.addCleanup(drop)
    return "mysql+pymysql://root@127.0.0.1:3306/%s?charset=utf8mb4" % (name,)


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess:
    ctl = shutil.which("rabbitmqctl") or shutil.which("rabbitmqctl", path="/usr/sbin:/sbin")
    if ctl is None:
        unavailable("RabbitMQ", "rabbitmqctl is not installed")
    return subprocess.run([ctl, *args], capture_output=True, text=True, timeout=120)


def rabbitURL(testCase) -> str:
    """
    A virtual host of its own on the RabbitMQ at 127.0.0.1:5672 (guest,
    guest), made with rabbitmqctl and deleted after the test; its
    transport URL.
    """
    name = _name()
    made = _rabbitmqctl("add_vhost", name)
    if made.returncode:
        unavailable("RabbitMQ", (made.stderr or made.stdout).strip())
    testCase.addCleanup(_rabbitmqctl, "delete_vhost", name)
    allowed = _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    if allowed.returncode:
        raise AssertionError("rabbitmqctl set_permissions: " + (allowed.stderr or allowed.stdout))
    return "rabbit://guest:guest@127.0.0.1:5672/" + name


def alterWithin(url: str, seconds: int) -> None:
    """
    Add a column to C{url}'s images table, as a migration would, waiting
    at most C{seconds} for the table's lock; raises if that wait runs out.
    (Blocking: run it in a thread.)
    """
    name = url.rsplit("/", 1)[1].split("?")[0]
    if url.startswith("postgresql"):
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres",
                                dbname=name, connect_timeout=5)
        try:
            with conn.cursor() as c:
                c.execute("SET lock_timeout = '%ds'" % (seconds,))
                c.execute("ALTER TABLE images ADD COLUMN lock_probe integer")
            conn.commit()
        finally:
            conn.close()
        return
    import pymysql
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="",
                           database=name, connect_timeout=5, autocommit=True)
    try:
        with conn.cursor() as c:
            c.execute("SET SESSION lock_wait_timeout = %d" % (seconds,))
            c.execute("ALTER TABLE images ADD COLUMN lock_probe INT")
    finally:
        conn.close()


def holdWrites(url: str, imageId: str):
    """
    From a connection of its own, as another process would, take the lock
    that a write to C{imageId} in C{url} must wait for: the row's on
    PostgreSQL and MySQL, the database's one write lock on SQLite.
    Returns a function that lets it go.  (Blocking, but quick.)
    """
    if url.startswith("sqlite"):
        import sqlite3
        conn = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
    else:
        name = url.rsplit("/", 1)[1].split("?")[0]
        if url.startswith("postgresql"):
            import psycopg2
            conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres",
                                    dbname=name, connect_timeout=5)
        else:
            import pymysql
            conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="",
                                   database=name, connect_timeout=5)
        cursor = conn.cursor()
        cursor.execute("SELECT id FROM images WHERE id = %s FOR UPDATE", (imageId,))
        assert cursor.fetchall(), imageId

    def release() -> None:
        conn.rollback()
        conn.close()
    return release


def endConnections(url: str) -> int:
    """
    End, from the server's side, every connection to C{url}'s database
    (as a restart of the server, or its idle timeout, would).  Returns
    how many it ended.
    """
    name = url.rsplit("/", 1)[1].split("?")[0]
    if url.startswith("postgresql"):
        import psycopg2
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres",
                                 dbname="postgres", connect_timeout=5)
        admin.autocommit = True
        try:
            with admin.cursor() as c:
                c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
                return c.rowcount
        finally:
            admin.close()
    import pymysql
    admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="",
                            connect_timeout=5, autocommit=True)
    try:
        with admin.cursor() as c:
            c.execute("SELECT id FROM information_schema.processlist WHERE db = %s", (name,))
            ids = [row[0] for row in c.fetchall()]
            for i in ids:
                c.execute("KILL %d" % (i,))
            return len(ids)
    finally:
        admin.close()
