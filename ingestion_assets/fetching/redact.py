"""Redact credentials and tokens from URLs before they reach logs, metadata or sidecars."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_PARAM = re.compile(
    r"(token|key|secret|sig|signature|password|passwd|pwd|auth|credential|session|code)",
    re.IGNORECASE,
)
REDACTED = "REDACTED"


def redact_url(url: str) -> str:
    """`https://user:pw@host/p?token=abc&x=1` → `https://REDACTED@host/p?token=REDACTED&x=1`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if not parts.scheme or not parts.netloc:
        return url  # a local path: nothing secret in it
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = urlencode(
        [
            (name, REDACTED if _SECRET_PARAM.search(name) else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="/:",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
