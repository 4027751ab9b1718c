"""
Glance's policy rules: who may add, delete, download, publicize, share...

The rule language is oslo.policy's, evaluated by a small evaluator of our
own.  oslo.policy itself was not used: it brings oslo.config (and its
process-global option registry), oslo.serialization, oslo.utils, stevedore
and requests with it, and its C{http:} check makes a blocking HTTP call
from inside C{enforce}.  The language is small enough that owning it is
cheaper than taming that.

Rule language (a string)::

    role:admin                  the caller has the role (case-insensitive)
    tenant:%(owner)s            a credential compared with a target attribute
    project_id:%(owner)s        (any credential key; dotted keys walk nested
    is_admin:True               mappings; the right side may be a literal)
    'member':%(role)s           a quoted/number literal on the left is compared
                                with the right side itself
    rule:name                   another rule of the file
    @    (or the empty string)  always
    !                           never
    not, and, or, ( )           in that order of precedence

In a JSON or YAML file a rule may also be written in the legacy
list-of-lists form: C{[["role:a", "tenant:%(owner)s"], ["role:admin"]]}
means "(role:a and tenant:%(owner)s) or role:admin"; C{[]} means always.

Where this differs from oslo.policy, on purpose:

  - A rule that cannot be parsed, or a check with no C{:}, is a
    L{ConfigError} (oslo.policy logged it and denied everything).
  - C{http:}/C{https:} checks are refused (blocking call, out of scope).
  - A check whose credential or target value is C{None} (or missing) never
    matches: oslo.policy compared C{str(None)} with C{str(None)}, so
    C{tenant:%(owner)s} matched a tenant-less caller on an owner-less image.
  - C{rule:} cycles are found at load time (oslo.policy recursed forever).
    A C{rule:} naming no rule never allows, as in oslo.policy, but is
    logged at load time (oslo.policy said nothing).
"""

import ast
import json
import os
import re
import time
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Protocol,
    Set,
    Tuple,
)

import attr
from twisted.logger import Logger

from glancetx.errors import ConfigError

_log = Logger()

#: Rule names Glance v1 enforces, for reference (a name not in the file
#: falls to C{default}).
RULE_NAMES = (
    "context_is_admin",
    "add_image",
    "delete_image",
    "get_image",
    "get_images",
    "modify_image",
    "publicize_image",
    "download_image",
    "copy_from",
    "upload_image",
    "set_image_location",
    "add_member",
    "delete_member",
    "get_member",
    "get_members",
    "modify_member",
    "manage_image_cache",
    "default",
)

#: Rules in force when no file names them; a file's rules are laid over
#: these, name by name.
DEFAULT_RULES: Mapping[str, str] = {
    "context_is_admin": "role:admin",
    "publicize_image": "role:admin",
    "manage_image_cache": "role:admin",
    "default": "",
}

#: The rule C{enforce} falls back to for a name it does not know.
DEFAULT_RULE_NAME = "default"

#: How often (seconds) a watched file is stat()ed at most.
CHECK_INTERVAL = 1.0


class IClock(Protocol):
    def seconds(self) -> float:
        ...


class _WallClock:
    def seconds(self) -> float:
        return time.time()


# ---------------------------------------------------------------------------
# Checks: a parsed rule is a tree of these.  Each is called with the target,
# the credentials and the table of named rules (for rule:).


class _Check(Protocol):
    def __call__(
        self, target: Mapping[str, Any], creds: Mapping[str, Any], rules: "_Rules"
    ) -> bool:
        ...


_Rules = Mapping[str, "_Check"]


@attr.s(frozen=True, slots=True)
class _Always:
    result: bool = attr.ib()

    def __call__(self, target: Mapping[str, Any], creds: Mapping[str, Any], rules: _Rules) -> bool:
        return self.result


@attr.s(frozen=True, slots=True)
class _Not:
    check: _Check = attr.ib()

    def __call__(self, target: Mapping[str, Any], creds: Mapping[str, Any], rules: _Rules) -> bool:
        return not self.check(target, creds, rules)


@attr.s(frozen=True, slots=True)
class _And:
    checks: Tuple[_Check, ...] = attr.ib()

    def __call__(self, target: Mapping[str, Any], creds: Mapping[str, Any], rules: _Rules) -> bool:
        return all(c(target, creds, rules) for c in self.checks)


@attr.s(frozen=True, slots=True)
class _Or:
    checks: Tuple[_Check, ...] = attr.ib()

    def __call__(self, target: Mapping[str, Any], creds: Mapping[str, Any], rules: _Rules) -> bool:
        return any(c(target, creds, rules) for c in self.checks)


@attr.s(frozen=True, slots=True)
class _RuleRef:
    name: str = attr.ib()

    def __call__(self, target: Mapping[str, Any], creds: Mapping[str, Any], rules: _Rules) -> bool:
        check = rules.get(self.name)
        if check is None:
            # As oslo.policy: a reference to a rule nobody defined denies.
            return False
        return check(target, creds, rules)


class _NoNone(dict):  # type: ignore[type-arg]
    """
    A target view for C{%}-formatting in which a missing or C{None}
    attribute is a KeyError, so that the check fails closed.
    """

    def __init__(self, target: Mapping[str, Any]) -> None:
        super().__init__()
        self._target = target

    def __missing__(self, key: str) -> Any:
        value = _lookup(self._target, key)
        if value is None:
            raise KeyError(key)
        return value


def _lookup(mapping: Any, path: str) -> Any:
    """
    The value at a dotted C{path} in nested mappings, or C{None}.

    Each step follows the nesting first, and only where a name leads to no
    mapping is the rest of the path taken as one key (a property whose own
    name holds a dot).  The other order let a caller's property spelt
    C{properties.restricted} stand in for the C{restricted} property a
    rule names.
    """
    parts = path.split(".")
    value = mapping
    for i, part in enumerate(parts):
        if not isinstance(value, Mapping):
            return None
        if part in value and (i == len(parts) - 1 or isinstance(value[part], Mapping)):
            value = value[part]
            continue
        return value.get(".".join(parts[i:]))
    return value


def _asText(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _format(match: str, target: Mapping[str, Any]) -> Optional[str]:
    """
    Substitute C{%(attr)s} from the target; C{None} if an attribute is
    missing or C{None} (or the format is broken).
    """
    if "%" not in match:
        return match
    try:
        return match % _NoNone(target)
    except (KeyError, TypeError, ValueError):
        return None


@attr.s(frozen=True, slots=True)
class _RoleCheck:
    match: str = attr.ib()

    def __call__(self, target: Mapping[str, Any], creds: Mapping[str, Any], rules: _Rules) -> bool:
        role = _format(self.match, target)
        if role is None:
            return False
        roles = creds.get("roles") or ()
        return role.lower() in {str(r).lower() for r in roles}


@attr.s(frozen=True, slots=True)
class _GenericCheck:
    """
    C{key:value}: the credential at C{key} (dotted path; a list matches if
    any element does) equals C{value} after target substitution; or, if
    C{key} is a Python literal, the literal equals the value.
    """

    kind: str = attr.ib()
    match: str = attr.ib()
    literal: Optional[str] = attr.ib()

    def __call__(self, target: Mapping[str, Any], creds: Mapping[str, Any], rules: _Rules) -> bool:
        expected = _format(self.match, target)
        if expected is None:
            return False
        if self.literal is not None:
            return self.literal == expected
        found = _lookup(creds, self.kind)
        if found is None:
            return False
        if isinstance(found, (list, tuple, set, frozenset)):
            return any(v is not None and _asText(v) == expected for v in found)
        return _asText(found) == expected


def _literal(kind: str) -> Optional[str]:
    """
    C{kind} as a literal's text if it is a quoted string, a number or a
    boolean (as oslo.policy's C{ast.literal_eval}); C{None} if it is a
    credential key.
    """
    try:
        value = ast.literal_eval(kind)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(value, (str, int, float, bool)):
        return _asText(value)
    return None


# ---------------------------------------------------------------------------
# Parsing.


class _ParseError(Exception):
    pass


def _parseCheck(text: str) -> _Check:
    """
    One check, e.g. C{role:admin}, C{@}, C{!}.
    """
    if text == "@":
        return _Always(True)
    if text == "!":
        return _Always(False)
    kind, sep, match = text.partition(":")
    if not sep or not kind:
        raise _ParseError(f"{text!r} is not a check (expected kind:value)")
    if kind == "rule":
        if not match:
            raise _ParseError("rule: needs a rule name")
        return _RuleRef(match)
    if kind == "role":
        if not match:
            raise _ParseError("role: needs a role name")
        return _RoleCheck(match)
    if kind in ("http", "https"):
        raise _ParseError(f"{kind}: checks are not supported")
    return _GenericCheck(kind, match, _literal(kind))


_SPACE = re.compile(r"\s+")


def _tokenize(rule: str) -> Iterator[Tuple[str, Any]]:
    """
    Split on white space; parentheses are peeled off the start and end of
    each word (inside a word they belong to C{%(attr)s}), as oslo.policy.
    """
    for word in _SPACE.split(rule):
        if not word:
            continue
        stripped = word.lstrip("(")
        for _ in range(len(word) - len(stripped)):
            yield "(", None
        core = stripped.rstrip(")")
        trailing = len(stripped) - len(core)
        if core:
            lowered = core.lower()
            if lowered in ("and", "or", "not"):
                yield lowered, None
            else:
                yield "check", _parseCheck(core)
        for _ in range(trailing):
            yield ")", None


class _Parser:
    """
    Recursive descent over the tokens::

        or   := and ("or" and)*
        and  := not ("and" not)*
        not  := "not" not | atom
        atom := "(" or ")" | check
    """

    def __init__(self, tokens: List[Tuple[str, Any]]) -> None:
        self._tokens = tokens
        self._at = 0

    def _peek(self) -> Optional[str]:
        if self._at < len(self._tokens):
            return self._tokens[self._at][0]
        return None

    def _take(self) -> Tuple[str, Any]:
        if self._at >= len(self._tokens):
            raise _ParseError("unexpected end of rule")
        token = self._tokens[self._at]
        self._at += 1
        return token

    def parse(self) -> _Check:
        check = self._or()
        if self._peek() is not None:
            raise _ParseError(f"unexpected {self._peek()!r}")
        return check

    def _or(self) -> _Check:
        checks = [self._and()]
        while self._peek() == "or":
            self._take()
            checks.append(self._and())
        return checks[0] if len(checks) == 1 else _Or(tuple(checks))

    def _and(self) -> _Check:
        checks = [self._not()]
        while self._peek() == "and":
            self._take()
            checks.append(self._not())
        return checks[0] if len(checks) == 1 else _And(tuple(checks))

    def _not(self) -> _Check:
        if self._peek() == "not":
            self._take()
            return _Not(self._not())
        return self._atom()

    def _atom(self) -> _Check:
        kind, value = self._take()
        if kind == "(":
            check = self._or()
            if self._peek() != ")":
                raise _ParseError("unbalanced parentheses")
            self._take()
            return check
        if kind == "check":
            parsed: _Check = value
            return parsed
        raise _ParseError(f"unexpected {kind!r}")


def parseRule(rule: Any) -> "_Check":
    """
    Parse one rule: a string in the policy language, or the legacy
    list-of-lists form.

    @raise ValueError: with a plain reason, if it cannot be parsed.
    """
    try:
        if isinstance(rule, str):
            if not rule.strip():
                return _Always(True)
            return _Parser(list(_tokenize(rule))).parse()
        if isinstance(rule, list):
            return _parseList(rule)
    except _ParseError as e:
        raise ValueError(str(e)) from None
    raise ValueError(f"a rule must be a string or a list, not {type(rule).__name__}")


def _parseList(rule: List[Any]) -> _Check:
    if not rule:
        return _Always(True)
    alternatives: List[_Check] = []
    for inner in rule:
        if isinstance(inner, str):
            inner = [inner]
        if not isinstance(inner, list) or not all(isinstance(c, str) for c in inner):
            raise _ParseError("a list rule must be a list of lists of strings")
        if not inner:
            continue
        checks = [_parseCheck(c) for c in inner]
        alternatives.append(checks[0] if len(checks) == 1 else _And(tuple(checks)))
    if not alternatives:
        return _Always(False)
    return alternatives[0] if len(alternatives) == 1 else _Or(tuple(alternatives))


def _references(check: _Check) -> Iterator[str]:
    if isinstance(check, _RuleRef):
        yield check.name
    elif isinstance(check, (_And, _Or)):
        for c in check.checks:
            yield from _references(c)
    elif isinstance(check, _Not):
        yield from _references(check.check)


def _findCycle(rules: Mapping[str, _Check]) -> Optional[List[str]]:
    done: Set[str] = set()

    def visit(name: str, path: List[str]) -> Optional[List[str]]:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done or name not in rules:
            return None
        for ref in _references(rules[name]):
            found = visit(ref, path + [name])
            if found:
                return found
        done.add(name)
        return None

    for name in rules:
        found = visit(name, [])
        if found:
            return found
    return None


def compileRules(raw: Mapping[str, Any]) -> Dict[str, _Check]:
    """
    Parse a mapping of rule name to rule, laid over L{DEFAULT_RULES}.

    @raise ValueError: with a plain reason naming the bad rule.
    """
    rules: Dict[str, _Check] = {}
    for name, text in DEFAULT_RULES.items():
        rules[name] = parseRule(text)
    for name, text in raw.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"rule name {name!r} is not a string")
        try:
            rules[name] = parseRule(text)
        except ValueError as e:
            raise ValueError(f"rule {name!r}: {e}") from None
    cycle = _findCycle(rules)
    if cycle:
        raise ValueError("rules refer to each other in a loop: " + " -> ".join(cycle))
    for name, check in rules.items():
        for ref in sorted(set(_references(check)) - set(rules)):
            # It never allows, as in oslo.policy, which said nothing: a
            # misspelt name in "default" refused every request with a 403
            # and no line to say why.  (Not refused: a file written for
            # Glance may name rules Glance defined in its code.)
            _log.warn("policy rule {name!r} refers to rule {ref!r}, which is not defined:"
                      " that part of it never allows", name=name, ref=ref)
    return rules


def parsePolicyText(text: str) -> Dict[str, _Check]:
    """
    Parse the contents of a policy file, JSON or YAML.

    @raise ValueError: with a plain reason.
    """
    if not text.strip():
        # An empty file is far more likely a half-written one than a wish
        # for the defaults; say "{}" for that.
        raise ValueError("the file is empty")
    try:
        data = json.loads(text)
    except ValueError:
        try:
            import yaml  # only YAML policy files pay for the parser

            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"neither JSON nor YAML: {_oneLine(str(e))}") from None
    if not isinstance(data, dict):
        raise ValueError("the file must hold a mapping of rule names to rules")
    return compileRules(data)


def _oneLine(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------
# Watching a small file for changes.


@attr.s(auto_attribs=True)
class WatchedFile:
    """
    A small local configuration file, re-read when it changes on disk.

    L{current} is called on the request path.  It C{stat}s the file at most
    once per L{CHECK_INTERVAL} seconds of the injected clock, and re-reads it
    only when its modification time, size or inode changed.  The re-read is
    synchronous, on purpose: these files are a few kilobytes on local disk,
    read in microseconds and only after an edit; handing that to a thread
    would make every policy decision asynchronous and open a window where
    two requests see different rules for no gain.  (Do not put them on a
    network file system.)

    A file that is missing or does not parse on re-read is logged and the
    previous value stays in force; the broken version is not re-read until
    it changes again.
    """

    path: str
    parse: Callable[[str], Any]
    clock: IClock
    what: str
    _value: Any = None
    _signature: Optional[Tuple[int, int, int, int]] = None
    _lastCheck: float = 0.0

    log = Logger()

    @staticmethod
    def _stat(path: str) -> Tuple[int, int, int, int]:
        st = os.stat(path)
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)

    def load(self) -> Any:
        """
        The first read.

        @raise ValueError: with a plain reason if missing or malformed.
        """
        try:
            signature = self._stat(self.path)
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ValueError(f"cannot read {self.path}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{self.path} is not UTF-8 text") from None
        self._value = self.parse(text)
        self._signature = signature
        self._lastCheck = self.clock.seconds()
        return self._value

    def current(self) -> Any:
        now = self.clock.seconds()
        if abs(now - self._lastCheck) < CHECK_INTERVAL:
            return self._value
        self._lastCheck = now
        try:
            signature = self._stat(self.path)
        except OSError as e:
            if self._signature is not None:
                self.log.error(
                    "{what} {path} cannot be read ({reason}); keeping the previous version",
                    what=self.what,
                    path=self.path,
                    reason=e.strerror or str(e),
                )
                # Logged once; a file that comes back is re-read.
                self._signature = None
            return self._value
        if signature == self._signature:
            return self._value
        self._signature = signature
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
            value = self.parse(text)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            self.log.error(
                "{what} {path} changed but is not valid ({reason}); keeping the previous version",
                what=self.what,
                path=self.path,
                reason=_oneLine(str(e)),
            )
            return self._value
        self.log.info("{what} {path} reloaded", what=self.what, path=self.path)
        self._value = value
        return value


# ---------------------------------------------------------------------------
# The policy.


class Policy:
    """
    A set of named rules, possibly backed by a file that is re-read when it
    changes.  Use L{fromFile} or L{defaults}.
    """

    def __init__(
        self,
        rules: Mapping[str, _Check],
        watched: Optional[WatchedFile] = None,
    ) -> None:
        self._rules = dict(rules)
        self._watched = watched

    @classmethod
    def defaults(cls) -> "Policy":
        """
        Glance's built-in rules: admins are C{role:admin}; only they may
        publicize images or manage the cache; everything else is allowed.
        """
        return cls(compileRules({}))

    @classmethod
    def fromText(cls, text: str) -> "Policy":
        """
        Rules from the text of a policy file (JSON or YAML), not watched.

        @raise ConfigError: if the text is malformed.
        """
        try:
            return cls(parsePolicyText(text))
        except ValueError as e:
            raise ConfigError(f"policy_file: {e}") from None

    @classmethod
    def fromFile(cls, path: str, reactor: Optional[IClock] = None) -> "Policy":
        """
        Rules from a JSON or YAML file, laid over L{DEFAULT_RULES}; the file
        is re-read when it changes (see L{WatchedFile}).

        @param reactor: anything with C{seconds()}; the wall clock if
            C{None}.
        @raise ConfigError: C{"policy_file: <reason>"} if the file is missing
            or malformed.
        """
        watched = WatchedFile(
            path=path,
            parse=parsePolicyText,
            clock=reactor if reactor is not None else _WallClock(),
            what="policy_file",
        )
        try:
            rules = watched.load()
        except ValueError as e:
            raise ConfigError(f"policy_file: {e}") from None
        return cls(rules, watched)

    def _current(self) -> Mapping[str, _Check]:
        if self._watched is not None:
            self._rules = self._watched.current()
        return self._rules

    def hasRule(self, ruleName: str) -> bool:
        """
        Whether a rule of this name is defined (in the file or the
        built-in defaults).
        """
        return ruleName in self._current()

    def enforce(
        self, ruleName: str, target: Mapping[str, Any], creds: Mapping[str, Any]
    ) -> bool:
        """
        Whether C{creds} may do C{ruleName} to C{target}.  A name with no
        rule is decided by the C{default} rule.

        @param target: the object's attributes, e.g. C{{"owner": ...}}.
        @param creds: C{roles} (a collection of names), C{tenant} or
            C{project_id}, C{user} or C{user_id}, C{is_admin}.  Each of the
            aliased keys is also visible under the other name.
        """
        rules = self._current()
        check = rules.get(ruleName)
        if check is None:
            check = rules.get(DEFAULT_RULE_NAME)
            if check is None:
                return False
        return bool(check(target, _normalCreds(creds), rules))

    def isAdmin(
        self, roles: Iterable[str], tenant: Optional[str], user: Optional[str]
    ) -> bool:
        """
        Whether the C{context_is_admin} rule admits this caller.
        """
        creds = {"roles": list(roles), "tenant": tenant, "user": user}
        return self.enforce("context_is_admin", _normalCreds(creds), creds)


_ALIASES = (("tenant", "project_id"), ("user", "user_id"))


def _normalCreds(creds: Mapping[str, Any]) -> Dict[str, Any]:
    out = dict(creds)
    for a, b in _ALIASES:
        if out.get(a) is None and out.get(b) is not None:
            out[a] = out[b]
        elif out.get(b) is None and out.get(a) is not None:
            out[b] = out[a]
    out["roles"] = list(out.get("roles") or ())
    return out


def credsFor(context: Any) -> Dict[str, Any]:
    """
    The credentials mapping for a L{glancetx.context.RequestContext}.
    """
    return _normalCreds(
        {
            "roles": sorted(context.roles),
            "tenant": context.tenant,
            "user": context.user,
            "is_admin": context.is_admin,
        }
    )


__all__ = [
    "DEFAULT_RULES",
    "IClock",
    "RULE_NAMES",
    "Policy",
    "WatchedFile",
    "credsFor",
    "parseRule",
]
