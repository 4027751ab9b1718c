"""
Image metadata ⇄ C{x-image-meta-*} headers and JSON, as Glance v1 spoke it.
"""

import datetime
import operator
import re
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple
from urllib.parse import unquote

from glancetx import errors
from glancetx.images import ImageChanges
from glancetx.registry.registry import IMAGE_FIELDS, ImageRecord

META = "x-image-meta-"
PROPERTY = "x-image-meta-property-"

_BOOL_FIELDS = ("is_public", "protected", "deleted")
_INT_FIELDS = ("size", "virtual_size", "min_ram", "min_disk")
_STR_FIELDS = ("id", "name", "disk_format", "container_format", "checksum", "owner",
               "status", "location", "store", "copy_from")
#: Fields a client may name in a header; the read-only timestamps are
#: accepted and ignored, as Glance did.
_IGNORED = ("created_at", "updated_at", "deleted_at", "deleted")
_KNOWN = set(_BOOL_FIELDS + _INT_FIELDS + _STR_FIELDS + _IGNORED)

#: The brief list carries only these.
BRIEF_FIELDS = ("id", "name", "disk_format", "container_format", "checksum", "size")


def parseBool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise errors.BadRequest("Invalid boolean value for %s: %r" % (name, value))


#: Property filters one list may have.  Each is one more semi-join, and
#: PostgreSQL's planner took 1 s over 100 of them and 95 s over 300, while
#: every other request waited for the database connections they held.
MAX_PROPERTY_FILTERS = 32

#: What an integer looks like on the wire.  Python's int() also takes
#: "1_000" and digits of other scripts, which no client means.
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")


#: More digits than any value taken here has (2 ** 63 has 19).
_TOO_MANY_DIGITS = 2 ** 63


def _wireInt(text: str) -> int:
    """
    An integer that matched L{_INTEGER}; one of more than 19 significant
    digits is taken as +/-2 ** 63, beyond every bound, since int() refuses
    a string of more than 4,300 digits with a ValueError (a 500).
    """
    text = text.strip()
    sign = -1 if text.startswith("-") else 1
    # Leading zeros count towards int()'s limit too.
    digits = text.lstrip("+-").lstrip("0") or "0"
    if len(digits) > 19:
        return sign * _TOO_MANY_DIGITS
    return sign * int(digits)


def parseInt(name: str, value: str) -> int:
    if not _INTEGER.match(value.strip()):
        raise errors.BadRequest("Invalid value for %s: %r is not an integer" % (name, value))
    n = _wireInt(value)
    if n < 0:
        raise errors.BadRequest("Invalid value for %s: must not be negative" % (name,))
    if n > 2 ** 63 - 1:
        raise errors.BadRequest("Invalid value for %s: too large" % (name,))
    return n


def _text(name: str, raw: bytes, what: str = "Header") -> str:
    """
    A client's text as the database will hold it: UTF-8, and no NUL
    character (PostgreSQL refuses one in any text value).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.BadRequest("%s %s is not valid UTF-8" % (what, name))
    if "\0" in text:
        raise errors.BadRequest("%s %s must not contain NUL characters" % (what, name))
    return text


_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")

#: The headers outside x-image-meta-* that a create or update reads.
_GLANCE_HEADERS = frozenset(["x-glance-api-copy-from", "x-glance-registry-purge-props"])


def changesFromHeaders(headers: Iterable[Tuple[bytes, Iterable[bytes]]]) -> ImageChanges:
    """
    Parse the image-related request headers.  An C{x-image-meta-*} header
    naming no known field is a 400.
    """
    fields: Dict[str, Any] = {}
    properties: Dict[str, str] = {}
    extra: Dict[str, Any] = {}
    purge = True
    for rawName, values in headers:
        name = rawName.decode("latin-1").lower()
        if not name.startswith(META) and name not in _GLANCE_HEADERS:
            # Not ours to read (User-Agent, X-Forwarded-For...), so not
            # ours to refuse either, whatever bytes it holds.
            continue
        values = list(values)
        if len(set(values)) > 1:
            # Glance joined them ("1, 2"), which no field took either.
            raise errors.BadRequest("Header %s is given more than once, with different values"
                                    % (name,))
        # HTTP's whitespace only (RFC 9110 5.6.3): str.strip() took
        # Unicode's spaces too, and changed the value it was given.
        value = _text(name, values[-1]).strip(" \t")
        if _CONTROL.search(value):
            # It would go back out raw in this image's headers (RFC 9110
            # 5.5 allows none there but tab).
            raise errors.BadRequest("Header %s must not contain control characters" % (name,))
        if name.startswith(PROPERTY):
            key = name[len(PROPERTY):].replace("-", "_")
            if not key:
                raise errors.BadRequest("Empty property name in header %s" % (name,))
            if len(key) > 255:
                raise errors.BadRequest("Property name too long: %s" % (key[:40],))
            if len(value) > 65535:
                raise errors.BadRequest("Property value too long: %s" % (key,))
            properties[key] = value
        elif name.startswith(META):
            field = name[len(META):].replace("-", "_")
            if field not in _KNOWN:
                raise errors.BadRequest("Unknown image metadata header %s" % (name,))
            if field in _IGNORED:
                continue
            if field in _BOOL_FIELDS:
                # python-glanceclient 2.x sends the literal "None" for a
                # boolean the user did not give; Glance read that as unset.
                if value.lower() != "none":
                    fields[field] = parseBool(field, value)
            elif field in _INT_FIELDS:
                fields[field] = parseInt(field, value)
            elif field == "store":
                extra[field] = value
            elif field in ("location", "copy_from"):
                extra[field] = _sourceURL(value)
            else:
                fields[field] = value if value != "" or field == "name" else None
        elif name == "x-glance-api-copy-from":
            extra["copy_from"] = _sourceURL(value)
        elif name == "x-glance-registry-purge-props":
            purge = parseBool(name, value)
    return ImageChanges(fields=fields, properties=properties, store=extra.get("store"),
                        location=extra.get("location") or None,
                        copy_from=extra.get("copy_from") or None,
                        purge_properties=purge)


def _sourceURL(url: str) -> str:
    """
    A location or copy-from source as the user wrote it.

    A URL's scheme is case-insensitive (RFC 3986 3.1); the stores know
    theirs in lower case, as they write them.

    python-glanceclient 2.x percent-encodes every header but for C{/} and
    C{:} (Launchpad bug 1766235), so a location's C{@} arrives as C{%40},
    the C{+} of its scheme as C{%2B} and an IPv6 address's brackets as
    C{%5B} and C{%5D}.  An authority with
    a C{%40} and no C{@}, or that opens with C{%5B}, is no URL as sent:
    it is undone, whole, once (restoring what the user typed, their own
    percent-encodings included).  Brackets encoded after a real C{@} are
    put back too.  Anything else is kept as given: a client's C{%3F} in a
    path may be meant.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # ... and the "+" of s3+http or swift+https as %2B, which no scheme
    # holds (RFC 3986 3.1).
    scheme = scheme.replace("%2B", "+").replace("%2b", "+")
    authority, slash, path = rest.partition("/")
    upper = authority.upper()
    if "@" not in authority and ("%40" in upper or upper.startswith("%5B")):
        return scheme.lower() + sep + unquote(rest)
    userinfo, at, host = authority.rpartition("@")
    if host[:3].upper() == "%5B" and "%5D" in host.upper():
        end = host.upper().index("%5D")
        host = "[" + host[3:end] + "]" + host[end + 3:]
        authority = userinfo + at + host
    return scheme.lower() + sep + authority + slash + path


def _render(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        # Glance's "%Y-%m-%dT%H:%M:%S.%f", at less than half strftime's
        # cost (75 per list page).
        return value.isoformat("T", "microseconds")
    return value


_imageFields = operator.attrgetter(*IMAGE_FIELDS)
#: The fields that hold datetimes (the rest go to JSON as they are).
_TIME_FIELDS = ("created_at", "updated_at", "deleted_at")


def imageDict(image: ImageRecord) -> Dict[str, Any]:
    """
    The detailed JSON form (never the location).  Built for a whole list
    page at a time, so it reads the fields in one call and renders only
    the timestamps.
    """
    out = dict(zip(IMAGE_FIELDS, _imageFields(image)))
    for name in _TIME_FIELDS:
        if out[name] is not None:
            out[name] = _render(out[name])
    out["size"] = image.shownSize()
    out["properties"] = dict(image.properties)
    return out


def briefDict(image: ImageRecord) -> Dict[str, Any]:
    out = {name: getattr(image, name) for name in BRIEF_FIELDS}
    out["size"] = image.shownSize()
    return out


_FIELD_HEADERS = [(name, (META + name).encode("ascii")) for name in IMAGE_FIELDS]


def imageHeaders(image: ImageRecord) -> Dict[bytes, bytes]:
    """
    Every field as an C{x-image-meta-*} header, as HEAD and GET answer.
    """
    out: Dict[bytes, bytes] = {}
    for name, header in _FIELD_HEADERS:
        value = image.shownSize() if name == "size" else getattr(image, name)
        if value is None:
            continue
        out[header] = _headerValue(_render(value))
    for key, value in image.properties.items():
        if value is None or not _TOKEN.match(key):
            # Not a header name (a property Glance v2 wrote, say): the
            # lists' JSON shows it.
            continue
        out[(PROPERTY + key).encode("ascii")] = _headerValue(value)
    return out


#: An HTTP field name (RFC 9110 5.1: a token).
_TOKEN = re.compile(r"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def _headerValue(value: Any) -> bytes:
    return str(value).encode("utf-8")


def parseListQuery(args: Mapping[bytes, list], limitDefault: int, limitMax: int,
                   isAdmin: bool):
    """
    The list query parameters, validated.  Returns keyword arguments for
    L{glancetx.registry.registry.ListQuery}.
    """
    from glancetx.registry.registry import SORT_KEYS

    q: Dict[str, Any] = {"filters": {}, "properties": {}}

    def one(name: str) -> Optional[str]:
        values = args.get(name.encode("ascii"))
        if not values:
            return None
        return _text(name, values[-1], "Query parameter")

    limit = one("limit")
    if limit is None:
        q["limit"] = limitDefault
    else:
        if not _INTEGER.match(limit.strip()):
            raise errors.BadRequest("limit param must be an integer")
        n = _wireInt(limit)
        if n < 0:
            raise errors.BadRequest("limit param must be positive")
        q["limit"] = min(n, limitMax)
    marker = one("marker")
    if marker is not None:
        # An image id, and ids are stored lower-cased.
        q["marker"] = marker.lower()
    sortKey = one("sort_key")
    if sortKey is not None:
        if sortKey not in SORT_KEYS:
            raise errors.BadRequest("Unsupported sort_key. Acceptable values: %s"
                                    % (", ".join(sorted(SORT_KEYS)),))
        q["sort_key"] = sortKey
    sortDir = one("sort_dir")
    if sortDir is not None:
        if sortDir not in ("asc", "desc"):
            raise errors.BadRequest("Unsupported sort_dir. Acceptable values: asc, desc")
        q["sort_dir"] = sortDir
    for name in ("name", "status", "container_format", "disk_format"):
        v = one(name)
        if v is not None:
            q["filters"][name] = v
    for name in ("min_ram", "min_disk", "size_min", "size_max"):
        v = one(name)
        if v is not None:
            q["filters"][name] = parseInt(name, v)
    v = one("protected")
    if v is not None:
        q["filters"]["protected"] = parseBool("protected", v)
    v = one("changes-since")
    if v is not None:
        q["changes_since"] = parseTime("changes-since", v)
    v = one("is_public")
    if v is not None and isAdmin:
        if v.lower() == "none":
            q["restrict_to_visible"] = False
        else:
            public = parseBool("is_public", v)
            if public:
                q["restrict_to_visible"] = True
            else:
                q["restrict_to_visible"] = False
                q["is_public"] = False
    elif isAdmin:
        q["restrict_to_visible"] = True
    for rawName, values in args.items():
        # Unknown parameters are ignored, as Glance did: clients send extras.
        if rawName.startswith(b"property-") and values:
            name = _text(repr(rawName.decode("latin-1")), rawName, "Query parameter")
            # The key as changesFromHeaders stores it.
            key = name[len("property-"):].lower().replace("-", "_")
            q["properties"][key] = _text(name, values[-1], "Query parameter")
    if len(q["properties"]) > MAX_PROPERTY_FILTERS:
        raise errors.BadRequest("A list may filter on at most %d properties."
                                % (MAX_PROPERTY_FILTERS,))
    return q


def parseTime(name: str, value: str) -> datetime.datetime:
    """
    An ISO 8601 time, as UTC without a zone.
    """
    v = value.strip().replace(" ", "+")
    if v.endswith("Z") or v.endswith("z"):
        v = v[:-1] + "+00:00"
    try:
        t = datetime.datetime.fromisoformat(v)
    except ValueError:
        raise errors.BadRequest("Unrecognized changes-since value %r" % (value,))
    if t.tzinfo is not None:
        try:
            t = t.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        except OverflowError:
            # 9999-12-31T23:59-23:59 is after the last UTC time there is.
            raise errors.BadRequest("Unrecognized changes-since value %r" % (value,))
    return t
