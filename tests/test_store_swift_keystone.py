"""
The Swift store's tests again, with Keystone v3 password auth against a
real Keystone and a Swift proxy that takes its tokens (keystonemiddleware's
authtoken and Swift's keystoneauth): scripts/keystone.sh and
scripts/swift-keystone.sh, which scripts/test starts.

They read C{GLANCETX_KEYSTONE_URL} (for example http://127.0.0.1:5000/v3),
and C{GLANCETX_KEYSTONE_USER}, C{_KEY} and C{_PROJECT} (glance, glancepass
and service, keystone.sh's).
"""

import os

import attr
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SkipTest

from tests import test_store_swift as base
from tests.bodies import BytesBody


def keystoneURL() -> str:
    url = os.environ.get("GLANCETX_KEYSTONE_URL")
    if not url:
        reason = ("GLANCETX_KEYSTONE_URL is not set; start Keystone and its Swift proxy"
                  " with scripts/keystone.sh start and scripts/swift-keystone.sh start")
        if os.environ.get("CI") == "true":
            raise AssertionError(reason)
        raise SkipTest(reason)
    return url


class KeystoneSwiftStoreTests(base.SwiftStoreTests):
    """
    The store contract and the Swift specifics, through Keystone v3: the
    token from Keystone, the storage URL from its catalog.
    """

    user = os.environ.get("GLANCETX_KEYSTONE_USER", "glance")
    key = os.environ.get("GLANCETX_KEYSTONE_KEY", "glancepass")

    def authUrl(self) -> str:
        return keystoneURL()

    def authOptions(self):
        return {"authVersion": 3,
                "projectName": os.environ.get("GLANCETX_KEYSTONE_PROJECT", "service")}

    def test_tokenLifeFromKeystone(self):
        """
        The store knows when Keystone's token ends (its expires_at), so it
        renews it before a request that would otherwise begin with a dead
        one.
        """
        async def go():
            store, stored = await self._roundTrip(b"z" * 10)
            creds = store._configuredCredentials()
            session = store._sessions[creds]
            left = session.expiresAt - reactor.seconds()
            # keystone.sh's tokens last an hour.
            self.assertTrue(3000 < left <= 3600, left)
            # One that ends within the minute is renewed before the next
            # request: the next request goes with a new token.
            store._sessions[creds] = attr.evolve(session, expiresAt=reactor.seconds() + 30)
            self.assertEqual(await store.get_size(stored.location), 10)
            renewed = store._sessions[creds]
            self.assertNotEqual(renewed.token, session.token)
            self.assertTrue(renewed.expiresAt - reactor.seconds() > 3000)
        return ensureDeferred(go())

    def test_wrongPasswordRefused(self):
        async def go():
            store = self.makeStore(key="not-the-password")
            with self.assertRaises(Exception) as caught:
                await store.add(self.imageId(), BytesBody(reactor, b"data"))
            self.assertEqual(str(caught.exception), "Keystone refused the credentials (401)")
        return ensureDeferred(go())


