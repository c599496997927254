"""Conditional fetches: a source's validators (ETag, Last-Modified), kept with its last good
download and sent back (If-None-Match, If-Modified-Since) so that an unchanged file is not sent
again. A 304 is trusted only while the staged copy is still there with its checksum."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .streaming import CHUNK_SIZE

MAX_VALIDATOR_LENGTH = 256  # a longer (or non-printable) value from a server is not kept


def _clean(value: str | None) -> str | None:
    """A validator fit to send back in a header: printable ASCII, of a sane length."""
    if not value:
        return None
    value = value.strip()
    if not value or len(value) > MAX_VALIDATOR_LENGTH:
        return None
    if not all(" " <= ch <= "~" for ch in value):
        return None
    return value


@dataclass(frozen=True)
class Validators:
    etag: str | None = None
    last_modified: str | None = None

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Validators:
        return cls(_clean(headers.get("etag")), _clean(headers.get("last-modified")))

    def __bool__(self) -> bool:
        return bool(self.etag or self.last_modified)

    def request_headers(self) -> dict[str, str]:
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers

    def describe(self) -> str:
        parts = [f"ETag {self.etag}" if self.etag else "", self.last_modified or ""]
        return ", ".join(p for p in parts if p) or "none"


def source_fingerprint(source_url: str) -> str:
    """Which source a download came from, without keeping its URL (it may hold a token)."""
    return hashlib.sha256(source_url.encode("utf-8")).hexdigest()[:24]


@dataclass(frozen=True)
class LastDownload:
    """What a source's last good download left: the staged copy and the source's validators."""

    source_fingerprint: str
    path: Path
    md5: str
    size: int
    original_filename: str
    content_type: str | None
    downloaded_at: str
    validators: Validators

    def usable_for(self, source_url: str) -> bool:
        """Validators worth sending: the same source, and the staged copy still holds the very
        bytes they describe (the clean-up may have removed it, someone may have changed it)."""
        return (
            bool(self.validators)
            and self.source_fingerprint == source_fingerprint(source_url)
            and self.path.is_file()
            and self.path.stat().st_size == self.size
            and _md5_of(self.path) == self.md5
        )


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()
