"""
glancetx-manage db purge: images deleted long ago go, with their
properties and members; nothing a store or a scrubber still needs does.
"""

import datetime
import os
import subprocess
import sys

import sqlalchemy
from twisted.trial.unittest import TestCase

from glancetx.registry import migrate
from glancetx.registry import purge as purgeModule
from glancetx.registry.purge import purge
from glancetx.registry.schema import image_members, image_properties, image_uploads, images
from tests import dbs

NOW = datetime.datetime(2026, 12, 3, 12, 0, 0)
OLD = NOW - datetime.timedelta(days=40)
RECENT = NOW - datetime.timedelta(days=2)


class PurgeTestsMixin:
    def makeURL(self) -> str:
        raise NotImplementedError()

    def setUp(self):
        self.url = self.makeURL()
        migrate.sync(self.url)
        self.engine = sqlalchemy.create_engine(self.url)
        self.addCleanup(self.engine.dispose)

    def image(self, name, status="active", deletedAt=None, properties=(), members=(),
              location=None):
        with self.engine.begin() as conn:
            conn.execute(images.insert().values(
                id=name, name=name, status=status, is_public=False, protected=False,
                min_disk=0, min_ram=0, created_at=OLD - datetime.timedelta(days=1),
                deleted=deletedAt is not None, deleted_at=deletedAt, location=location))
            for key, deleted in properties:
                conn.execute(image_properties.insert().values(
                    image_id=name, name=key, value="v", created_at=OLD,
                    deleted=deleted is not None, deleted_at=deleted))
            for member, deleted in members:
                conn.execute(image_members.insert().values(
                    image_id=name, member=member, can_share=False, status="accepted",
                    created_at=OLD, deleted=deleted is not None, deleted_at=deleted))

    def rows(self, table, column):
        with self.engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(sqlalchemy.select([column])))

    def test_onlyWhatNothingNeeds(self):
        self.image("gone", "deleted", OLD, properties=[("a", None), ("b", OLD)],
                   members=[("t2", None)])
        self.image("recent", "deleted", RECENT, properties=[("a", None)])
        # Its bytes are still in a store, for the scrubber.
        self.image("pending", "pending_delete", OLD, properties=[("a", None)])
        # A failed upload's store still to be swept.
        self.image("swept", "deleted", OLD)
        with self.engine.begin() as conn:
            conn.execute(image_uploads.insert().values(
                image_id="swept", holder="sweep", expires_at=NOW, store="s3"))
        # A scrubber claimed its bytes and died before it removed them:
        # another puts it back in pending_delete by its location.
        self.image("claimed", "deleted", OLD, location="file:///images/claimed")
        self.image("live", properties=[("kept", None), ("dropped", OLD), ("later", RECENT)],
                   members=[("t3", None), ("t4", OLD)])
        removed = purge(self.url, 30, -1, now=NOW)
        self.assertEqual(self.rows(images, images.c.id),
                         ["claimed", "live", "pending", "recent", "swept"])
        self.assertEqual(
            [(i, n) for i, n in self.pairs(image_properties, image_properties.c.name)],
            [("live", "kept"), ("live", "later"), ("pending", "a"), ("recent", "a")])
        self.assertEqual([(i, m) for i, m in self.pairs(image_members, image_members.c.member)],
                         [("live", "t3")])
        self.assertEqual(removed, {"images": 1, "image_properties": 3, "image_members": 2})

    def pairs(self, table, column):
        with self.engine.connect() as conn:
            return sorted(tuple(r) for r in conn.execute(
                sqlalchemy.select([table.c.image_id, column])))

    def test_maxRows(self):
        for n in range(5):
            self.image("gone%d" % n, "deleted", OLD - datetime.timedelta(minutes=n))
        self.assertEqual(purge(self.url, 30, 2, now=NOW)["images"], 2)
        # The oldest first.
        self.assertEqual(self.rows(images, images.c.id), ["gone0", "gone1", "gone2"])
        self.assertEqual(purge(self.url, 30, -1, now=NOW)["images"], 3)
        self.assertEqual(self.rows(images, images.c.id), [])

    def test_eachBatchStartsPastTheLast(self):
        """
        A batch of properties or members is looked for past the last
        batch's ids, not from the first row again: among many live rows,
        every batch read them all (at 3.5 million properties on
        PostgreSQL, each batch took longer than the one before).
        """
        self.patch(purgeModule, "BATCH", 2)
        self.image("live", properties=[("p%d" % n, OLD) for n in range(5)],
                   members=[("t%d" % n, OLD) for n in range(5)])
        looked = []

        def record(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().startswith("SELECT") and " LIMIT " in statement:
                looked.append(statement)
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", record)
        self.addCleanup(sqlalchemy.event.remove, sqlalchemy.engine.Engine,
                        "before_cursor_execute", record)
        removed = purge(self.url, 30, -1, now=NOW)
        self.assertEqual(removed, {"images": 0, "image_properties": 5, "image_members": 5})
        for table in ("image_properties", "image_members"):
            batches = [s for s in looked if "FROM " + table in s]
            self.assertEqual(len(batches), 3, table)
            self.assertNotIn("%s.id >" % (table,), batches[0])
            for later in batches[1:]:
                self.assertIn("%s.id >" % (table,), later)


class SQLitePurgeTests(PurgeTestsMixin, TestCase):
    def makeURL(self):
        return dbs.sqliteURL(self)

    def test_command(self):
        """
        As an operator runs it, with Glance's option names.
        """
        dataDir = os.path.dirname(self.url[len("sqlite:///"):])
        self.image("gone", "deleted", datetime.datetime.utcnow() - datetime.timedelta(days=9))

        def manage(*args):
            done = subprocess.run(
                [sys.executable, "-m", "glancetx.manage", "--data-dir", dataDir, "db", "purge"]
                + list(args), capture_output=True, text=True, timeout=120)
            return done.returncode, done.stdout.strip(), done.stderr
        self.assertEqual(manage()[:2], (0, "removed 0 images, 0 image properties and 0 image"
                                           " members deleted more than 30 days ago"))
        self.assertEqual(manage("--age_in_days", "7", "--max_rows", "10")[:2],
                         (0, "removed 1 images, 0 image properties and 0 image members"
                             " deleted more than 7 days ago"))
        code, out, err = manage("--max-rows", "0")
        self.assertEqual(code, 2)
        self.assertIn("--max-rows", err)
        # Further back than datetime counts: refused with the others, not a
        # traceback (OverflowError).
        code, out, err = manage("--age-in-days", "1000000")
        self.assertEqual(code, 2)
        self.assertIn("--age-in-days must be at most", err)
        self.assertNotIn("Traceback", err)
        # --data-dir after the action, as the usage line gives it.
        done = subprocess.run(
            [sys.executable, "-m", "glancetx.manage", "db", "purge", "--data-dir", dataDir],
            capture_output=True, text=True, timeout=120)
        self.assertEqual((done.returncode, done.stdout.strip()),
                         (0, "removed 0 images, 0 image properties and 0 image members"
                             " deleted more than 30 days ago"), done.stderr)


class PostgreSQLPurgeTests(PurgeTestsMixin, TestCase):
    def makeURL(self):
        return dbs.postgresURL(self)


class MySQLPurgeTests(PurgeTestsMixin, TestCase):
    def makeURL(self):
        return dbs.mysqlURL(self)
