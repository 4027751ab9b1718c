"""
Small Deferred helpers shared by the stores.
"""

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectingCancelledError, ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import ResponseNeverReceived

from glancetx.asyncutil import isCancellation


class IsCancellationTests(SynchronousTestCase):
    def test_cancelledWhileConnecting(self):
        """
        A request cancelled before its connection was made fails with
        C{ConnectingCancelledError}: that is a cancellation too.  Taken for
        a store failure, every client that hung up while a store connection
        was still opening logged a false "cannot reach the store" and a
        traceback.
        """
        self.assertTrue(isCancellation(ConnectingCancelledError(None)))

    def test_cancelledWhileWaitingForTheAnswer(self):
        self.assertTrue(isCancellation(CancelledError()))
        self.assertTrue(isCancellation(ResponseNeverReceived([Failure(CancelledError())])))

    def test_otherFailures(self):
        self.assertFalse(isCancellation(ConnectionRefusedError()))
        self.assertFalse(isCancellation(
            ResponseNeverReceived([Failure(ConnectionRefusedError())])))
