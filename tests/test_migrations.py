from twisted.trial.unittest import TestCase

from glancetx.registry import migrate
from glancetx.registry.schema import HEAD_REVISION, metadata
from glancetx.service import prepareRegistry, schemaRevision
from glancetx.errors import ConfigError
from tests import dbs


class MigrationTests(TestCase):
    def test_headConstantMatchesAlembic(self):
        self.assertEqual(HEAD_REVISION, migrate.headRevision())

    def test_sqliteMigratedAtStart(self):
        url = dbs.sqliteURL(self)
        self.assertIsNone(schemaRevision(url))
        prepareRegistry(url)
        self.assertEqual(schemaRevision(url), HEAD_REVISION)
        prepareRegistry(url)  # idempotent

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
        self.assertIn("glancetx-manage db sync", str(e))
        migrate.sync(url)
        prepareRegistry(url)

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
