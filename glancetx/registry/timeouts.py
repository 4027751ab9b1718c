"""
How long the database may take, and the drivers' own limits behind that.

A database that accepts connections and then says nothing (a hung server,
a proxy or firewall that swallows traffic, another client's lock) held
every request that touched it for as long as it stayed silent: no answer,
not even a 503, and the SIGTERM that should end the server waited too.
TCP notices no peer that acknowledges and stays silent, and libpq has no
read timeout, so the limit that always holds is the registry's own
deadline on each unit of work (L{WORK_SECONDS}); the drivers' limits
here bound what runs on after it: connecting, and PyMySQL's reads.
"""

from typing import Any, Dict

from sqlalchemy.engine.url import make_url

#: A unit of registry work, waiting for a pooled connection included.
WORK_SECONDS = 30.0

#: How long a statement may wait for a lock that another transaction
#: holds (a row another process is writing; SQLite's one writer): less
#: than L{WORK_SECONDS}, so that the wait ends in the database, which rolls
#: the statement back.  Past the registry's deadline the work would go on
#: in its thread, holding its connection, and could still commit after
#: its caller had answered that it failed.
LOCK_SECONDS = 20

#: How long a PostgreSQL or MariaDB session may sit inside a transaction without a
#: statement running before the database ends it, rolling back and
#: releasing its locks.  A transaction runs in one trip to its
#: connection's thread, statement after statement, so only a process that
#: froze (SIGSTOP, a VM paused) or hung mid-transaction sits there; its
#: locks held up every other process's write to the rows, and the reaper
#: that should kill its abandoned uploads, for as long as it stayed so.
IDLE_IN_TRANSACTION_SECONDS = 60

#: How long one statement may run before the database ends it: the
#: registry's deadline.  Past it the caller has had its 503, and a
#: statement the database went on with (a list that walked a million rows
#: on MariaDB) held a connection and a core for nothing.
STATEMENT_SECONDS = int(WORK_SECONDS)

#: Connecting, the server's greeting and the login included (libpq's
#: connect_timeout covers all of them; PyMySQL's only the TCP connect, its
#: read timeout the rest).
CONNECT_SECONDS = 10

#: PyMySQL's socket reads and writes: longer than L{WORK_SECONDS}, so the
#: registry's deadline answers first and this frees the worker thread.
MYSQL_IO_SECONDS = 60


#: Seconds a migration of an SQLite file waits for another's to end (as
#: MySQL's migration lock waits).
MIGRATION_WAIT_SECONDS = 600


def connectArgs(url: str, longStatements: bool = False, quick: bool = False) -> Dict[str, Any]:
    """
    The driver's connect arguments for C{url}.  C{longStatements} (a
    migration that rebuilds tables) leaves reads without a limit;
    C{quick} (a look at the schema's revision) gives them the connect's.
    """
    args: Dict[str, Any] = {}
    if url.startswith("postgresql"):
        args["connect_timeout"] = CONNECT_SECONDS
        # (lock_timeout is set once connected, by postgresLimits: an
        # options startup parameter is refused by PgBouncer.)
    elif url.startswith("sqlite") and longStatements:
        # Another process's migration holds the write lock while it runs.
        args["timeout"] = MIGRATION_WAIT_SECONDS
    elif url.startswith("mysql"):
        args["connect_timeout"] = CONNECT_SECONDS
        if not longStatements:
            io = CONNECT_SECONDS if quick else MYSQL_IO_SECONDS
            args["read_timeout"] = io
            args["write_timeout"] = io
            args["init_command"] = "SET SESSION innodb_lock_wait_timeout = %d" % (
                LOCK_SECONDS,)
    # What the operator's URL says (?connect_timeout=...) wins.
    given = make_url(url).query
    return {k: v for k, v in args.items() if k not in given}


def postgresLimits(dbapiConnection, record) -> None:
    """
    A new PostgreSQL connection's lock waits end after L{LOCK_SECONDS}, its
    statements after L{STATEMENT_SECONDS}, and its session after
    L{IDLE_IN_TRANSACTION_SECONDS} idle inside a transaction (a SQLAlchemy
    C{connect} listener; migrations connect without it).
    """
    cursor = dbapiConnection.cursor()
    cursor.execute("SET lock_timeout = %d" % (LOCK_SECONDS * 1000,))
    cursor.execute("SET statement_timeout = %d" % (STATEMENT_SECONDS * 1000,))
    cursor.execute("SET idle_in_transaction_session_timeout = %d"
                   % (IDLE_IN_TRANSACTION_SECONDS * 1000,))
    cursor.close()
    dbapiConnection.commit()


def mariadbLimits(dbapiConnection, record) -> None:
    """
    A new MariaDB connection's statements end after L{STATEMENT_SECONDS},
    and its session after L{IDLE_IN_TRANSACTION_SECONDS} idle inside a
    transaction (a SQLAlchemy C{connect} listener).  MySQL has no limit on
    an idle transaction and one only for SELECTs; its sessions keep the
    server's settings.
    """
    if "mariadb" not in dbapiConnection.get_server_info().lower():
        return
    cursor = dbapiConnection.cursor()
    cursor.execute("SET SESSION max_statement_time = %d" % (STATEMENT_SECONDS,))
    cursor.execute("SET SESSION idle_transaction_timeout = %d"
                   % (IDLE_IN_TRANSACTION_SECONDS,))
    cursor.close()
