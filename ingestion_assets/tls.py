"""One TLS context for every HTTP client of the process (urllib3 pools, aiohttp).

Building an SSL context loads the CA bundle into it: ≈20 ms of CPU, which an HTTP client made
per download would pay once per supplier run (measured in docs/benchmarks.md). The context
holds no per-connection state, so one serves every client and thread.
"""

from __future__ import annotations

import functools
import ssl

import certifi


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Certificates verified against certifi's bundle."""
    return ssl.create_default_context(cafile=certifi.where())
