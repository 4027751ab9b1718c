"""
Schema creation and upgrade with alembic.

These calls block: they run from the C{glancetx-manage} command and at
start-up before the reactor runs, never from a request.
"""

import os

import sqlalchemy
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from glancetx.errors import ConfigError
from glancetx.registry.schema import refuseUnknownRevision
from glancetx.registry.timeouts import connectArgs

_HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


def _alembicConfig() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", _HERE)
    return cfg


def headRevision() -> str:
    return ScriptDirectory.from_config(_alembicConfig()).get_current_head()


def currentRevision(url: str):
    engine = sqlalchemy.create_engine(url, connect_args=connectArgs(url, quick=True))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def sync(url: str, revision: str = "head") -> None:
    """
    Bring the database at C{url} up to C{revision}.
    """
    # A migration may rebuild tables for minutes, so its own connection
    # has no read limit; asking the revision first, with one, ends a
    # sync against a database that says nothing.
    current = currentRevision(url)
    refuseUnknownRevision(current)
    engine = sqlalchemy.create_engine(url, connect_args=connectArgs(url, longStatements=True))
    try:
        with engine.begin() as conn:
            _oneAtATime(conn)
            cfg = _alembicConfig()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


#: PostgreSQL's advisory lock key for migrations ("glancetx" in ASCII).
_PG_LOCK = 0x676c616e63657478


#: MySQL's lock for migrations of the connection's database (a lock's
#: name is at most 64 characters; a database's may be 64 itself).
_MYSQL_LOCK = "SELECT GET_LOCK(CONCAT('glancetx:', SHA1(COALESCE(DATABASE(), ''))), 600)"


def _oneAtATime(conn) -> None:
    """
    Hold the database's lock for migrations until this one ends.  Two
    syncs at once (two hosts' deploy scripts) raced on MariaDB: one failed
    with "Table 'images' already exists", or with alembic's own error, as
    both ran the same migration.  The second now waits, then finds the
    schema current.

    On SQLite the migration is one transaction that holds the write lock
    from its start: pysqlite begins none before DDL, so each CREATE
    committed on its own, a migration that failed half way left a file
    no sync could finish, and two servers started together raced.
    """
    dialect = conn.dialect.name
    if dialect == "sqlite":
        conn.execute("BEGIN IMMEDIATE")
    elif dialect == "postgresql":
        conn.execute("SELECT pg_advisory_xact_lock(%d)" % (_PG_LOCK,))
    elif dialect == "mysql":
        # Held by the session until the engine is disposed of: MySQL's DDL
        # commits, but does not release it.
        # One lock per database (MySQL's are the server's): a long
        # migration of one database held up every other's sync.
        got = conn.execute(_MYSQL_LOCK).scalar()
        if got != 1:
            raise ConfigError("another db sync has held the migration lock for 10 minutes")
