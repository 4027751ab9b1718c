"""
The registry's statements are answered by walking an index, on each
database: at a million images, a sort the index did not give took
50-250 ms on PostgreSQL and past 8 s on MariaDB (migration 0006).  These
read the database's plan, not the clock.
"""

import datetime

import sqlalchemy
from twisted.trial.unittest import TestCase

from glancetx.registry import migrate
from glancetx.registry.registry import (
    SORT_INDEXES, SORT_KEYS, ListQuery, _ListShape, _listStatement, requeueStale)

from tests import dbs

#: A marker's sort value of each key's type.
MARKER_KEYS = {
    "id": "00000000-0000-0000-0000-000000000001", "name": "img", "status": "active",
    "disk_format": "raw", "container_format": "bare", "size": 10,
    "created_at": datetime.datetime(2026, 1, 1), "updated_at": datetime.datetime(2026, 1, 1),
}


class QueryPlanTestsMixin:
    def setUp(self):
        url = self.makeURL()
        migrate.sync(url)
        self.engine = sqlalchemy.create_engine(url)
        self.addCleanup(self.engine.dispose)

    def plan(self, statement, params) -> str:
        raise NotImplementedError()

    def listPlan(self, **query) -> str:
        q = ListQuery(**query)
        shape = _ListShape.of(q)
        params = shape.params(q)
        if q.marker is not None:
            params["mkey"], params["mid"] = MARKER_KEYS[q.sort_key], q.marker
        return self.plan(_listStatement(shape), params)

    def walks(self, plan: str, index: str, fromMarker: bool) -> bool:
        """
        Whether the plan reads C{index} in order, and sorts nothing; from
        a marker, whether it starts the walk there, rather than reading
        and dropping the rows before it (ties on a key like status are
        most of a catalogue).
        """
        raise NotImplementedError()

    def test_everySortWalksItsIndex(self):
        """
        A page sorted by any key, either way, first or after a marker,
        for an admin or a tenant, reads that key's index in order.
        """
        sorted_ = []
        for key in SORT_KEYS:
            for direction in ("asc", "desc"):
                for marker in (None, MARKER_KEYS["id"]):
                    for visible in ({}, {"restrict_to_visible": True, "visible_to": "t1"}):
                        if marker is None and not self.firstPagesToo:
                            continue
                        plan = self.listPlan(sort_key=key, sort_dir=direction,
                                             marker=marker, **visible)
                        if not self.walks(plan, SORT_INDEXES[key], marker is not None):
                            sorted_.append((key, direction, marker, bool(visible), plan))
        self.assertEqual(sorted_, [])


class UnhintedPlanTestsMixin:
    """
    Plans of statements the database is not told an index for: on the
    databases whose plans of a nearly empty table are those of a large
    one (MariaDB's are not).
    """

    def test_statusFilterWalksItsIndex(self):
        """
        A status filter in the default order reads only that status's
        images, newest first: most lists filter on one, and a status few
        images have was a walk of every image (MariaDB: 0.7 s, 17 s for a
        tenant, at a million images).
        """
        for visible in ({}, {"restrict_to_visible": True, "visible_to": "t1"}):
            plan = self.listPlan(filters={"status": "queued"}, **visible)
            self.assertTrue(self.ordered(plan, "ix_images_status_created_at"), plan)

    def test_staleRemovalsAreFoundByTheirIndex(self):
        """
        The scrubber's look for claims left by a dead process reads only
        the claims (at a million images, it read every deleted one).
        """
        statement = requeueStale(datetime.datetime(2026, 1, 1))
        self.assertIn("ix_images_removal_claimed_at", self.plan(statement, {}))


class SQLitePlanTests(UnhintedPlanTestsMixin, QueryPlanTestsMixin, TestCase):
    firstPagesToo = True

    def makeURL(self):
        return dbs.sqliteURL(self)

    def plan(self, statement, params):
        compiled = statement.compile(dialect=self.engine.dialect)
        values = compiled.construct_params(params)
        positional = [values[name] for name in compiled.positiontup]
        with self.engine.connect() as conn:
            rows = conn.execute("EXPLAIN QUERY PLAN " + str(compiled), positional).fetchall()
        return "\n".join(row[-1] for row in rows)

    def walks(self, plan, index, fromMarker):
        walk = "USING INDEX %s (deleted=?" % (index,)
        if fromMarker:
            # The pair (key, id), not the key alone.
            walk += " AND id" if index == SORT_INDEXES["id"] else " AND ("
        return "TEMP B-TREE FOR ORDER BY" not in plan and walk in plan

    def ordered(self, plan, index):
        return "TEMP B-TREE FOR ORDER BY" not in plan and "USING INDEX %s (" % (index,) in plan


class PostgreSQLPlanTests(UnhintedPlanTestsMixin, QueryPlanTestsMixin, TestCase):
    firstPagesToo = True

    def makeURL(self):
        return dbs.postgresURL(self)

    def plan(self, statement, params):
        compiled = statement.compile(dialect=self.engine.dialect)
        with self.engine.connect() as conn:
            # An empty table is read whole and sorted: ask what the
            # database would do were that dear, as it is at scale.
            conn.execute("SET enable_seqscan = off")
            conn.execute("SET enable_sort = off")
            rows = conn.execute("EXPLAIN " + str(compiled),
                                compiled.construct_params(params)).fetchall()
        return "\n".join(row[0] for row in rows)

    def walks(self, plan, index, fromMarker):
        walk = "Index Cond: (deleted = false)"
        if fromMarker:
            # The pair (key, id), not the key alone.
            walk = "Index Cond: ((deleted = false) AND " + (
                "((id)::text" if index == SORT_INDEXES["id"] else "(ROW(")
        return "Sort" not in plan and " %s " % (index,) in plan and walk in plan

    def ordered(self, plan, index):
        return "Sort" not in plan and " %s " % (index,) in plan


class MySQLPlanTests(QueryPlanTestsMixin, TestCase):
    # MariaDB costs a first page of a nearly empty table as a sort; only
    # the pages it is told the index of are certain here.
    firstPagesToo = False

    def makeURL(self):
        return dbs.mysqlURL(self)

    def plan(self, statement, params):
        compiled = statement.compile(dialect=self.engine.dialect)
        with self.engine.connect() as conn:
            result = conn.execute("EXPLAIN " + str(compiled), compiled.construct_params(params))
            rows = [dict(zip(result.keys(), row)) for row in result]
        return "\n".join("%s %s key=%s %s" % (r["table"], r["type"], r["key"], r["Extra"])
                         for r in rows)

    def walks(self, plan, index, fromMarker):
        # A range (past the marker), not a ref (deleted alone).
        return "filesort" not in plan and "images range key=%s " % (index,) in plan

    def test_adminsIsPublicListWalksTheSortOrder(self):
        """
        An admin's list of private (or public) images, sorted by any key,
        walks that key's index: MariaDB intersected the indexes on
        is_public and on deleted and sorted the three quarters of a
        million images they shared (1.6 s).
        """
        for key in SORT_KEYS:
            for isPublic in (False, True):
                plan = self.listPlan(sort_key=key, is_public=isPublic)
                self.assertNotIn("filesort", plan, (key, isPublic))
                self.assertIn("images ref key=%s " % (SORT_INDEXES[key],), plan,
                              (key, isPublic))
