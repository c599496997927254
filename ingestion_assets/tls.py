"""One TLS context for every httpx client of the process.

httpx builds a new SSL context, and loads the CA bundle into it, for each client it creates:
≈20 ms of CPU, once per supplier run (measured in docs/benchmarks.md). The context holds no
per-connection state, so one serves every client and thread.
"""

from __future__ import annotations

import functools
import ssl

import certifi


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Certificates verified against certifi's bundle, as httpx does by default."""
    return ssl.create_default_context(cafile=certifi.where())
