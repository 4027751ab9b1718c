"""
Which addresses the server may fetch from when a user names the URL, as
pure address arithmetic: L{glancetx.netguard} enforces it on every
connection, and the configuration is checked with it at start without
loading an HTTP client.

Refused unless inside C{copy_from_allowed_networks}: loopback, link-local,
private (RFC 1918, fc00::/7), unspecified, multicast, reserved and otherwise
non-global addresses, and IPv6 forms that carry such an IPv4 address
(IPv4-mapped, NAT64, 6to4).
"""

import ipaddress
from typing import List, Optional, Sequence, Union

from glancetx.errors import ConfigError

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def parseNetworks(text: Optional[str]) -> List[Network]:
    """
    Parse C{copy_from_allowed_networks}: comma-separated CIDRs (a bare
    address means just that address).

    @raise ConfigError: naming the option, for anything that is not a
        network or has host bits set.
    """
    networks: List[Network] = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as e:
            raise ConfigError("copy_from_allowed_networks: %s" % (e,))
    return networks


def parseAddress(address: Union[str, Address]) -> Optional[Address]:
    if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return address
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def _embedded(address: Address) -> Optional[ipaddress.IPv4Address]:
    """
    The IPv4 address an IPv6 address stands for, where connecting to it may
    reach that IPv4 host: IPv4-mapped, NAT64 well-known prefix, 6to4.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return None


def _forbidden(address: Address) -> bool:
    if (
        address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
        or not address.is_global
    ):
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return True
    return False


def isPermitted(address: Union[str, Address], allowedNetworks: Sequence[Network]) -> bool:
    """
    May the server connect to C{address}?  Anything that is not an IP
    address (a name, garbage) is not.
    """
    parsed = parseAddress(address)
    if parsed is None:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.scope_id:
        parsed = ipaddress.IPv6Address(parsed.compressed.split("%", 1)[0])
    inner = _embedded(parsed)
    candidates = [parsed] if inner is None else [parsed, inner]
    for candidate in candidates:
        for network in allowedNetworks:
            if candidate.version == network.version and candidate in network:
                return True
    if inner is not None:
        if _forbidden(inner):
            return False
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            # ::ffff:a.b.c.d is a.b.c.d on a dual-stack socket, nothing more.
            return True
    return not _forbidden(parsed)
