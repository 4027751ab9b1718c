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

from glancetx.registry.timeouts import connectArgs

_HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


def _alembicConfig() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", _HERE)
    return cfg


def headRevision() -> str:
    return ScriptDirectory.from_config(_alembicConfig()).get_current_head()


def currentRevision(url: str):
    engine = sqlalchemy.create_engine(url, connect_args=connectArgs(url))
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
    currentRevision(url)
    engine = sqlalchemy.create_engine(url, connect_args=connectArgs(url, longStatements=True))
    try:
        with engine.begin() as conn:
            cfg = _alembicConfig()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
