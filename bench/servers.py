"""
Starting and stopping the servers under test: glancetx (twistd), nginx (the
ceilings), and the small Twisted/Klein ceiling servers in tinyservers.py.
Each gets a free loopback port; every glancetx gets a fresh data dir in the
bench dir (the same filesystem as nginx's temp and DAV dirs).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, Optional

from bench.common import (REPO, VENV_BIN, benchDir, freePort, log, procStatus,
                          waitForPort)

HERE = os.path.dirname(os.path.abspath(__file__))


class Process:
    proc: Optional[subprocess.Popen] = None
    port: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str = "") -> str:
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Glance(Process):
    """
    One twistd glance, fresh data dir, optional INI options.
    """

    def __init__(self, options: Optional[Dict[str, str]] = None, label: str = "glance") -> None:
        self.dataDir = tempfile.mkdtemp(prefix=label + "-", dir=benchDir("data"))
        self.port = freePort()
        args = [os.path.join(VENV_BIN, "twistd"), "-n", "--pidfile=", "glance",
                "--port", "tcp:%d:interface=127.0.0.1" % (self.port,),
                "--data-dir", self.dataDir]
        if options:
            conf = os.path.join(self.dataDir, "glance.conf")
            with open(conf, "w") as f:
                f.write("[DEFAULT]\n")
                for k, v in options.items():
                    f.write("%s = %s\n" % (k, v))
            args += ["--config", conf]
        self.logPath = os.path.join(self.dataDir, "twistd.log")
        self._logFile = open(self.logPath, "wb")
        self._args = args
        self._spawn()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(self._args, cwd=self.dataDir, stdout=self._logFile,
                                     stderr=subprocess.STDOUT)
        waitForPort(self.port, 60, self.proc)
        self._waitReady()
        self.startupPeak = procStatus(self.pid, "VmHWM")

    def restart(self) -> None:
        """
        Stop and start again on the same data dir (after a bulk load, so the
        server's database connections read the new planner statistics).
        """
        Process.stop(self)
        self._spawn()

    def _waitReady(self) -> None:
        import http.client
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/v1/images?limit=1")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("glancetx on %d never answered GET /v1/images" % (self.port,))

    @property
    def dbPath(self) -> str:
        return os.path.join(self.dataDir, "glance.sqlite")

    def stop(self, keep: bool = False) -> None:
        super().stop()
        self._logFile.close()
        if not keep:
            shutil.rmtree(self.dataDir, ignore_errors=True)


class Tiny(Process):
    """
    One of tinyservers.py's servers (bare, klein, md5).
    """

    def __init__(self, kind: str) -> None:
        self.port = freePort()
        self.logPath = os.path.join(benchDir("logs"), "tiny-%s.log" % (kind,))
        self.proc = subprocess.Popen(
            [os.path.join(VENV_BIN, "python"), "-m", "bench.tinyservers", kind,
             str(self.port), self.logPath],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(self.logPath + ".err", "wb"))
        waitForPort(self.port, 30, self.proc)


def nginxBinary() -> Optional[str]:
    for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.path.exists(p):
            return p
    return shutil.which("nginx")


class Nginx(Process):
    """
    nginx from bench/nginx.conf.template, with its own dirs under the bench dir.
    """

    def __init__(self, filesDir: str) -> None:
        binary = nginxBinary()
        if binary is None:
            raise RuntimeError("nginx is not installed: apt-get install -y nginx-light (or nginx)")
        self.dir = benchDir("nginx")
        for sub in ("tmp", "dav"):
            shutil.rmtree(os.path.join(self.dir, sub), ignore_errors=True)
            os.makedirs(os.path.join(self.dir, sub))
        self.filesDir = filesDir
        self.port = freePort()
        self.portNoSendfile = freePort()
        with open(os.path.join(HERE, "nginx.conf.template")) as f:
            conf = f.read()
        conf = (conf.replace("@NGINX_DIR@", self.dir).replace("@FILES_DIR@", filesDir)
                .replace("@PORT_NOSENDFILE@", str(self.portNoSendfile))
                .replace("@PORT@", str(self.port))
                .replace("@USER@", "user root;" if os.geteuid() == 0 else ""))
        confPath = os.path.join(self.dir, "nginx.conf")
        with open(confPath, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(
            [binary, "-p", self.dir, "-e", os.path.join(self.dir, "error.log"),
             "-c", confPath, "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "stderr.log"), "wb"))
        waitForPort(self.port, 15, self.proc)
        waitForPort(self.portNoSendfile, 15, self.proc)

    def urlNoSendfile(self, path: str) -> str:
        return "http://127.0.0.1:%d%s" % (self.portNoSendfile, path)

    def davPath(self, name: str) -> str:
        return os.path.join(self.dir, "dav", name)

    def cleanDav(self) -> None:
        d = os.path.join(self.dir, "dav")
        for n in os.listdir(d):
            try:
                os.unlink(os.path.join(d, n))
            except OSError:
                pass

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(os.path.join(self.dir, "dav"), ignore_errors=True)
        shutil.rmtree(os.path.join(self.dir, "tmp"), ignore_errors=True)


def checkTools() -> Dict[str, Optional[str]]:
    tools = {"curl": shutil.which("curl"), "wrk": shutil.which("wrk"),
             "nginx": nginxBinary()}
    if tools["wrk"] is None:
        log("wrk not found: falling back to the Python load generator"
            " (install it with: apt-get install -y wrk)")
    if tools["nginx"] is None:
        log("nginx not found: the nginx ceilings are skipped"
            " (install it with: apt-get install -y nginx-light)")
    if tools["curl"] is None:
        sys.exit("curl is needed for the upload/download benchmarks")
    return tools
