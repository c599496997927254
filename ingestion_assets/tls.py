"""One TLS context for every HTTP client of the process (urllib3 pools, aiohttp).

Building an SSL context loads the CA bundle into it: ≈15–20 ms of CPU, which an HTTP client made
per download would pay once per supplier run (measured in docs/benchmarks.md). The context
holds no per-connection state, so one serves every client and thread; it is built only when
an https URL needs it.
"""

from __future__ import annotations

import functools
import ssl
from urllib.parse import urlsplit

import certifi


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Certificates verified against certifi's bundle."""
    return ssl.create_default_context(cafile=certifi.where())


def tls_context_for(url: str) -> ssl.SSLContext | None:
    """The verifying context for an https URL; None (nothing to load) for plain http, which
    never pays for loading the CA bundle."""
    return tls_context() if urlsplit(url).scheme.lower() == "https" else None
