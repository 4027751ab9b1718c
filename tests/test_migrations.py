from twisted.trial.unittest import TestCase

from glancetx.registry import migrate
from glancetx.registry.schema import HEAD_REVISION, REVISIONS, metadata
from glancetx.service import prepareRegistry, schemaRevision
from glancetx.errors import ConfigError
from tests import dbs


class MigrationTests(TestCase):
    def test_headConstantMatchesAlembic(self):
        self.assertEqual(HEAD_REVISION, migrate.headRevision())
        from alembic.script import ScriptDirectory
        walk = ScriptDirectory.from_config(migrate._alembicConfig()).walk_revisions()
        self.assertEqual(REVISIONS, tuple(reversed([r.revision for r in walk])))

    def test_syncsAtOnceOnMariaDB(self):
        """
        Two db syncs at once on a new database (two hosts' deploy scripts),
        each in its own process, both succeed: one waits for the other's
        migration lock. They raced before, and one failed about half the
        time.  (Not threads of one process: alembic's context is global.)
        """
        for _ in range(3):
            self.syncAtOnce(dbs.mysqlURL(self), 2)

    def syncAtOnce(self, url, count):
        """
        Run C{count} syncs of C{url} at once, each in its own process, and
        check that each succeeded and left the schema current.
        """
        import subprocess
        import sys
        syncs = [subprocess.Popen(
            [sys.executable, "-c", "import sys; from glancetx.registry import migrate;"
             " migrate.sync(sys.argv[1])", url],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(count)]
        for sync in syncs:
            out, _ = sync.communicate(timeout=120)
            self.assertEqual(sync.returncode, 0, out)
        self.assertEqual(migrate.currentRevision(url), HEAD_REVISION)

    def test_sqliteMigrationIsAllOrNothing(self):
        """
        A migration of an SQLite file that fails part way leaves nothing
        of itself: each CREATE committed on its own, and the file, half
        built, could then never be synced ("table images already exists").
        """
        import sqlite3
        url = dbs.sqliteURL(self)
        path = url[len("sqlite:///"):]
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE image_members (x INTEGER)")
        db.commit()
        self.assertRaises(Exception, migrate.sync, url)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        self.assertEqual(tables, {"image_members"})
        db.execute("DROP TABLE image_members")
        db.commit()
        db.close()
        migrate.sync(url)
        self.assertEqual(migrate.currentRevision(url), HEAD_REVISION)

    def test_syncsAtOnceOnSQLite(self):
        """
        Syncs at once on a new SQLite file, each in its own process (two
        servers started together), all succeed: the others wait for the
        first's write lock.  One failed in about half the rounds.
        """
        for _ in range(3):
            self.syncAtOnce(dbs.sqliteURL(self), 3)

    def test_mariaDBMigrationLockIsPerDatabase(self):
        """
        A sync of one MariaDB database does not wait for another's: the
        migration lock was one for the whole server.
        """
        import sqlalchemy
        from twisted.internet.threads import deferToThread
        busy, url = dbs.mysqlURL(self), dbs.mysqlURL(self)
        engine = sqlalchemy.create_engine(busy)
        self.addCleanup(engine.dispose)
        holder = engine.connect()
        self.addCleanup(holder.close)
        self.assertEqual(holder.execute(migrate._MYSQL_LOCK.replace("600", "0")).scalar(), 1)
        self.assertEqual(holder.execute("SELECT GET_LOCK('glancetx-db-sync', 0)").scalar(), 1)

        def synced(_):
            self.assertEqual(migrate.currentRevision(url), HEAD_REVISION)
        return deferToThread(migrate.sync, url).addCallback(synced)

    def test_sqliteMigratedAtStart(self):
        url = dbs.sqliteURL(self)
        self.assertIsNone(schemaRevision(url))
        prepareRegistry(url)
        self.assertEqual(schemaRevision(url), HEAD_REVISION)
        prepareRegistry(url)  # idempotent

    def test_sqliteMigrationFailureSaysWhy(self):
        """
        A migration at start that fails says the database's reason in one
        line: it said only "(Background on this error at: ...)", the last
        line of the migration's traceback.
        """
        import sqlite3
        url = dbs.sqliteURL(self)
        db = sqlite3.connect(url[len("sqlite:///"):])
        db.execute("CREATE TABLE images (x INTEGER)")
        db.commit()
        db.close()
        e = self.assertRaises(ConfigError, prepareRegistry, url)
        self.assertEqual(str(e), "sql_connection: migrating the database failed:"
                                 " (sqlite3.OperationalError) table images already exists")

    def test_sqliteURLWithAQuery(self):
        """
        A query on an SQLite URL (sqlite:////path?timeout=30) is no part of
        the file's name: a file named "glance.sqlite?timeout=30" was made.
        """
        import os
        url = dbs.sqliteURL(self)
        prepareRegistry(url + "?timeout=30")
        names = os.listdir(os.path.dirname(url[len("sqlite:///"):]))
        self.assertEqual([n for n in names if "?" in n], [])
        self.assertIn("glance.sqlite", names)
        self.assertEqual(schemaRevision(url), HEAD_REVISION)

    def test_anotherProgramsSchema(self):
        """
        A database another program migrated (Glance's own: its revisions
        are named so) is said to be that, not a newer glancetx's.
        """
        from glancetx.registry.schema import newerSchema
        self.assertIn("no glancetx revision", newerSchema("2024_1_contract01"))
        self.assertIn("a newer glancetx", newerSchema("0099"))

    def test_refuseUnknownRevision(self):
        """
        Every revision glancetx knows passes, and so does a database with
        no schema yet; any other stops with the caller's prefix.
        """
        from glancetx.errors import ConfigError
        from glancetx.registry.schema import refuseUnknownRevision
        for known in REVISIONS + (None,):
            refuseUnknownRevision(known)
        e = self.assertRaises(ConfigError, refuseUnknownRevision, "0099", "sql_connection: ")
        self.assertTrue(str(e).startswith("sql_connection: database schema is at 0099"), str(e))

    def test_sqliteInWALModeAtStart(self):
        """
        The embedded database is switched to WAL before the server's pooled
        connections open: switching needs an exclusive lock, which failed
        ("database is locked") when two of them opened side by side.
        """
        import sqlite3
        url = dbs.sqliteURL(self)
        prepareRegistry(url)
        db = sqlite3.connect(url[len("sqlite:///"):])
        self.addCleanup(db.close)
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "wal")

    def test_sharedDatabaseMustBeSynced(self):
        url = dbs.postgresURL(self)
        e = self.assertRaises(ConfigError, prepareRegistry, url)
        self.assertEqual(str(e), "sql_connection: the database has no glancetx schema; run"
                                 " 'glancetx-manage db sync' first")
        migrate.sync(url)
        prepareRegistry(url)

    def test_halfBuiltSchemaIsSaidSo(self):
        """
        A database with glancetx's tables and no revision (a first sync on
        MariaDB that failed part way: its DDL is not undone) is said to be
        that: the advice to run db sync failed on the tables left.
        """
        import sqlalchemy
        url = dbs.mysqlURL(self)
        engine = sqlalchemy.create_engine(url)
        self.addCleanup(engine.dispose)
        with engine.begin() as conn:
            conn.execute("CREATE TABLE images (id VARCHAR(36))")
        e = self.assertRaises(ConfigError, prepareRegistry, url)
        self.assertIn("glancetx's tables but no schema revision", str(e))

    def test_deletedImagesKeepTheirLocationsToBeRemoved(self):
        """
        Migration 0005 keeps the locations of images deleted before it, so
        that a scrubber removes what their removals left (they were
        cleared, and a removal that had died or failed left its bytes for
        good): except where an image that is not deleted may record the
        same bytes, whose they are now: matched by the object's name, since
        one object has several spellings.  Other images keep theirs.
        """
        import datetime

        import sqlalchemy

        from glancetx.registry.schema import images
        rows = (("a", "deleted", "a"), ("b", "pending_delete", "b"), ("c", "active", "c"),
                ("d", "deleted", "c"), ("e", "deleted", "e"), ("f", "queued", None),
                ("g", "deleted", "f'\\"), ("h", "saving", "f'\\"),
                ("i", "deleted", "s3://k:s@h/b/obj"), ("j", "active", "s3+http://k2:t@h/b/obj?x"))
        for url in (dbs.sqliteURL(self), dbs.postgresURL(self), dbs.mysqlURL(self)):
            migrate.sync(url, "0004")
            engine = sqlalchemy.create_engine(url)
            self.addCleanup(engine.dispose)
            with engine.begin() as conn:
                for name, status, at in rows:
                    conn.execute(images.insert().values(
                        id=name, status=status, is_public=False, protected=False, min_disk=0,
                        min_ram=0, created_at=datetime.datetime(2026, 12, 1),
                        deleted=status not in ("active", "queued", "saving"),
                        location=at and ("" if "://" in at else "file:///images/") + at))
            migrate.sync(url)
            with engine.connect() as conn:
                found = sorted(conn.execute(sqlalchemy.select([images.c.id, images.c.location])))
            self.assertEqual([tuple(r) for r in found],
                             [("a", "file:///images/a"), ("b", "file:///images/b"),
                              ("c", "file:///images/c"), ("d", None),
                              ("e", "file:///images/e"), ("f", None), ("g", None),
                              ("h", "file:///images/f'\\"), ("i", None),
                              ("j", "s3+http://k2:t@h/b/obj?x")], url)

    def test_migrationsMatchTheTables(self):
        """
        The schema alembic builds is the one the code queries.
        """
        import sqlalchemy
        url = dbs.mysqlURL(self)
        migrate.sync(url)
        engine = sqlalchemy.create_engine(url)
        self.addCleanup(engine.dispose)
        inspector = sqlalchemy.inspect(engine)
        for table in metadata.sorted_tables:
            columns = {c["name"] for c in inspector.get_columns(table.name)}
            self.assertEqual(columns, {c.name for c in table.columns}, table.name)

    def test_migrationsMatchTheDeclaredSchema(self):
        """
        On every database, the schema the migrations build is the one
        schema.py declares, types and server defaults included (alembic's
        own comparison): on MySQL the location and property values were
        MEDIUMTEXT in the database and TEXT in the declaration.
        """
        import sqlalchemy
        from alembic.autogenerate import compare_metadata
        from alembic.runtime.migration import MigrationContext
        for url in (dbs.sqliteURL(self), dbs.postgresURL(self), dbs.mysqlURL(self)):
            migrate.sync(url)
            engine = sqlalchemy.create_engine(url)
            self.addCleanup(engine.dispose)
            with engine.connect() as conn:
                context = MigrationContext.configure(
                    conn, opts={"compare_type": True, "compare_server_default": True})
                self.assertEqual(compare_metadata(context, metadata), [], url)

    def test_mysqlTextIsExactUTF8(self):
        """
        On MySQL/MariaDB, even in a database made in latin1, the text
        columns take any Unicode and compare byte for byte (see migration
        0004).
        """
        import sqlalchemy
        url = dbs.mysqlURL(self, charset="latin1")
        migrate.sync(url)
        engine = sqlalchemy.create_engine(url)
        self.addCleanup(engine.dispose)
        with engine.begin() as conn:
            for n, owner in enumerate(("alice", "ALICE", "alicé", "alice ")):
                conn.execute(
                    "INSERT INTO images (id, name, status, is_public, min_disk, min_ram,"
                    " owner, protected, created_at, deleted) VALUES"
                    " (%s, %s, 'active', 0, 0, 0, %s, 0, NOW(), 0)",
                    ("id-%d" % (n,), "Ωmega 😀", owner))
            self.assertEqual(conn.execute(
                "SELECT COUNT(*) FROM images WHERE owner = 'alice'").scalar(), 1)
            self.assertEqual(conn.execute(
                "SELECT DISTINCT name FROM images").scalar(), "Ωmega 😀")


class ManageCommandTests(TestCase):
    """
    C{glancetx-manage}, as an operator runs it.
    """

    def manage(self, *args):
        import subprocess
        import sys
        done = subprocess.run([sys.executable, "-m", "glancetx.manage"] + list(args),
                              capture_output=True, text=True, timeout=120)
        return done.returncode, done.stdout, done.stderr

    def test_newerSchemaIsSaidSo(self):
        """
        A database that a newer glancetx migrated: the server and db sync
        each say so in one line; the server advised running db sync, and
        db sync printed alembic's traceback.
        """
        import os

        import sqlalchemy
        url = dbs.postgresURL(self)
        migrate.sync(url)
        engine = sqlalchemy.create_engine(url)
        with engine.begin() as conn:
            conn.execute("UPDATE alembic_version SET version_num = '0099'")
        engine.dispose()
        e = self.assertRaises(ConfigError, prepareRegistry, url)
        self.assertIn("at 0099, which this glancetx does not know", str(e))
        self.assertNotIn("db sync", str(e))
        conf = os.path.abspath(self.mktemp())
        with open(conf, "w") as f:
            f.write("[DEFAULT]\nsql_connection = %s\n" % (url,))
        code, out, err = self.manage("--config", conf, "db", "sync")
        self.assertEqual((code, err.count("\n")), (1, 1), err)
        self.assertIn("a newer glancetx has migrated it", err)

    def test_syncAndVersion(self):
        """
        On the embedded default, sync makes the data directory and the
        database; version then names the head revision.
        """
        import os
        dataDir = os.path.join(os.path.abspath(self.mktemp()), "new", "data")
        code, out, err = self.manage("--data-dir", dataDir, "db", "version")
        self.assertEqual((code, err.count("\n")), (1, 1), err)
        self.assertIn("the database cannot be used", err)
        code, out, err = self.manage("--data-dir", dataDir, "db", "sync")
        self.assertEqual((code, out.strip()), (0, "database is at revision %s" % (HEAD_REVISION,)),
                         err)
        self.assertTrue(os.path.exists(os.path.join(dataDir, "glance.sqlite")))
        code, out, err = self.manage("--data-dir", dataDir, "db", "version")
        self.assertEqual((code, out.strip()), (0, HEAD_REVISION), err)

    def test_versionOfAnEmptyDatabase(self):
        """
        A database that exists but was never synced has no revision to
        name: version says so in one line and fails, rather than print
        C{None} as if that were one.
        """
        import os
        import sqlite3
        dataDir = os.path.abspath(self.mktemp())
        os.makedirs(dataDir)
        sqlite3.connect(os.path.join(dataDir, "glance.sqlite")).close()
        code, out, err = self.manage("--data-dir", dataDir, "db", "version")
        self.assertEqual((code, out, err.count("\n")), (1, "", 1), err)
        self.assertIn("the database has no glancetx schema; run 'glancetx-manage db sync'", err)

    def test_badConfigOrDatabaseIsOneLine(self):
        """
        A bad option, or a database that cannot be used, is one line that
        says which, never a traceback or the URL's password.
        """
        import os
        for text, why in [("sql_conection = sqlite:///x", "sql_conection"),
                          ("sql_connection = postgresql://glance:s3cret@127.0.0.1:1/glance",
                           "Connection refused"),
                          ("sql_connection = mysql+pymysql://root:s3cret@127.0.0.1:3306/x",
                           "Access denied"),
                          # The driver refuses its own arguments (a traceback).
                          ("sql_connection = mysql+pymysql://root:s3cret@127.0.0.1:3306/x"
                           "?connect_timeout=abc", "abc"),
                          ("sql_connection = mysql+pymysql://root:s3cret@127.0.0.1:3306/x"
                           "?charset=nosuch", "cannot be used")]:
            conf = os.path.abspath(self.mktemp())
            with open(conf, "w") as f:
                f.write("[DEFAULT]\n%s\n" % (text,))
            for action in ("sync", "version"):
                code, out, err = self.manage("--config", conf, "db", action)
                self.assertEqual((code, err.count("\n")), (1, 1), err)
                self.assertIn(why, err)
                self.assertNotIn("s3cret", err)
