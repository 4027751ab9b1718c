from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseFailed

from glancetx.store.documents import readDocument
from tests.test_store_s3 import FakeResponse


class DocumentReaderTests(SynchronousTestCase):
    """
    A store's small answers (error documents, XML and JSON) are read with a
    bound: a larger one is cut, and its connection dropped, rather than
    read whole.
    """

    def test_cutAtLimit(self):
        response = FakeResponse(None)
        document = readDocument(response, 5)
        response.protocol.dataReceived(b"<Error>")
        self.assertEqual(response.transport.calls, ["stop"])
        response.protocol.dataReceived(b"more that was on its way")
        response.protocol.connectionLost(Failure(ResponseFailed([])))
        self.assertEqual(self.successResultOf(document), b"<Erro")

    def test_brokenOff(self):
        response = FakeResponse(None)
        document = readDocument(response, 5)
        response.protocol.dataReceived(b"<Er")
        response.protocol.connectionLost(Failure(ResponseFailed([])))
        self.failureResultOf(document, ResponseFailed)
