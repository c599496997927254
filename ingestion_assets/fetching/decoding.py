"""gzip bodies inflated in bounded pieces.

An HTTP client's decoder inflates each network read whole: one 64 KB read of a gzip bomb
becomes 64 MB in memory before any size check sees it. Inflating with a bounded output per call hands the
size cap at most one piece past the limit, however well the body compresses.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from .errors import PermanentFetchError, TransientFetchError

PIECE = 1024 * 1024
GZIP_ENCODINGS = ("gzip", "x-gzip")


def gunzip_pieces(raw_chunks: Iterable[bytes], piece: int = PIECE) -> Iterator[bytes]:
    """Inflate a gzip stream, yielding at most `piece` bytes at a time. Bytes after the end
    of the gzip stream are ignored, as HTTP clients' own decoders ignore them."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    received = False
    try:
        for data in raw_chunks:
            received = received or bool(data)
            while data and not inflater.eof:
                out = inflater.decompress(data, piece)
                data = inflater.unconsumed_tail
                if out:
                    yield out
        while out := inflater.decompress(b"", piece):  # output still held by the inflater
            yield out
        if tail := inflater.flush():
            yield tail
    except zlib.error as exc:
        raise PermanentFetchError(f"the body is not valid gzip: {exc}") from exc
    # Without a Content-Length the connection's close ends the body, whole or not: only the
    # gzip trailer (CRC and length) says the stream is complete. No bytes at all: an empty file.
    if received and not inflater.eof:
        raise TransientFetchError(
            "the gzip-encoded body is incomplete: it ends before the gzip trailer (cut short?)"
        )
