"""
The access log file: appended to, never rotated by the server, and
followed to a new file once logrotate has moved the old one away.
"""

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from glancetx.config import Config
from glancetx.service import GlanceSite
from glancetx.web.accesslog import AppendedLog
from glancetx.web.app import GlanceAPI


class AppendedLogTests(TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "access.log")
        self.clock = Clock()
        self.log = AppendedLog(self.path, self.clock)
        self.addCleanup(self.log.close)

    def read(self, path):
        with open(path) as f:
            return f.read()

    def test_neverRotatedHere(self):
        """
        Megabytes of lines stay in the one file: twisted.web's LogFile
        renamed it after each one, and kept every old file.
        """
        line = "x" * 199 + "\n"
        for _ in range(3 * 1024 * 1024 // len(line)):
            self.log.write(line)
            self.clock.advance(0.01)
        self.assertEqual(os.listdir(self.dir), ["access.log"])
        self.assertGreater(os.path.getsize(self.path), 3 * 1024 * 1024 - len(line))

    def test_linesAreWrittenAtOnce(self):
        self.log.write("one\n")
        self.assertEqual(self.read(self.path), "one\n")

    def test_followsRotation(self):
        """
        Once the file has been moved away, a line written a second later
        goes to a new file by the log's name.
        """
        self.log.write("before\n")
        os.rename(self.path, self.path + ".1")
        self.log.write("moved, not yet seen\n")
        self.clock.advance(1.0)
        self.log.write("after\n")
        self.assertEqual(self.read(self.path + ".1"), "before\nmoved, not yet seen\n")
        self.assertEqual(self.read(self.path), "after\n")

    def test_followsRemoval(self):
        self.log.write("before\n")
        os.unlink(self.path)
        self.clock.advance(1.0)
        self.log.write("after\n")
        self.assertEqual(self.read(self.path), "after\n")

    def test_siteUsesIt(self):
        site = GlanceSite(GlanceAPI(None, Config()), self.clock, self.path)
        site.startFactory()
        self.addCleanup(site.stopFactory)
        self.assertIsInstance(site._logFile, AppendedLog)
