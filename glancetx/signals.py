"""
A stop signal that arrives while the server is already shutting down, and
a SIGHUP.

Twisted's handlers call C{reactor.stop()} for every SIGTERM or SIGINT.
The shutdown can take seconds (uploads are ended and cleaned up,
notifications still queued get a last chance to go out), and a second
signal in that time (an impatient operator, a supervisor that repeats
itself) made C{reactor.stop()} raise C{ReactorNotRunning}, logged as a
critical traceback though nothing was wrong.  Once the shutdown has
begun, the reactor's handlers give way to one that says in a line that
the shutdown goes on.
"""

import signal
from types import FrameType
from typing import Optional

from twisted.logger import Logger

log = Logger()

#: The stop signals whose handlers the reactor installs.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def quietRepeatedStops(reactor) -> None:
    """
    Replace the stop handlers that belong to C{reactor}; a handler someone
    else installed (or none, when the reactor installed none) is left as
    it is.  Meant as a C{("before", "shutdown")} trigger.
    """
    for number in STOP_SIGNALS:
        if getattr(signal.getsignal(number), "__self__", None) is reactor:
            signal.signal(number, _stillStopping)


def _stillStopping(number: int, frame: Optional[FrameType]) -> None:
    log.info("Received {signal} again: still shutting down.",
             signal=signal.Signals(number).name)


def sayOnHangUp() -> None:
    """
    Answer SIGHUP with a line instead of its default action, which ended
    the server at once and without a word: operators and log rotation
    send it by habit, expecting a reload.  A handler someone else
    installed is left as it is.
    """
    if signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
        signal.signal(signal.SIGHUP, _hungUp)


def _hungUp(number: int, frame: Optional[FrameType]) -> None:
    log.warn("Received SIGHUP: glancetx reloads nothing; restart it to apply a changed"
             " configuration (SIGUSR1 reopens the twistd log file).")
