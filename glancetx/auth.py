"""
Auth strategies: who is asking, from the request's headers.

Each strategy has C{authenticate(headers) -> RequestContext} and raises
L{Unauthorized} (a plain, client-safe message) when the request carries no
acceptable identity.  L{makeAuth} picks one from configuration:

  - C{auth_strategy = noauth} (the default): every request is the admin of
    one tenant (L{glancetx.context.noauthContext}).
  - C{auth_strategy = keystone}: trust the identity headers that a
    validating proxy (keystonemiddleware's auth_token) sets, as Glance's
    context middleware did.  Only safe behind such a proxy: it must strip
    these headers from what clients send.
  - C{auth_strategy = tokens}: a static C{tokens_file} of bearer tokens, for
    standalone deployments.

A context is admin when the policy's C{context_is_admin} rule admits it or
it holds C{admin_role} (default C{admin}; empty to disable), as Glance.  It
is read-only when it holds C{read_only_role} -- an extension of ours, off
by default (Glance v1 only had read-only anonymous access).
"""

import hashlib
import hmac
from typing import Dict, FrozenSet, Iterable, Mapping, Optional, Protocol

import attr

from twisted.web.http_headers import Headers

from glancetx.context import RequestContext, noauthContext
from glancetx import errors
from glancetx.errors import ConfigError
from glancetx.policy import IClock, Policy, WatchedFile

AUTH_STRATEGIES = ("noauth", "keystone", "tokens")
DEFAULT_ADMIN_ROLE = "admin"


class Unauthorized(errors.Unauthorized):
    """
    The request carries no acceptable identity (HTTP 401, through the web
    layer's one mapping of L{glancetx.errors.APIError}).  The message is
    plain and safe to show to the client.
    """


class IAuth(Protocol):
    def authenticate(self, headers: Headers) -> RequestContext:
        """
        The context of the request with these headers.

        @raise Unauthorized: no acceptable identity.
        """


def _roleSet(roles: Iterable[str]) -> FrozenSet[str]:
    """
    Role names as Glance kept them: stripped, lower-cased, no blanks.
    """
    return frozenset(r.strip().lower() for r in roles if r.strip())


@attr.s(frozen=True, auto_attribs=True)
class _Roles:
    """
    What turns an identity into a context: the policy's
    C{context_is_admin}, and the configured admin and read-only roles.
    """

    policy: Policy
    adminRole: Optional[str] = DEFAULT_ADMIN_ROLE
    readOnlyRole: Optional[str] = None

    def context(
        self,
        user: Optional[str],
        tenant: Optional[str],
        roles: FrozenSet[str],
        token: Optional[str],
    ) -> RequestContext:
        isAdmin = _holds(roles, self.adminRole) or self.policy.isAdmin(
            sorted(roles), tenant, user
        )
        return RequestContext(
            user=user,
            tenant=tenant,
            roles=roles,  # type: ignore[arg-type]  # attrs' frozenset converter
            is_admin=isAdmin,
            read_only=_holds(roles, self.readOnlyRole),
            auth_token=token,
        )


def _holds(roles: FrozenSet[str], role: Optional[str]) -> bool:
    """
    Whether C{roles} (already lower-cased) includes the configured C{role}
    (C{None} or blank: nobody does).
    """
    if role is None or not role.strip():
        return False
    return role.strip().lower() in roles


def _header(headers: Headers, name: str) -> Optional[str]:
    """
    The one value of a single-valued header, or C{None} if absent.

    @raise Unauthorized: if it is given more than once or is not UTF-8.
    """
    values = headers.getRawHeaders(name.encode("ascii"))
    if not values:
        return None
    if len(values) > 1:
        raise Unauthorized(f"{name} given more than once")
    return _decode(name, values[0])


#: User and project ids end up in owner and member columns of this width.
_ID_MAX = 255


def _identity(headers: Headers, name: str) -> Optional[str]:
    value = _header(headers, name) or None
    if value is not None and len(value) > _ID_MAX:
        raise Unauthorized(f"{name} is longer than {_ID_MAX} characters")
    return value


def _decode(name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Unauthorized(f"{name} is not valid UTF-8") from None


class NoAuth:
    """
    Every request is the admin of the one C{noauth} tenant.
    """

    def authenticate(self, headers: Headers) -> RequestContext:
        return noauthContext()


class KeystoneHeaders:
    """
    Trust the identity headers set by a validating proxy:
    C{X-Identity-Status: Confirmed} (else 401), C{X-User-Id},
    C{X-Project-Id} (or the older C{X-Tenant-Id}), C{X-Roles} (comma
    separated; stripped and lower-cased, as Glance did), C{X-Auth-Token}
    (or the deprecated C{X-Storage-Token}).

    Single-valued identity headers given twice are refused rather than
    guessed at; repeated C{X-Roles} lines are joined, as WSGI servers did.
    """

    def __init__(
        self,
        policy: Policy,
        adminRole: Optional[str] = DEFAULT_ADMIN_ROLE,
        readOnlyRole: Optional[str] = None,
    ) -> None:
        self._roles = _Roles(policy, adminRole, readOnlyRole)

    def authenticate(self, headers: Headers) -> RequestContext:
        status = _header(headers, "X-Identity-Status")
        if status != "Confirmed":
            raise Unauthorized("Identity not confirmed")
        user = _identity(headers, "X-User-Id")
        tenant = _identity(headers, "X-Project-Id") or _identity(headers, "X-Tenant-Id")
        raw = headers.getRawHeaders(b"x-roles") or []
        roles = _roleSet(
            part for value in raw for part in _decode("X-Roles", value).split(",")
        )
        token = _header(headers, "X-Auth-Token") or _header(headers, "X-Storage-Token") or None
        return self._roles.context(user, tenant, roles, token)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class _TokenEntry:
    digest: bytes
    user: str
    tenant: str
    roles: FrozenSet[str]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def parseTokens(text: str) -> Dict[bytes, _TokenEntry]:
    """
    Parse a tokens file: one C{token user tenant [roles]} per line, roles
    comma-separated; blank lines and C{#} comments allowed.  Entries are
    keyed by the SHA-256 of the token, so that the plain tokens are not
    kept and looking one up reveals nothing through timing.

    @raise ValueError: with a plain reason (never the token itself).
    """
    entries: Dict[bytes, _TokenEntry] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) not in (3, 4):
            raise ValueError(
                f"line {number}: expected 'token user tenant roles', "
                f"found {len(fields)} fields"
            )
        token, user, tenant = fields[:3]
        roles = _roleSet(fields[3].split(",")) if len(fields) == 4 else frozenset()
        digest = _digest(token)
        if digest in entries:
            raise ValueError(f"line {number}: token repeated")
        entries[digest] = _TokenEntry(digest, user, tenant, roles)
    return entries


class TokenFile:
    """
    Bearer tokens from a file (C{X-Auth-Token}); the file is re-read when it
    changes on disk (see L{glancetx.policy.WatchedFile}), and a malformed
    new version is logged while the old tokens stay valid.
    """

    def __init__(
        self,
        path: str,
        policy: Policy,
        clock: IClock,
        adminRole: Optional[str] = DEFAULT_ADMIN_ROLE,
        readOnlyRole: Optional[str] = None,
    ) -> None:
        """
        @param clock: anything with C{seconds()} (the reactor).
        @raise ConfigError: C{"tokens_file: ..."} if missing or malformed.
        """
        self._roles = _Roles(policy, adminRole, readOnlyRole)
        self._watched = WatchedFile(
            path=path, parse=parseTokens, clock=clock, what="tokens_file"
        )
        try:
            self._watched.load()
        except ValueError as e:
            raise ConfigError(f"tokens_file: {e}") from None

    def _find(self, token: str) -> Optional[_TokenEntry]:
        entries: Mapping[bytes, _TokenEntry] = self._watched.current()
        digest = _digest(token)
        # The dictionary look-up compares digests, whose timing tells an
        # attacker nothing about any token; the entry's digest is then
        # confirmed in constant time all the same.
        entry = entries.get(digest)
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            return None
        return entry

    def authenticate(self, headers: Headers) -> RequestContext:
        token = _header(headers, "X-Auth-Token")
        if not token:
            raise Unauthorized("Missing X-Auth-Token")
        entry = self._find(token)
        if entry is None:
            raise Unauthorized("Invalid X-Auth-Token")
        return self._roles.context(entry.user, entry.tenant, entry.roles, token)


def _option(conf: Mapping[str, str], name: str) -> Optional[str]:
    value = conf.get(name)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def makeAuth(conf: Mapping[str, str], policy: Policy, reactor: IClock) -> IAuth:
    """
    The auth strategy that C{conf} asks for.

    Options: C{auth_strategy} (noauth, keystone or tokens; default noauth),
    C{tokens_file} (required for tokens), C{admin_role} (default admin;
    empty for none), C{read_only_role} (default none).

    @param reactor: anything with C{seconds()}, for the tokens file's
        change check.
    @raise ConfigError: naming the option at fault.
    """
    if "auth_strategy" in conf and not _option(conf, "auth_strategy"):
        # Empty is not "the default": that would make every caller an admin.
        raise ConfigError("auth_strategy: must not be empty; one of "
                          + ", ".join(AUTH_STRATEGIES))
    strategy = (_option(conf, "auth_strategy") or "noauth").lower()
    if strategy not in AUTH_STRATEGIES:
        raise ConfigError(
            f"auth_strategy: {strategy!r} is not one of " + ", ".join(AUTH_STRATEGIES)
        )
    # Absent: Glance's "admin"; present but empty: no admin role.
    adminRole = _option(conf, "admin_role") if "admin_role" in conf else DEFAULT_ADMIN_ROLE
    readOnlyRole = _option(conf, "read_only_role")
    for name, value in (("admin_role", adminRole), ("read_only_role", readOnlyRole)):
        if value and "," in value:
            raise ConfigError(f"{name}: {value!r} must be a single role name")
    adminRole = adminRole.lower() if adminRole else None
    readOnlyRole = readOnlyRole.lower() if readOnlyRole else None
    if adminRole and readOnlyRole and adminRole == readOnlyRole:
        raise ConfigError("read_only_role: must differ from admin_role")
    tokensFile = _option(conf, "tokens_file")
    if strategy == "noauth":
        return NoAuth()
    if strategy == "keystone":
        return KeystoneHeaders(policy, adminRole, readOnlyRole)
    if tokensFile is None:
        raise ConfigError("tokens_file: required when auth_strategy = tokens")
    return TokenFile(tokensFile, policy, reactor, adminRole, readOnlyRole)


__all__ = [
    "AUTH_STRATEGIES",
    "IAuth",
    "KeystoneHeaders",
    "NoAuth",
    "TokenFile",
    "Unauthorized",
    "makeAuth",
    "parseTokens",
]
