"""
C{glancetx-manage db sync|version|purge [--config FILE] [--data-dir DIR]}:
schema management for a shared database, run by an operator before
starting (or upgrading) the glancetx processes, and the purge of images
deleted long ago.
"""

import argparse
import sys

import sqlalchemy.exc
from alembic.util.exc import CommandError

from glancetx import config as cfg
from glancetx.errors import ConfigError
from glancetx.registry import migrate
from glancetx.registry.schema import refuseUnknownRevision


#: The oldest purge cut-off asked for: about 270 years.
MAX_AGE_DAYS = 100000


def main(argv=None) -> int:
    # --config and --data-dir before or after "db ACTION", as the usage
    # line above gives them.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="Glance-style INI file",
                        default=argparse.SUPPRESS)
    common.add_argument("--data-dir", default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="glancetx-manage", parents=[common])
    sub = parser.add_subparsers(dest="group", required=True)
    db = sub.add_parser("db", help="registry schema", parents=[common])
    db.add_argument("action", choices=["sync", "version", "purge"])
    # Glance's spellings too: glance-manage db purge --age_in_days --max_rows.
    db.add_argument("--age-in-days", "--age_in_days", dest="age", type=int, default=30,
                    help="purge: images deleted more than this many days ago (30)")
    db.add_argument("--max-rows", "--max_rows", dest="maxRows", type=int, default=100,
                    help="purge: at most this many images (100), -1 for all")
    args = parser.parse_args(argv)
    args.config = getattr(args, "config", None)
    args.data_dir = getattr(args, "data_dir", "glance-data")
    if args.action == "purge" and (args.age < 0 or args.maxRows == 0 or args.maxRows < -1):
        parser.error("--age-in-days must be 0 or more, --max-rows 1 or more (or -1)")
    if args.action == "purge" and args.age > MAX_AGE_DAYS:
        # Further back than datetime can count.
        parser.error("--age-in-days must be at most %d" % (MAX_AGE_DAYS,))
    config = None
    try:
        options = cfg.readINI(args.config) if args.config else {}
        config = cfg.build(cfg.DEFAULT_PORT, args.data_dir, options)
        if args.action == "sync":
            if config.sql_connection.startswith("sqlite:///"):
                import os
                os.makedirs(os.path.dirname(os.path.abspath(sqlalchemy.engine.url.make_url(
                    config.sql_connection).database)), exist_ok=True)
            migrate.sync(config.sql_connection)
            print("database is at revision %s" % (migrate.headRevision(),))
        elif args.action == "purge":
            from glancetx.registry.purge import purge
            current = migrate.currentRevision(config.sql_connection)
            refuseUnknownRevision(current)
            if current != migrate.headRevision():
                raise ConfigError("the database schema is not current; run db sync first")
            removed = purge(config.sql_connection, args.age, args.maxRows)
            print("removed %d images, %d image properties and %d image members deleted"
                  " more than %d days ago" % (removed["images"], removed["image_properties"],
                                              removed["image_members"], args.age))
        else:
            current = migrate.currentRevision(config.sql_connection)
            if current is None:
                raise ConfigError("the database has no glancetx schema;"
                                  " run 'glancetx-manage db sync'")
            print(current)
    except (ConfigError, CommandError) as e:
        print("glancetx-manage: %s" % (str(e).strip().splitlines() or ["failed"])[0],
              file=sys.stderr)
        return 1
    except sqlalchemy.exc.DBAPIError as e:
        # The driver's own first line says why (refused, no such database,
        # a bad password) without the URL, which may hold that password.
        reason = str(e.orig).strip().splitlines() or [type(e.orig).__name__]
        print("glancetx-manage: the database cannot be used: %s" % (reason[0],),
              file=sys.stderr)
        return 1
    except Exception as e:
        # A driver refusing its own arguments from the URL's query
        # (connect_timeout=abc, an unknown charset) raises what it likes.
        if config is None:
            raise
        reason = (str(e).strip().splitlines() or [""])[0]
        password = _password(config.sql_connection)
        if password:
            reason = reason.replace(password, "***")
        print("glancetx-manage: the database cannot be used: %s: %s"
              % (type(e).__name__, reason), file=sys.stderr)
        return 1
    return 0


def _password(url: str):
    try:
        return sqlalchemy.engine.url.make_url(url).password
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
