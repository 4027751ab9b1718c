"""
The access log's own file, for logrotate to rotate.

twisted.web's Site writes its access log through a LogFile, which renames
the file to C{.1} after each megabyte, every older one up by one, on the
reactor thread, and never deletes any: at 1,000 requests a second that is
a rotation every few seconds, twelve thousand files a day, and each
rotation pausing every request for longer than the last.  It would also
rename a C{/dev/null} given as the log.

Here the file is only appended to.  Rotation is the operator's, as for
Glance's own logs: when logrotate (or anyone) moves the file away, the
next line written a second or more later goes to a new file by the same
name, so no signal or C{copytruncate} is needed.
"""

import os
from typing import Any, Optional, TextIO


class AppendedLog:
    """
    A log file appended to a line at a time, opened again by name when
    the name has come to mean another file (or none).
    """

    #: Seconds between looks at what the name means.
    checkEvery = 1.0

    def __init__(self, path: str, clock: Any) -> None:
        self.path = path
        self._clock = clock
        self._file: Optional[TextIO] = None
        self._inode: Optional[int] = None
        self._checked = 0.0
        self._open()

    def _open(self) -> None:
        self._file = open(self.path, "a", 1, encoding="utf-8", newline="\n")
        self._inode = os.fstat(self._file.fileno()).st_ino
        self._checked = self._clock.seconds()

    def _moved(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            return True

    def write(self, line: str) -> None:
        now = self._clock.seconds()
        if now - self._checked >= self.checkEvery:
            self._checked = now
            if self._moved():
                self.close()
                self._open()
        if self._file is None:
            self._open()
        self._file.write(line)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()
