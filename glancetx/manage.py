"""
C{glancetx-manage db sync|version [--config FILE] [--data-dir DIR]}: schema
management for a shared database, run by an operator before starting (or
upgrading) the glancetx processes.
"""

import argparse
import sys

import sqlalchemy.exc
from alembic.util.exc import CommandError

from glancetx import config as cfg
from glancetx.errors import ConfigError
from glancetx.registry import migrate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="glancetx-manage")
    parser.add_argument("--config", help="Glance-style INI file")
    parser.add_argument("--data-dir", default="glance-data")
    sub = parser.add_subparsers(dest="group", required=True)
    db = sub.add_parser("db", help="registry schema")
    db.add_argument("action", choices=["sync", "version"])
    args = parser.parse_args(argv)
    try:
        options = cfg.readINI(args.config) if args.config else {}
        config = cfg.build(cfg.DEFAULT_PORT, args.data_dir, options)
        if args.action == "sync":
            if config.sql_connection.startswith("sqlite:///"):
                import os
                os.makedirs(os.path.dirname(os.path.abspath(
                    config.sql_connection[len("sqlite:///"):])), exist_ok=True)
            migrate.sync(config.sql_connection)
            print("database is at revision %s" % (migrate.headRevision(),))
        else:
            print(migrate.currentRevision(config.sql_connection))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
