"""
The real C{twistd glance}, started for a test on a free loopback port.
"""

import os
import re
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

TWISTD = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "twistd")


class _Watcher(ProcessProtocol):
    def __init__(self):
        self.output = []
        self.port = Deferred()
        self.ended = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output.append(data)
        if not self.port.called:
            m = re.search(rb"GlanceSite (?:\(TLS\) )?starting on (\d+)", b"".join(self.output))
            if m:
                self.port.callback(int(m.group(1)))

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        if not self.port.called:
            self.port.errback(RuntimeError("twistd glance exited before listening:\n"
                                           + b"".join(self.output).decode("utf-8", "replace")))
        self.ended.callback(reason.value)


class GlanceServer:
    """
    One twistd process with its own data directory (and config file).
    """

    def __init__(self, testCase, options=None, dataDir=None, env=None,
                 port="tcp:0:interface=127.0.0.1", scheme="http", command=None):
        self.testCase = testCase
        # the command line up to the glance plugin's own options
        self.command = command or [TWISTD, "-n", "--pidfile=", "--logfile=-", "glance"]
        self.env = dict(env or {})
        self.portDescription = port
        self.scheme = scheme
        self.dataDir = dataDir or os.path.abspath(testCase.mktemp())
        os.makedirs(self.dataDir, exist_ok=True)
        self.options = dict(options or {})

    def writeConfig(self) -> str:
        path = os.path.join(self.dataDir, "glance.conf")
        with open(path, "w") as f:
            f.write("[DEFAULT]\n")
            for k, v in self.options.items():
                f.write("%s = %s\n" % (k, v))
        return path

    async def start(self) -> "GlanceServer":
        args = self.command + ["--port", self.portDescription, "--data-dir", self.dataDir,
                               "--config", self.writeConfig()]
        self.watcher = _Watcher()
        env = dict(os.environ)
        env.update(self.env)
        self.process = reactor.spawnProcess(self.watcher, args[0], args, env=env,
                                            path=self.dataDir)
        self.testCase.addCleanup(self.stop)
        self.port = await self.watcher.port
        self.url = "%s://127.0.0.1:%d" % (self.scheme, self.port)
        return self

    def log(self) -> str:
        return b"".join(self.watcher.output).decode("utf-8", "replace")

    async def stop(self) -> None:
        if self.watcher.ended.called:
            return
        try:
            self.process.signalProcess("TERM")
        except Exception:
            pass
        timer = reactor.callLater(20, lambda: self.process.signalProcess("KILL"))
        await self.watcher.ended
        if timer.active():
            timer.cancel()

    def pid(self) -> int:
        return self.process.pid
