"""
Who is asking: the identity every request carries into the image service.

The web layer builds one per request from the configured auth strategy; the
image service decides with it and never looks at HTTP headers.
"""

from typing import FrozenSet, Optional

import attr


@attr.s(frozen=True, slots=True, auto_attribs=True)
class RequestContext:
    user: Optional[str]
    tenant: Optional[str]
    roles: FrozenSet[str] = attr.ib(converter=frozenset, factory=frozenset)
    is_admin: bool = False
    read_only: bool = False
    auth_token: Optional[str] = attr.ib(default=None, repr=False)

    @property
    def owner(self) -> Optional[str]:
        """
        The tenant that owns what this context creates.
        """
        return self.tenant


#: What every request is under C{auth_strategy = noauth}.
NOAUTH_TENANT = "admin"


def noauthContext() -> RequestContext:
    return RequestContext(
        user="admin", tenant=NOAUTH_TENANT, roles=frozenset({"admin"}), is_admin=True
    )
