"""The courier's staging folder (DOWNLOADS_DIR): its own copy of each supplier's file, under
<downloads>/<supplier key>/. A download lands in a hidden partial file first; the clean-up
knows those by their prefix."""

from pathlib import Path

PART_PREFIX = ".part-"


def staging_dir(downloads_dir: str, supplier_key: str) -> Path:
    return Path(downloads_dir).resolve() / supplier_key
