from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from glancetx.store.deadline import AnswerDeadline
from tests.bodies import RecordingProducer


class HeldBody(RecordingProducer):
    length = 10

    def startProducing(self, consumer):
        self.done = Deferred()
        return self.done


class AnswerDeadlineTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.expired = []
        self.body = HeldBody()
        self.deadline = AnswerDeadline(self.body, self.clock, 30,
                                       lambda: self.expired.append(True))

    def test_clockStartsWhenTheBodyIsSent(self):
        """
        However long the body takes, the answer's time starts at its end.
        """
        sent = self.deadline.startProducing(object())
        self.clock.advance(1000)
        self.assertEqual(self.expired, [])
        self.body.done.callback(None)
        self.assertIsNone(self.successResultOf(sent))
        self.clock.advance(29)
        self.assertEqual(self.expired, [])
        self.clock.advance(1)
        self.assertEqual(self.expired, [True])

    def test_answerInTime(self):
        self.deadline.startProducing(object())
        self.body.done.callback(None)
        self.deadline.cancel()
        self.clock.advance(60)
        self.assertEqual((self.expired, self.clock.getDelayedCalls()), ([], []))

    def test_answerBeforeTheBodyEnds(self):
        self.deadline.startProducing(object())
        self.deadline.cancel()
        self.body.done.callback(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failedBodyStartsNothing(self):
        sent = self.deadline.startProducing(object())
        self.body.done.errback(RuntimeError("client went away"))
        self.failureResultOf(sent, RuntimeError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flowControlPassesThrough(self):
        self.deadline.pauseProducing()
        self.deadline.resumeProducing()
        self.deadline.stopProducing()
        self.assertEqual(self.body.calls, ["pause", "resume", "stop"])
        self.assertEqual(self.deadline.length, 10)
