"""Safe file names on the shared volume, whatever the supplier or their server called the file."""

from __future__ import annotations

import re
import unicodedata

MAX_NAME_BYTES = (
    120  # the whole name, with its `{uuid}_{epoch_ms}_` prefix and `.meta.json`, stays < 255
)
_UNSAFE = re.compile(r"[^\w.()+-]+")


def display_safe(text: str) -> str:
    """Text that shows as what it is: no control, format (right-to-left override, zero-width)
    or unassigned characters; line breaks and tabs become spaces."""
    kept = "".join(
        " " if ch in "\t\n\r" else ch
        for ch in text
        if ch in "\t\n\r" or unicodedata.category(ch)[0] != "C"
    )
    return unicodedata.normalize("NFC", kept)


def sanitize_filename(raw: str, extension: str) -> str:
    """Keep letters of any script, digits and `._-()+`; no path, no control characters.

    The result has no directory part, does not start with a dot, fits in MAX_NAME_BYTES
    of UTF-8 and ends with `extension` (the type the bytes really are).
    """
    # Control and format characters go before NFC: removing one (a zero-width space between
    # two jamo) may join what NFC composes, and a second pass would then change the name.
    name = "".join(ch for ch in raw or "" if unicodedata.category(ch)[0] != "C")
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name).strip("._ ")
    stem = name[: -len(extension)] if name.lower().endswith(extension) else name
    stem = stem.rstrip("._ ") or "price-list"
    while len((stem + extension).encode("utf-8")) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return stem.rstrip("._ ") + extension
