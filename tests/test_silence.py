"""
The silence limit on an object store's answer body.
"""

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from glancetx.store.documents import readDocument
from glancetx.store.interface import StoreUnavailable
from glancetx.store.silence import SilentAnswer
from tests.bodies import RecordingProducer


class Response:
    """
    An answer whose body the test delivers by hand.
    """

    code = 200
    headers = "the headers"

    def __init__(self):
        self.transport = RecordingProducer()
        self.protocol = None

    def deliverBody(self, protocol):
        self.protocol = protocol
        protocol.makeConnection(self.transport)


class Reader:
    def __init__(self):
        self.data = []
        self.ended = None

    def makeConnection(self, transport):
        self.transport = transport

    def dataReceived(self, data):
        self.data.append(data)

    def connectionLost(self, reason):
        self.ended = reason


class SilentAnswerTests(SynchronousTestCase):
    def answer(self, seconds=60):
        self.clock = Clock()
        self.response = Response()
        return SilentAnswer(self.response, self.clock, seconds, "S3 upload")

    def test_theResponseOtherwise(self):
        answer = self.answer()
        self.assertEqual((answer.code, answer.headers), (200, "the headers"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_silentBodyFails(self):
        """
        A body that says nothing for the limit is stopped, and its reader
        told the store is unavailable, though the close would have read as
        a complete body of unknown length.
        """
        answer = self.answer()
        reader = Reader()
        answer.deliverBody(reader)
        self.clock.advance(59)
        self.response.protocol.dataReceived(b"<ok")
        self.clock.advance(59)
        self.assertEqual(self.response.transport.calls, [])
        self.clock.advance(1)
        self.assertEqual(self.response.transport.calls, ["stop"])
        self.response.protocol.connectionLost(Failure(PotentialDataLoss()))
        self.assertEqual(reader.data, [b"<ok"])
        reader.ended.trap(StoreUnavailable)
        self.assertEqual(str(reader.ended.value),
                         "S3 upload: the store sent nothing of its answer for 60 seconds")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_documentReadFails(self):
        """
        readDocument, which every short answer goes through, fails rather
        than waits for good.
        """
        answer = self.answer(seconds=5)
        d = readDocument(answer)
        self.clock.advance(5)
        self.response.protocol.connectionLost(Failure(PotentialDataLoss()))
        self.failureResultOf(d, StoreUnavailable)

    def test_bodyThatEnds(self):
        answer = self.answer()
        d = readDocument(answer)
        self.response.protocol.dataReceived(b"<done/>")
        self.response.protocol.connectionLost(Failure(ResponseDone()))
        self.assertEqual(self.successResultOf(d), b"<done/>")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pausedByItsReaderIsNotSilence(self):
        """
        A download paused because its client is slow is not the store's
        silence: no limit runs until it is resumed.
        """
        answer = self.answer()
        reader = Reader()
        answer.deliverBody(reader)
        reader.transport.pauseProducing()
        self.clock.advance(600)
        self.assertEqual(self.response.transport.calls, ["pause"])
        reader.transport.resumeProducing()
        self.clock.advance(59)
        self.assertEqual(self.response.transport.calls, ["pause", "resume"])
        self.clock.advance(1)
        self.assertEqual(self.response.transport.calls, ["pause", "resume", "stop"])

    def test_stoppedByItsReader(self):
        """
        A reader that stops the body itself (a document past its limit)
        leaves no timer behind, and its ending is its own.
        """
        answer = self.answer()
        reader = Reader()
        answer.deliverBody(reader)
        reader.transport.stopProducing()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.response.protocol.connectionLost(Failure(ResponseDone()))
        reader.ended.trap(ResponseDone)

    def test_deadlineIsPerBody(self):
        """
        Nothing runs before the body is asked for: an answer whose body is
        never read (a HEAD) leaves no timer.
        """
        self.answer()
        self.clock.advance(1000)
        self.assertEqual(self.clock.getDelayedCalls(), [])
