"""
curl as the client for uploads and downloads: a C client that streams the
file from disk (-T) and discards what it downloads, so it is not the
bottleneck.  Throughput is curl's own %{speed_upload} / %{speed_download}.
A sendfile client (L{sendfileUpload}) shows what curl's share of the two
cores costs an upload.
"""

import json
import os
import socket
import subprocess
import tempfile
import time
from typing import Dict, List, Optional
from urllib.parse import urlsplit

from bench.common import MiB

UPLOAD_HEADERS = {
    "x-image-meta-disk_format": "raw",
    "x-image-meta-container_format": "bare",
    "Content-Type": "application/octet-stream",
}

_W = "%{http_code} %{size_upload} %{speed_upload} %{size_download} %{speed_download} %{time_total}"


def _curlArgs(url: str, method: str, path: Optional[str], chunked: bool,
              headers: Dict[str, str], out: str) -> List[str]:
    # -T streams the file (--data-binary @file would read it all into curl's
    # memory first); "Expect:" stops curl from waiting on 100-continue.
    args = ["curl", "-s", "-S", "-o", out, "-w", _W, "-H", "Expect:", "-X", method]
    if path is not None:
        args += ["-T", path]
    if chunked:
        args += ["-H", "Transfer-Encoding: chunked"]
    for k, v in headers.items():
        args += ["-H", "%s: %s" % (k, v)]
    return args + [url]


def _parse(out: str, body: Optional[bytes]) -> Dict:
    code, sizeUp, speedUp, sizeDown, speedDown, total = out.split()
    return _withBody(dict(status=int(code), size_upload=int(float(sizeUp)),
                          upload_mib_s=float(speedUp) / MiB, size_download=int(float(sizeDown)),
                          download_mib_s=float(speedDown) / MiB, seconds=float(total)), body)


def _withBody(r: Dict, body: Optional[bytes]) -> Dict:
    """
    C{r} with the answer's body: as JSON, or its start as text.
    """
    if body:
        try:
            r["json"] = json.loads(body)
        except ValueError:
            r["text"] = body[:200].decode("latin-1")
    return r


def upload(url: str, path: str, method: str = "POST", chunked: bool = False,
           headers: Optional[Dict[str, str]] = None, timeout: float = 900) -> Dict:
    fd, out = tempfile.mkstemp(prefix="curl-")
    os.close(fd)
    try:
        p = subprocess.run(_curlArgs(url, method, path, chunked, headers or {}, out),
                           capture_output=True, text=True, timeout=timeout)
        with open(out, "rb") as f:
            body = f.read()
    finally:
        os.unlink(out)
    r = _parse(p.stdout, body)
    if p.returncode:
        r["curl_error"] = p.stderr.strip()
    return r


def startUpload(url: str, path: str, method: str = "POST", chunked: bool = False,
                headers: Optional[Dict[str, str]] = None):
    """
    Start an upload in the background; finish it with L{finishUpload}.
    """
    fd, out = tempfile.mkstemp(prefix="curl-")
    os.close(fd)
    p = subprocess.Popen(_curlArgs(url, method, path, chunked, headers or {}, out),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p, out


def finishUpload(handle, timeout: float = 900) -> Dict:
    p, out = handle
    stdout, stderr = p.communicate(timeout=timeout)
    with open(out, "rb") as f:
        body = f.read()
    os.unlink(out)
    r = _parse(stdout, body)
    if p.returncode:
        r["curl_error"] = stderr.strip()
    return r


def sendfileUpload(url: str, path: str, method: str = "POST",
                   headers: Optional[Dict[str, str]] = None, timeout: float = 900) -> Dict:
    """
    Upload C{path} with Content-Length through C{os.sendfile}: the kernel
    hands the file's cached pages to the socket, so the client spends
    almost no CPU.  On two shared cores, curl's copying competes with the
    server it measures; this client stands in for one on another machine,
    as in production.  Timed like curl's speed_upload: from connecting to
    the whole answer.
    """
    u = urlsplit(url)
    size = os.path.getsize(path)
    head = ["%s %s HTTP/1.1" % (method, u.path or "/"), "Host: %s" % u.netloc,
            "Content-Length: %d" % size, "Connection: close"]
    head += ["%s: %s" % kv for kv in (headers or {}).items()]
    t0 = time.perf_counter()
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s, \
            open(path, "rb") as f:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        s.sendfile(f)
        answer = bytearray()
        while True:
            data = s.recv(65536)
            if not data:
                break
            answer += data
    seconds = time.perf_counter() - t0
    status, _, body = bytes(answer).partition(b"\r\n\r\n")
    return _withBody(dict(status=int(status.split()[1]) if status else 0, size_upload=size,
                          upload_mib_s=size / MiB / seconds, size_download=len(body),
                          download_mib_s=0.0, seconds=seconds), body)


def download(url: str, timeout: float = 900) -> Dict:
    p = subprocess.run(_curlArgs(url, "GET", None, False, {}, "/dev/null"),
                       capture_output=True, text=True, timeout=timeout)
    r = _parse(p.stdout, None)
    if p.returncode:
        r["curl_error"] = p.stderr.strip()
    return r


def imageOf(result: Dict) -> Dict:
    return (result.get("json") or {}).get("image") or {}
