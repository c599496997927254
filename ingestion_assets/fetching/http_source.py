"""HTTP(S) downloads: streamed, size-capped, redirects followed by hand so each hop is guarded.

On urllib3, which the ml-analyze client and the Google export use already: httpx cost a
supplier run ≈0.1 s of CPU more (its import, httpcore's, a client per download).
"""

from __future__ import annotations

import codecs
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import urllib3
from urllib3 import BaseHTTPResponse
from urllib3.exceptions import LocationValueError, NewConnectionError, ProtocolError, SSLError
from urllib3.util import make_headers

from ..tls import tls_context_for
from .decoding import GZIP_ENCODINGS, gunzip_pieces
from .errors import PermanentFetchError, TransientFetchError
from .streaming import (
    CHUNK_SIZE,
    FetchLimits,
    ProgressCallback,
    StreamedBytes,
    human_size,
    stream_to_temp,
)
from .url_guard import UrlGuard
from .validators import Validators

MAX_REDIRECTS = 5
USER_AGENT = "supplier-courier/0.1 (+https://dagster.io)"
# The encodings urllib3 can decode are offered, as a browser or `curl --compressed` would.
REQUEST_HEADERS = {"User-Agent": USER_AGENT, **make_headers(accept_encoding=True)}
REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class HttpDownload:
    streamed: StreamedBytes
    final_url: str
    content_type: str | None
    filename: str | None
    validators: Validators = Validators()


@dataclass(frozen=True)
class NotModified:
    """304: the file is the one the validators describe; no body was sent."""

    validators: Validators  # the server's, when it sent new ones with the 304


def download_http(
    url: str,
    dest_dir: Path,
    limits: FetchLimits,
    guard: UrlGuard,
    progress: ProgressCallback | None = None,
    validators: Validators | None = None,
) -> HttpDownload | NotModified:
    """GET `url` into a temp file in `dest_dir`; with `validators`, a conditional GET whose 304
    is a NotModified."""
    started = time.monotonic()
    pools: dict[str, urllib3.PoolManager] = {}  # by scheme: a redirect may go to https

    def pool_for(url: str) -> urllib3.PoolManager:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in pools:
            pools[scheme] = urllib3.PoolManager(
                num_pools=2,
                timeout=urllib3.Timeout(connect=limits.connect_timeout, read=limits.read_timeout),
                retries=False,  # a failed fetch is retried by the source retry sensor, worded
                ssl_context=tls_context_for(url),
            )
        return pools[scheme]

    headers = {**REQUEST_HEADERS, **(validators.request_headers() if validators else {})}
    try:
        seen = []
        for _ in range(MAX_REDIRECTS + 1):
            guard.check(url)
            seen.append(url)
            with _worded_errors():
                response = pool_for(url).request(
                    "GET",
                    url,
                    headers=headers,
                    redirect=False,
                    preload_content=False,
                    decode_content=False,
                )
                try:
                    if response.status == 304 and validators:
                        return NotModified(Validators.of(response.headers) or validators)
                    location = response.headers.get("location")
                    if response.status in REDIRECTS and location:
                        url = urljoin(url, location)
                        if url in seen:
                            raise PermanentFetchError(f"redirect loop: {url} was already visited")
                        continue
                    _raise_for_status(response)
                    expected = _expected_size(response)
                    if expected is not None and expected > limits.max_bytes:
                        raise PermanentFetchError(
                            f"file too large: Content-Length is {human_size(expected)}, "
                            f"the limit is {human_size(limits.max_bytes)} (MAX_FILE_SIZE_MB)"
                        )
                    streamed = stream_to_temp(
                        _decoded_chunks(response),
                        dest_dir,
                        limits,
                        expected_size=expected,
                        started=started,
                        progress=progress,
                    )
                    return HttpDownload(
                        streamed,
                        url,
                        response.headers.get("content-type"),
                        filename_from_response(response.headers.get("content-disposition"), url),
                        Validators.of(response.headers),
                    )
                finally:
                    response.close()
        raise PermanentFetchError(f"too many redirects (more than {MAX_REDIRECTS})")
    finally:
        for pool in pools.values():
            pool.clear()


@contextmanager
def _worded_errors() -> Iterator[None]:
    """urllib3's exceptions as a fetch error that says what happened, transient or not."""
    try:
        yield
    except NewConnectionError as exc:  # before its base class, ConnectTimeoutError
        raise TransientFetchError(f"cannot connect: {exc}") from exc
    except (TimeoutError, urllib3.exceptions.TimeoutError) as exc:
        raise TransientFetchError(f"timed out ({type(exc).__name__})") from exc
    except SSLError as exc:
        raise TransientFetchError(f"cannot connect: {exc}") from exc
    except (LocationValueError, UnicodeError) as exc:  # e.g. a redirect to an unencodable host
        raise PermanentFetchError(f"invalid URL: {exc}") from exc
    except ProtocolError as exc:  # urllib3 wraps a reset, a short body, a bad status line
        raise TransientFetchError(
            f"connection broken before the body was complete: {_first_words(exc)}"
        ) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise TransientFetchError(f"HTTP error: {exc}") from exc


def _first_words(error: Exception) -> str:
    """urllib3's own sentence ("Connection broken: IncompleteRead(20 bytes read, 247 more
    expected)"), without the repr of the exception it wraps."""
    first = error.args[0] if error.args else None
    return first if isinstance(first, str) else str(error)


def _raise_for_status(response: BaseHTTPResponse) -> None:
    code = response.status
    if 200 <= code < 300:
        return
    reason = f"HTTP {code} {response.reason or ''}".strip()
    if code == 429 or code >= 500 or code == 408:
        raise TransientFetchError(f"the server answered {reason}")
    hint = {
        401: " (the file needs a login)",
        403: " (access denied: is the file shared?)",
        404: " (no file at this address)",
        410: " (the file was removed)",
    }.get(code, "")
    raise PermanentFetchError(f"the server answered {reason}{hint}")


def _raw_reads(response: BaseHTTPResponse, decode: bool = False) -> Iterator[bytes]:
    """The body as the network delivers it: each read returns what has arrived, so a
    slow-drip body reaches the deadline check at every read, not once per full buffer."""
    while data := response.read1(CHUNK_SIZE, decode_content=decode):
        yield data


def _decoded_chunks(response: BaseHTTPResponse) -> Iterator[bytes]:
    """The resource's bytes, as `curl --compressed -o` saves them, in bounded pieces."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if _is_identity(response):
        return _raw_reads(response)  # the raw bytes are the resource's: no decoder
    if encoding in GZIP_ENCODINGS:
        return gunzip_pieces(_raw_reads(response))
    return _raw_reads(response, decode=True)  # deflate, br, zstd: urllib3's decoders


def _is_identity(response: BaseHTTPResponse) -> bool:
    return response.headers.get("content-encoding", "identity").strip().lower() in ("identity", "")


def _expected_size(response: BaseHTTPResponse) -> int | None:
    # Content-Length counts encoded bytes; with gzip the decoded size is unknown up front.
    if not _is_identity(response):
        return None
    value = response.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


_FILENAME_STAR = re.compile(r"filename\*\s*=\s*([^']*)'[^']*'([^;]+)", re.IGNORECASE)


def filename_from_response(content_disposition: str | None, url: str) -> str | None:
    """The server's suggested name (RFC 6266, UTF-8 form preferred), else the URL's last segment."""
    if content_disposition:
        star = _FILENAME_STAR.search(content_disposition)
        if star:
            charset = star.group(1) or "utf-8"
            try:
                codecs.lookup(charset)
            except LookupError:  # a charset Python does not know: read it as UTF-8
                charset = "utf-8"
            return unquote(star.group(2).strip().strip('"'), encoding=charset)
        message = Message()
        message["content-disposition"] = content_disposition
        plain = message.get_param("filename", header="content-disposition")
        if isinstance(plain, str) and plain:
            return plain
    segment = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return segment or None
