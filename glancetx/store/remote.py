"""
Builds the remote stores (http, s3, swift) the configuration names.

Two kinds of HTTP client: the S3 and Swift drivers talk to the object
store the operator configured (trusted, often on a private network), over
one persistent connection pool; the http store fetches URLs that users
name, so it goes through the address guard of L{glancetx.netguard}.

The HTTP client (twisted.web.client, and through its endpoints pyOpenSSL)
is imported only when a store needs it: the http store, which every
default configuration lists, builds its client on first use, so a server
that never fetches a URL never loads TLS (see L{glancetx.lazytls}).
"""

from typing import Callable, Dict, Optional

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from glancetx.addresses import parseNetworks
from glancetx.store.interface import IStore


def makeRemoteStores(config, reactor) -> Dict[str, object]:
    stores: Dict[str, object] = {}
    raw = config.raw
    if "http" in config.stores:
        allowed = parseNetworks(raw.get("copy_from_allowed_networks", ""))

        def buildHTTPStore():
            from glancetx.netguard import guardedHTTPClient
            from glancetx.store.http import HTTPStore

            return HTTPStore(guardedHTTPClient(reactor, allowed, pool=quietPool(reactor)),
                             reactor)

        stores["http"] = HTTPStoreOnFirstUse(buildHTTPStore)
    trusted = None
    if "s3" in config.stores or "swift" in config.stores:
        from treq.client import HTTPClient
        from twisted.web.client import Agent

        from glancetx.lazytls import HTTPEndpoints

        pool = quietPool(reactor)
        pool.maxPersistentPerHost = 8
        trusted = HTTPClient(
            Agent.usingEndpointFactory(reactor, HTTPEndpoints(reactor), pool=pool))
    if "s3" in config.stores:
        from glancetx.store.s3 import S3Store

        stores["s3"] = S3Store.fromConfig(raw, reactor, trusted)
    if "swift" in config.stores:
        from glancetx.store.swift import SwiftStore

        stores["swift"] = SwiftStore.fromConfig(raw, reactor, trusted)
    return stores


def quietPool(reactor):
    """
    A persistent connection pool whose connections are not logged.
    Twisted's HTTP client factory logs "Starting factory" and "Stopping
    factory" at info level for every connection it opens: two lines for
    every URL fetched and every new connection to S3 or Swift, which say
    nothing an operator can use (Twisted #9330).  The factory class is
    private to twisted.web.client, hence a test that holds it to its name.
    """
    from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory

    class QuietFactory(_HTTP11ClientFactory):
        noisy = False

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool._factory = QuietFactory
    return pool


@implementer(IStore)
class HTTPStoreOnFirstUse:
    """
    The http store, built the first time an image is read from or sized on
    a web server.  Its name, schemes and writability are known without it.
    """

    name = "http"
    schemes = ("http", "https")
    writable = False
    sweptAfterFailure = False

    def __init__(self, build: Callable[[], object]) -> None:
        self._build = build
        self._store = None

    def _built(self):
        if self._store is None:
            self._store = self._build()
        return self._store

    def add(self, image_id: str, body) -> Deferred:
        return self._built().add(image_id, body)

    def get(self, location: str) -> Deferred:
        return self._built().get(location)

    def get_size(self, location: str) -> Deferred:
        return self._built().get_size(location)

    def delete(self, location: str) -> Deferred:
        return self._built().delete(location)

    def removeAbandoned(self, image_id: str, retry: bool = True) -> Deferred:
        return succeed(None)


def userLocationRefusal(store, location: str) -> Optional[str]:
    """
    Why C{store} may not read a location a user supplies
    (x-image-meta-location, copy-from), or None if it may.

    http(s) locations go through the address guard when fetched.  s3 and
    swift locations are read with the operator's trusted client, so they
    must name the object store the operator configured: otherwise a user
    could make the server talk to any host on its internal network.  And
    they must carry their own credentials: the swift store reads a
    location without any, or one naming its own account, with the
    operator's key as configured now, so a user naming another image's
    object there would read it, and delete it with the image (Glance
    refused C{swift+config} locations from users for this, Launchpad bug
    1334196); one naming the store's own account must carry its current
    key.  The s3 store takes no location without credentials at all.
    """
    if store.name == "http":
        return None
    try:
        if store.name == "s3":
            from glancetx.store.s3 import parseLocation
            if parseLocation(location).host.lower() == store.host.lower():
                return None
        elif store.name == "swift":
            from glancetx.store.swift import _normalAddress, parseLocation
            parsed = parseLocation(location)
            if _normalAddress(parsed.authAddress) == store.authAddress:
                return store.refusesFromUser(parsed)
    except Exception:
        pass
    return "This %s location does not name the configured object store." % (store.name,)
