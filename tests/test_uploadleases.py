"""
A process's upload leases: what it writes, and what it renews.
"""

import datetime

from twisted.internet.defer import succeed
from twisted.trial.unittest import SynchronousTestCase

from glancetx.registry.registry import UploadLease
from glancetx.uploadleases import UploadLeases


class RecordingRegistry:
    def __init__(self):
        self.renewals = []

    def renewUploads(self, holder, expiresAt):
        self.renewals.append((holder, expiresAt))
        return succeed(1)


class UploadLeasesTests(SynchronousTestCase):
    def setUp(self):
        self.now = datetime.datetime(2030, 1, 1)
        self.registry = RecordingRegistry()
        self.leases = UploadLeases(self.registry, 30, holder="me", now=lambda: self.now)

    def test_takeWritesHolderExpiryAndStore(self):
        self.assertEqual(self.leases.take("img", "s3"),
                         UploadLease("img", "me", datetime.datetime(2030, 1, 1, 0, 0, 30), "s3"))
        self.assertEqual(self.leases.held, 0)
        self.leases.hold("img")
        self.assertEqual(self.leases.held, 1)

    def test_renewsOnlyWhileHolding(self):
        """
        Renewal is one statement for every lease of the process, and none
        at all while it holds none.
        """
        self.successResultOf(self.leases.renew())
        self.assertEqual(self.registry.renewals, [])
        self.leases.hold("a")
        self.leases.hold("b")
        self.now += datetime.timedelta(seconds=10)
        self.successResultOf(self.leases.renew())
        self.assertEqual(self.registry.renewals,
                         [("me", datetime.datetime(2030, 1, 1, 0, 0, 40))])
        self.leases.release("a")
        self.leases.release("b")
        self.leases.release("b")
        self.successResultOf(self.leases.renew())
        self.assertEqual(len(self.registry.renewals), 1)

    def test_renewedThriceALease(self):
        self.assertEqual(self.leases.interval, 10)

    def test_eachProcessItsOwnHolder(self):
        self.assertNotEqual(UploadLeases(self.registry).holder,
                            UploadLeases(self.registry).holder)
