"""
Chunked request bodies decoded without copying the image twice.

python-glanceclient sends every upload with C{Transfer-Encoding: chunked},
in 64 KiB chunks.  twisted.web's decoder appends each read to a buffer and
copies each chunk out of it again, so every byte of an image is copied
twice on the reactor thread before it is hashed, and the parse goes
through the buffer four times per chunk.  This decoder keeps twisted.web's
parsing and its errors, but hands a chunk's data on straight from the
read it arrived in: a read that is all chunk data goes on as it is, and a
chunk inside a read as one slice.  Only the short framing lines (the
chunk size, the CRLF after the data, trailers) pass through the buffer.
"""

from twisted.web import http

_FRAMING = ("CHUNK_LENGTH", "CRLF")


class ChunkedDecoder(http._ChunkedTransferDecoder):
    """
    twisted.web's chunked decoder with a fast path for chunk data; the
    framing states are its own, fed one line at a time.
    """

    def dataReceived(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            state = self.state
            if state == "BODY" and not self._buffer:
                take = min(self.length, end - pos)
                piece = data if take == end else data[pos:pos + take]
                pos += take
                self.length -= take
                if not self.length:
                    self.state = "CRLF"
                self.dataCallback(piece)
            elif state in _FRAMING:
                # A framing line ends at the next LF; buffering only up to
                # there leaves the buffer empty when the state moves on to
                # the chunk's data.
                eol = data.find(b"\n", pos)
                stop = end if eol == -1 else eol + 1
                self._buffer += data[pos:stop]
                pos = stop
                while (self._buffer and self.state in _FRAMING
                       and getattr(self, "_dataReceived_" + self.state)()):
                    pass
            else:
                # Trailers and what follows the body, or data after the end
                # (which twisted.web's decoder refuses): rare and short, so
                # twisted.web's own loop takes the rest.
                super().dataReceived(data[pos:] if pos else data)
                return
