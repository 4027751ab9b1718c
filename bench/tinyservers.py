"""
The small ceiling servers, each run as its own process:

  python -m bench.tinyservers bare PORT LOGFILE    a bare twisted.web resource
  python -m bench.tinyservers klein PORT LOGFILE   a Klein route answering JSON
  python -m bench.tinyservers md5 PORT LOGFILE     twisted.web receiving a body,
                                                   MD5 as it arrives, no temp file

Like twistd, each logs every request to LOGFILE, so the ceilings pay for the
same framework defaults glancetx does.
"""

import hashlib
import json
import sys
from io import BytesIO

from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web import resource, server

BODY = json.dumps({"image": {"id": "00000000-0000-0000-0000-000000000000",
                             "name": "bench", "status": "active"}}).encode()


class Bare(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return BODY

    render_HEAD = render_GET


class MD5Request(server.Request):
    """
    Hashes the body as it arrives instead of spooling it to a temp file.
    """

    def gotLength(self, length):
        self.md5 = hashlib.md5()
        self.received = 0
        self.content = BytesIO()

    def handleContentChunk(self, data):
        self.md5.update(data)
        self.received += len(data)


class MD5Sink(resource.Resource):
    isLeaf = True

    def render_POST(self, request):
        request.setResponseCode(201)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"checksum": request.md5.hexdigest(),
                           "size": request.received}).encode()

    render_PUT = render_POST


def kleinResource():
    from klein import Klein
    app = Klein()

    @app.route("/json", methods=["GET", "HEAD"])
    def js(request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"image": {"id": "00000000-0000-0000-0000-000000000000",
                                     "name": "bench", "status": "active"}})

    return app.resource()


def main(argv):
    kind, port, logfile = argv[1], int(argv[2]), argv[3]
    globalLogBeginner.beginLoggingTo([textFileLogObserver(open(logfile, "w"))],
                                     redirectStandardIO=False)
    if kind == "bare":
        site = server.Site(Bare())
    elif kind == "klein":
        site = server.Site(kleinResource())
    elif kind == "md5":
        site = server.Site(MD5Sink())
        site.requestFactory = MD5Request
    else:
        raise SystemExit("unknown server %r" % (kind,))
    reactor.listenTCP(port, site, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
