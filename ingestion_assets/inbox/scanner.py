"""Finding handed-in files that are complete; the run that has fetched one moves it aside.

A file counts as complete when its size and modification time were the same one scan
earlier and it is at least MIN_AGE_S old: a copy still being written keeps changing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..registry.identity import supplier_key

PROCESSED = ".processed"
MIN_AGE_S = 2.0
# Names that editors and downloaders give to files still being written.
_PARTIAL_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".download", ".swp")


@dataclass(frozen=True)
class InboxFile:
    key: str
    path: Path
    size: int
    mtime: float

    @property
    def signature(self) -> list[float]:
        return [self.size, self.mtime]


def scan(inbox: Path) -> tuple[list[InboxFile], list[str]]:
    """Every candidate file, and the folder names refused (not a supplier key)."""
    files: list[InboxFile] = []
    refused: list[str] = []
    if not inbox.is_dir():
        return files, refused
    for folder in sorted(p for p in inbox.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if supplier_key(folder.name) != folder.name:
            refused.append(folder.name)
            continue
        for path in sorted(folder.iterdir()):
            name = path.name
            if (
                not path.is_file()
                or name.startswith((".", "~$"))
                or name.lower().endswith(_PARTIAL_SUFFIXES)
            ):
                continue
            stat = path.stat()
            files.append(InboxFile(folder.name, path, stat.st_size, stat.st_mtime))
    return files, refused


def ready(
    files: list[InboxFile], seen_before: dict[str, list[float]], now: float | None = None
) -> list[InboxFile]:
    """Files unchanged since the previous scan and old enough: their writer is done."""
    now = time.time() if now is None else now
    return [
        f
        for f in files
        if seen_before.get(str(f.path)) == f.signature and now - f.mtime >= MIN_AGE_S and f.size > 0
    ]


def run_key(file: InboxFile) -> str:
    """One run per version of a handed-in file: the same file asked for again (a tick that was
    not committed) is the same run; the file dropped again (new size or time) is a new one."""
    return f"inbox-{file.key}-{file.path.name}-{file.size}-{int(file.mtime * 1000)}"


def in_inbox(source: str, inbox: Path) -> bool:
    path = Path(source)
    return path.is_absolute() and path.resolve().is_relative_to(inbox.resolve())


def claim(path: Path, inbox: Path) -> Path:
    """Move a fetched file to <inbox>/.processed/<key>/<epoch_ms>_<name> (atomic, same
    filesystem). Done by the run once the file is staged: until then it stays where a later
    tick or a retry finds it."""
    target_dir = inbox / PROCESSED / path.parent.name
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{time.time_ns() // 1_000_000}_{path.name}"
    os.replace(path, target)
    return target


def format_for(path: Path) -> str:
    return "csv" if path.suffix.lower() in (".csv", ".txt") else "excel"
