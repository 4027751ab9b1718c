"""
Builds the remote stores (http, s3, swift) the configuration names.

Two kinds of HTTP client: the S3 and Swift drivers talk to the object
store the operator configured (trusted, often on a private network), over
one persistent connection pool; the http store fetches URLs that users
name, so it goes through the address guard of L{glancetx.netguard}.
"""

from typing import Dict

from treq.client import HTTPClient
from twisted.web.client import Agent, HTTPConnectionPool


def makeRemoteStores(config, reactor) -> Dict[str, object]:
    stores: Dict[str, object] = {}
    raw = config.raw
    if "http" in config.stores:
        from glancetx.netguard import guardedHTTPClient, parseNetworks
        from glancetx.store.http import HTTPStore

        allowed = parseNetworks(raw.get("copy_from_allowed_networks", ""))
        pool = HTTPConnectionPool(reactor, persistent=True)
        stores["http"] = HTTPStore(guardedHTTPClient(reactor, allowed, pool=pool), reactor)
    trusted = None
    if "s3" in config.stores or "swift" in config.stores:
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 8
        trusted = HTTPClient(Agent(reactor, pool=pool))
    if "s3" in config.stores:
        from glancetx.store.s3 import S3Store

        stores["s3"] = S3Store.fromConfig(raw, reactor, trusted)
    if "swift" in config.stores:
        from glancetx.store.swift import SwiftStore

        stores["swift"] = SwiftStore.fromConfig(raw, reactor, trusted)
    return stores


def userMayName(store, location: str) -> bool:
    """
    Whether a location a user supplies (x-image-meta-location, copy-from)
    may be read by C{store}.

    http(s) locations go through the address guard when fetched.  s3 and
    swift locations are read with the operator's trusted client, so they
    must name the object store the operator configured: otherwise a user
    could make the server talk to any host on its internal network.
    """
    if store.name == "http":
        return True
    try:
        if store.name == "s3":
            from glancetx.store.s3 import parseLocation
            return parseLocation(location).host.lower() == store.host.lower()
        if store.name == "swift":
            from glancetx.store.swift import _normalAddress, parseLocation
            return _normalAddress(parseLocation(location).authAddress) == store.authAddress
    except Exception:
        return False
    return False
