"""
Stop signals during the shutdown (the real process: test_twistd).
"""

import signal

from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase

from glancetx.signals import quietRepeatedStops, sayOnHangUp


class _Reactor:
    """
    The part of a reactor its signal handlers are bound to.
    """

    def __init__(self):
        self.stops = []

    def sigTerm(self, number, frame=None):
        self.stops.append(number)

    sigInt = sigTerm


class QuietRepeatedStopsTests(TestCase):
    def setUp(self):
        for number in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        self.reactor = _Reactor()

    def test_repeatedStopIsOneLine(self):
        """
        Once the shutdown has begun, a SIGTERM or SIGINT no longer reaches
        the reactor's handler (whose C{stop()} would raise
        C{ReactorNotRunning}); it is logged as one line.
        """
        signal.signal(signal.SIGTERM, self.reactor.sigTerm)
        signal.signal(signal.SIGINT, self.reactor.sigInt)
        quietRepeatedStops(self.reactor)
        with capturedLogs() as events:
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGINT)
        self.assertEqual(self.reactor.stops, [])
        self.assertEqual([e["log_format"].format(**e) for e in events],
                         ["Received SIGTERM again: still shutting down.",
                          "Received SIGINT again: still shutting down."])

    def test_othersHandlersStay(self):
        """
        A handler that is not the reactor's (a program that installed its
        own, or none, as when the reactor was told to install none) is
        left in place.
        """
        def own(number, frame):
            pass
        signal.signal(signal.SIGTERM, own)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        quietRepeatedStops(self.reactor)
        self.assertIs(signal.getsignal(signal.SIGTERM), own)
        self.assertIs(signal.getsignal(signal.SIGINT), signal.default_int_handler)


class HangUpTests(TestCase):
    def setUp(self):
        self.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))

    def test_hangUpIsOneLine(self):
        """
        SIGHUP, which operators and log rotation send by habit, ended the
        server at once (the default action), with no line logged and its
        uploads left C{saving}.  It now says in one line that nothing is
        reloaded, and the server goes on.
        """
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        sayOnHangUp()
        with capturedLogs() as events:
            signal.raise_signal(signal.SIGHUP)
        self.assertEqual([e["log_format"].format(**e) for e in events],
                         ["Received SIGHUP: glancetx reloads nothing; restart it to apply a"
                          " changed configuration (SIGUSR1 reopens the twistd log file)."])

    def test_othersHandlerStays(self):
        def own(number, frame):
            pass
        signal.signal(signal.SIGHUP, own)
        sayOnHangUp()
        self.assertIs(signal.getsignal(signal.SIGHUP), own)
