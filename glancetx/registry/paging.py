"""
The rows of a list past its marker, written for each database's index.

A page sorted on (key, id) starts past the marker's pair.  PostgreSQL and
SQLite bound a walk of the index on (deleted, key, id) with a row
comparison, C{(key, id) < (:mkey, :mid)}, and with nothing else: given
the OR of its parts, PostgreSQL bounds the walk by the key alone and
reads every row that shares the marker's key before it (1.1 s at a
million images sorted by status, most of them C{active}).  MySQL and
MariaDB bound no walk with a row comparison, but make ranges of the OR.
"""

from sqlalchemy import and_, bindparam, or_, tuple_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.types import NullType


class PastMarker(ColumnElement):
    """
    The rows after the marker (bound as C{mkey} and C{mid}) in the order
    of C{key} then C{id}, descending if C{desc}.
    """

    type = NullType()

    def __init__(self, key, id, desc: bool) -> None:
        self.key, self.id, self.desc = key, id, desc
        self.mkey = bindparam("mkey", type_=key.type)
        self.mid = bindparam("mid", type_=id.type)


@compiles(PastMarker)
def _rowComparison(element, compiler, **kw):
    if element.key is element.id:
        row, marker = element.id, element.mid
    else:
        row, marker = tuple_(element.key, element.id), tuple_(element.mkey, element.mid)
    return compiler.process(row < marker if element.desc else row > marker, **kw)


@compiles(PastMarker, "mysql")
def _orOfParts(element, compiler, **kw):
    if element.key is element.id:
        return _rowComparison(element, compiler, **kw)
    key, id, mkey, mid = element.key, element.id, element.mkey, element.mid
    # The first bound says what the OR says, for the optimizer's costing.
    if element.desc:
        past = and_(key <= mkey, or_(key < mkey, and_(key == mkey, id < mid)))
    else:
        past = and_(key >= mkey, or_(key > mkey, and_(key == mkey, id > mid)))
    return compiler.process(past, **kw)
