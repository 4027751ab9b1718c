"""
Glance's property protections: who may create, read, update and delete
which custom image properties.

The C{property_protection_file} is INI, one section per property-name
regular expression::

    [^x_billing_.*]
    create = admin,billing
    read = @
    update = admin
    delete = !

Each operation's value is a comma-separated list of roles (or, when
C{property_protection_rule_format = policies}, a single policy rule name);
C{@} alone means anyone, C{!} alone means nobody, an empty value means
nobody.  As in Glance:

  - sections are tried in file order and the first whose expression is
    found I{anywhere} in the property name wins (Glance used
    C{re.search}, so anchor with C{^...$} to match whole names);
  - a property no section matches is refused for every operation, unless
    the file has no sections at all, in which case nothing is protected;
  - every section must name all four operations (a C{[DEFAULT]} section
    supplies values to all sections, as configparser does);
  - roles are compared case-insensitively; admins get no bypass.

Stricter than Glance, because they were always mistakes: an unknown key in
a section, C{@} or C{!} combined with anything else, and (policies format)
a rule name the policy does not define are configuration errors.
"""

import configparser
import re
from typing import Dict, FrozenSet, List, Optional, Pattern

import attr

from glancetx.context import RequestContext
from glancetx.errors import ConfigError
from glancetx.policy import Policy, credsFor

OPERATIONS = ("create", "read", "update", "delete")
RULE_FORMATS = ("roles", "policies")

_ANYONE = "@"
_NOBODY = "!"


@attr.s(frozen=True, slots=True, auto_attribs=True)
class _Permission:
    """
    What one operation of one section allows: anyone, nobody, or the
    holders of any of C{names} (roles, or one policy rule name).
    """

    anyone: bool = False
    names: FrozenSet[str] = frozenset()


@attr.s(frozen=True, slots=True, auto_attribs=True)
class _Section:
    expression: str
    pattern: Pattern[str]
    permissions: Dict[str, _Permission]


class PropertyProtections:
    """
    The rules of a property protection file.  Use L{fromFile} or
    L{allowAll}.
    """

    def __init__(
        self,
        sections: List[_Section],
        ruleFormat: str = "roles",
        policy: Optional[Policy] = None,
        enabled: bool = True,
    ) -> None:
        self._sections = sections
        self._ruleFormat = ruleFormat
        self._policy = policy
        self._enabled = enabled

    @classmethod
    def allowAll(cls) -> "PropertyProtections":
        """
        No protection file configured: every operation on every property is
        allowed.
        """
        return cls([], enabled=False)

    @property
    def enabled(self) -> bool:
        """
        Whether a protection file is in force.
        """
        return self._enabled

    @classmethod
    def fromFile(
        cls, path: str, ruleFormat: str = "roles", policy: Optional[Policy] = None
    ) -> "PropertyProtections":
        """
        Read a property protection file.

        @param ruleFormat: C{"roles"} or C{"policies"}.
        @param policy: the policy whose rules the file names (policies
            format only; required then).
        @raise ConfigError: C{"property_protection_rule_format: ..."} for a
            bad format, C{"property_protection_file: ..."} if the file is
            missing or malformed.
        """
        if ruleFormat not in RULE_FORMATS:
            raise ConfigError(
                f"property_protection_rule_format: {ruleFormat!r} is not one of "
                + ", ".join(RULE_FORMATS)
            )
        if ruleFormat == "policies" and policy is None:
            raise ConfigError(
                "property_protection_rule_format: 'policies' needs a policy"
            )
        try:
            sections = _readSections(path, ruleFormat, policy)
        except ValueError as e:
            raise ConfigError(f"property_protection_file: {e}") from None
        return cls(sections, ruleFormat, policy)

    def check(
        self, propertyName: str, operation: str, context: RequestContext
    ) -> bool:
        """
        Whether C{context} may do C{operation} (create, read, update or
        delete) to the property called C{propertyName}.

        @raise ValueError: for an unknown operation (a programming error).
        """
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}")
        if not self._enabled or not self._sections:
            return True
        for section in self._sections:
            if section.pattern.search(propertyName):
                break
        else:
            return False
        permission = section.permissions[operation]
        if permission.anyone:
            return True
        if not permission.names:
            return False
        if self._ruleFormat == "policies":
            assert self._policy is not None
            (ruleName,) = permission.names
            # As Glance's "rule:<name>": a rule gone from a reloaded policy
            # file denies rather than falling to the default rule.
            if not self._policy.hasRule(ruleName):
                return False
            return self._policy.enforce(ruleName, {}, credsFor(context))
        roles = {r.lower() for r in context.roles}
        return not roles.isdisjoint(permission.names)


def _readSections(
    path: str, ruleFormat: str, policy: Optional[Policy]
) -> List[_Section]:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    except configparser.Error as e:
        raise ValueError(" ".join(str(e).split())) from None

    sections = []
    for expression in parser.sections():
        try:
            pattern = re.compile(expression)
        except re.error as e:
            raise ValueError(f"[{expression}] is not a valid regular expression: {e}") from None
        keys = set(parser.options(expression))
        unknown = sorted(keys - set(OPERATIONS))
        if unknown:
            raise ValueError(f"[{expression}] has unknown key(s): {', '.join(unknown)}")
        permissions: Dict[str, _Permission] = {}
        for operation in OPERATIONS:
            if operation not in keys:
                raise ValueError(f"[{expression}] has no {operation} key")
            where = f"[{expression}] {operation}"
            value = parser.get(expression, operation)
            permissions[operation] = _parsePermission(where, value, ruleFormat, policy)
        sections.append(_Section(expression, pattern, permissions))
    return sections


def _parsePermission(
    where: str, value: str, ruleFormat: str, policy: Optional[Policy]
) -> _Permission:
    items = [item.strip() for item in value.split(",")]
    items = [item for item in items if item]
    if not items:
        return _Permission()
    if _ANYONE in items or _NOBODY in items:
        if len(items) != 1:
            raise ValueError(f"{where}: '@' and '!' must stand alone")
        return _Permission(anyone=True) if items == [_ANYONE] else _Permission()
    if ruleFormat == "policies":
        if len(items) != 1:
            raise ValueError(
                f"{where}: one policy rule per operation (combine them in the policy file)"
            )
        assert policy is not None
        if not policy.hasRule(items[0]):
            raise ValueError(f"{where}: no policy rule called {items[0]!r}")
        return _Permission(names=frozenset(items))
    return _Permission(names=frozenset(item.lower() for item in items))


__all__ = ["OPERATIONS", "RULE_FORMATS", "PropertyProtections"]
