"""
Tests for L{glancetx.web.chunked.ChunkedDecoder}: the same decoding and
the same errors as twisted.web's decoder, with chunk data passed on
without copies through a buffer.
"""

import random

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http

from glancetx.web.channel import GlanceChannel
from glancetx.web.chunked import _FIELD_LINE, ChunkedDecoder

#: Three chunks, one with an extension, trailers, then the next request.
ENCODED = (b"5\r\nhello\r\n"
           b"1;name=value\r\n \r\n"
           b"A\r\n0123456789\r\n"
           b"0\r\nX-Trailer: t\r\n\r\n"
           b"GET / HTTP/1.1\r\n")
DECODED = b"hello 0123456789"
REST = b"GET / HTTP/1.1\r\n"


def decode(cls, reads):
    """
    Feed C{reads} to a new C{cls} as a channel does (reads after the end
    go to the channel, not the decoder); return the data pieces, what came
    after the body (or None if it did not end) and the decoder.
    """
    pieces, rest = [], []
    decoder = cls(pieces.append, rest.append)
    for data in reads:
        if rest:
            rest.append(data)
        else:
            decoder.dataReceived(data)
    return pieces, (b"".join(rest) if rest else None), decoder


class ChunkedDecoderTests(SynchronousTestCase):
    def test_everySplit(self):
        """
        However the encoded body is split into two or three reads, the data
        and the rest are twisted.web's.
        """
        n = len(ENCODED)
        for i in range(n + 1):
            for j in range(i, n + 1):
                reads = [ENCODED[:i], ENCODED[i:j], ENCODED[j:]]
                pieces, rest, _ = decode(ChunkedDecoder, reads)
                self.assertEqual((b"".join(pieces), rest), (DECODED, REST), (i, j))
        self.assertEqual(b"".join(decode(http._ChunkedTransferDecoder, [ENCODED])[0]),
                         DECODED)

    def test_byteByByte(self):
        pieces, rest, decoder = decode(ChunkedDecoder, [bytes([b]) for b in ENCODED])
        self.assertEqual((b"".join(pieces), rest, decoder.state),
                         (DECODED, REST, "FINISHED"))

    def test_wholeReadPassedOnAsItIs(self):
        """
        A read that is all chunk data is handed on as the same object (no
        copy through the buffer), and the data of several chunks in one
        read as one piece.
        """
        data = b"x" * 1000
        pieces, _, _ = decode(ChunkedDecoder, [b"1388\r\n", data, data])
        self.assertEqual(len(pieces), 2)
        self.assertIs(pieces[0], data)
        self.assertIs(pieces[1], data)

        pieces, _, _ = decode(ChunkedDecoder, [b"3\r\nabc\r\n4\r\ndefg\r\n"])
        self.assertEqual(pieces, [b"abcdefg"])
        pieces, _, _ = decode(ChunkedDecoder, [b"3\r\nabc\r\n4\r\nde", b"fg\r\n0\r\n"])
        self.assertEqual(pieces, [b"abcde", b"fg"])

    def test_dataBeforeTheEnd(self):
        """
        The data of the read that ends the body is handed on before the
        end is announced.
        """
        events = []
        decoder = ChunkedDecoder(lambda d: events.append(("data", d)),
                                 lambda rest: events.append(("end", rest)))
        decoder.dataReceived(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nnext")
        self.assertEqual(events, [("data", b"abcde"), ("end", b"next")])

    def test_malformed(self):
        """
        Each kind of bad framing raises the error twisted.web's channel turns
        into a 400, as twisted.web's decoder does.
        """
        bad = [
            b"x\r\n",                       # not hex
            b"-5\r\nhello\r\n",             # a sign
            b"0x5\r\nhello\r\n",            # a prefix
            b"5\r\nhelloXX",                # no CRLF after the data
            b"5\r\nhello\r\r\n",
            b"5;\x00\r\nhello\r\n",         # a control character in an extension
            b"1" * 2000,                    # a size line too long
            b"5\nhello\r\n",                # LF alone ends no line
        ]
        for encoded in bad:
            for cls in (http._ChunkedTransferDecoder, ChunkedDecoder):
                self.assertRaises(http._MalformedChunkedDataError,
                                  decode, cls, [encoded, b"\r\n" * 600])

    def test_malformedTrailers(self):
        """
        A trailer section line that is not a field line is refused, however
        the reads split it: twisted.web's decoder looks only for CRLF, so
        after C{0\\r\\n\\n} it took the next pipelined request's line and
        headers for trailers, and that request went unanswered while the
        one after it was answered in its place.  Good trailers still pass.
        """
        bad = [
            b"0\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",  # LF alone ends the section
            b"0\r\nnot a field line\r\n\r\n",
            b"0\r\n\x01bad: v\r\n\r\n",
            b"0\r\nX : v\r\n\r\n",                        # space before the colon
            b"0\r\nX: a\nb\r\n\r\n",
            b"0\r\nX: a\x00\r\n\r\n",
            b"0\r\n folded: v\r\n\r\n",
        ]
        for encoded in bad:
            for i in range(len(encoded) + 1):
                self.assertRaises(http._MalformedChunkedDataError, decode, ChunkedDecoder,
                                  [b"5\r\nhello\r\n" + encoded[:i], encoded[i:]])
        good = b"5\r\nhello\r\n0\r\nX-T: a b\t\xe9\r\nY:\r\n\r\nnext"
        for i in range(len(good) + 1):
            pieces, rest, _ = decode(ChunkedDecoder, [good[:i], good[i:]])
            self.assertEqual((b"".join(pieces), rest), (b"hello", b"next"), i)

    def test_chunkNoUploadCanHave(self):
        """
        A chunk size of 17 or more hex digits (twisted.web takes any
        number) is refused at once, where the body would otherwise wait
        for bytes that never come; 16 digits are still taken.
        """
        for size in (b"f" * 17, b"f" * 20, b"1" + b"0" * 16):
            self.assertRaises(http._MalformedChunkedDataError,
                              decode, ChunkedDecoder, [size + b"\r\nhello"])
        self.assertRaises(http._MalformedChunkedDataError,
                          decode, ChunkedDecoder, [b"f" * 20 + b";ext=1\r\nhello"])
        decode(ChunkedDecoder, [b"0" * 10 + b"5;ext=1\r\nhello\r\n0\r\n\r\n"])

    def test_tinyChunksRefused(self):
        """
        A body of chunks averaging under MIN_AVERAGE_CHUNK bytes, past its
        first FREE_CHUNKS (a client holding the reactor one byte at a
        time), is refused, with or without extensions on the size lines,
        however the reads split it: the limit was per read, so the same
        body passed in four writes and failed in one.  Chunks of
        MIN_AVERAGE_CHUNK bytes pass in any number.
        """
        from glancetx.web.chunked import FREE_CHUNKS, MIN_AVERAGE_CHUNK
        for line in (b"1\r\nx\r\n", b"1;e=v\r\nx\r\n"):
            pieces, rest, _ = decode(ChunkedDecoder, [line * FREE_CHUNKS])
            self.assertEqual(b"".join(pieces), b"x" * FREE_CHUNKS)
            body = line * (2 * FREE_CHUNKS)
            for size in (len(body), len(body) // 4 + 1, 1000):
                reads = [body[i:i + size] for i in range(0, len(body), size)]
                self.assertRaises(http._MalformedChunkedDataError, decode, ChunkedDecoder, reads)
        chunk = b"%x\r\n%s\r\n" % (MIN_AVERAGE_CHUNK, b"y" * MIN_AVERAGE_CHUNK)
        pieces, rest, _ = decode(ChunkedDecoder, [chunk * 5000 + b"0\r\n\r\n"])
        self.assertEqual(len(b"".join(pieces)), 5000 * MIN_AVERAGE_CHUNK)
        self.assertEqual(rest, b"")

    def test_smallChunksOfRealClientsPass(self):
        """
        Real clients' small chunks pass: curl -T - sends each write of a
        slow pipe as a chunk (here 100 bytes each), and requests sending a
        generator over a binary image's lines one chunk per line (about
        256 bytes on average); the guard refused both.
        """
        import io
        import random
        data = random.Random(1204).randbytes(4 << 20)
        for chunks in ([data[i:i + 100] for i in range(0, len(data), 100)],
                       list(io.BytesIO(data))):
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
            pieces, rest, _ = decode(ChunkedDecoder, [body + b"0\r\n\r\n"])
            self.assertEqual(b"".join(pieces), data)
            self.assertEqual(rest, b"")

    def test_dataAfterTheEnd(self):
        decoder = ChunkedDecoder(lambda d: None, lambda rest: None)
        decoder.dataReceived(b"0\r\n\r\n")
        self.assertRaises(RuntimeError, decoder.dataReceived, b"more")

    def test_endedEarly(self):
        _, rest, decoder = decode(ChunkedDecoder, [b"5\r\nhel"])
        self.assertIsNone(rest)
        self.assertRaises(http._DataLoss, decoder.noMoreData)


def outcome(cls, reads):
    """
    What a decoder makes of C{reads}: the data and the rest, or the class
    of the error it raised.  twisted.web's decoder keeps trailer lines
    that are no header field (see L{ChunkedDecoder._dataReceived_TRAILER}):
    where it did, this decoder's outcome is the error.
    """
    try:
        pieces, rest, decoder = decode(cls, reads)
    except Exception as e:
        return type(e)
    for line in getattr(decoder, "_trailerHeaders", []):
        if b"\n" in line or not _FIELD_LINE.match(line):
            return http._MalformedChunkedDataError
    return b"".join(pieces), rest


def randomBody(rng):
    """
    A chunked body: chunks of random sizes, some with extensions, a
    terminal chunk, perhaps trailers, then the start of a next request.
    """
    out = []
    for _ in range(rng.randrange(0, 6)):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        ext = rng.choice([b"", b";a=b", b";x", b' ;q="v"'])
        out.append(b"%x%s\r\n%s\r\n" % (len(data), ext, data))
    out.append(b"0\r\n")
    out.extend(rng.choice([[], [b"X-T: 1\r\n"], [b"A: b\r\n", b"C: d\r\n"]]))
    out.append(b"\r\nGET / HTTP/1.1\r\n")
    return b"".join(out)


class DifferentialTests(SynchronousTestCase):
    def test_sameAsTwisted(self):
        """
        On random bodies, whole or with a byte changed, split at random
        points, this decoder's data and rest, or its error, are
        twisted.web's.
        """
        rng = random.Random(5)
        for _ in range(3000):
            body = bytearray(randomBody(rng))
            if rng.random() < 0.5:
                body[rng.randrange(len(body))] = rng.choice(b"0123456789abcdefxyz;\r\n \x00")
            body = bytes(body)
            cuts = sorted(rng.randrange(len(body) + 1) for _ in range(rng.randrange(0, 5)))
            reads = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)])]
            self.assertEqual(outcome(ChunkedDecoder, reads),
                             outcome(http._ChunkedTransferDecoder, reads), (body, cuts))


class ChannelUsesItTests(SynchronousTestCase):
    def test_chosenForChunkedRequests(self):
        """
        A chunked request on a L{GlanceChannel} is decoded by
        L{ChunkedDecoder}; a Content-Length one keeps twisted.web's decoder.
        """
        channel = GlanceChannel()
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX: y\r\n")
        self.assertIsInstance(channel._transferDecoder, ChunkedDecoder)

        channel = GlanceChannel()
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"PUT /x HTTP/1.1\r\nContent-Length: 3\r\nX: y\r\n")
        self.assertIsInstance(channel._transferDecoder, http._IdentityTransferDecoder)

    def test_malformedBodyIs400(self):
        channel = GlanceChannel()
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"zz\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 Bad Request"))
        self.assertTrue(transport.disconnecting)
