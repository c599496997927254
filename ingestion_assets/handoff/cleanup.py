"""Clean-up of the shared volume and the staging folder: expired files go, files in use stay."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..staging import PART_PREFIX
from .atomic import TEMP_PREFIX
from .sidecar import SIDECAR_SUFFIX

STALE_TEMP_SECONDS = 3600  # no hand-off takes an hour; a temp file that old was abandoned


@dataclass
class CleanupReport:
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    kept_in_use: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def _remove(self, path: Path) -> None:
        try:
            stat = path.stat()
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            self.errors.append(f"{path.name}: {exc.strerror or exc}")
            return
        self.removed.append(path.name)
        if stat.st_nlink == 1:  # a hand-off linked to its staged copy frees nothing yet
            self.bytes_freed += stat.st_size


def clean_shared_folder(
    root: Path,
    ttl_hours: float,
    in_use: Callable[[Path], bool] = lambda path: False,
    now: float | None = None,
) -> CleanupReport:
    """Remove handed-off files older than `ttl_hours` with their sidecars, and stale temp files."""
    report = CleanupReport()
    if not root.is_dir():
        return report
    now = time.time() if now is None else now
    ttl_cutoff = now - ttl_hours * 3600
    for path in sorted(root.iterdir()):
        if not path.is_file():
            continue
        age_cutoff = now - STALE_TEMP_SECONDS if _is_temp(path) else ttl_cutoff
        if path.stat().st_mtime >= age_cutoff:
            continue
        if path.name.endswith(SIDECAR_SUFFIX):
            data_file = path.with_name(path.name[: -len(SIDECAR_SUFFIX)])
            if not data_file.exists():
                report._remove(path)  # an orphan sidecar
            continue
        if in_use(path):
            report.kept_in_use.append(path.name)
            continue
        report._remove(path)
        report._remove(path.with_name(path.name + SIDECAR_SUFFIX))
    return report


def clean_staging_folder(
    downloads: Path, ttl_hours: float, now: float | None = None
) -> CleanupReport:
    """Remove staged downloads older than the TTL, but always keep each supplier's newest copy:
    it is what a retry hands off again without downloading."""
    report = CleanupReport()
    if not downloads.is_dir():
        return report
    now = time.time() if now is None else now
    for supplier_dir in sorted(p for p in downloads.iterdir() if p.is_dir()):
        files = sorted(
            (p for p in supplier_dir.iterdir() if p.is_file()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        newest = next((p for p in files if not _is_temp(p)), None)
        for path in files:
            cutoff = now - (STALE_TEMP_SECONDS if _is_temp(path) else ttl_hours * 3600)
            if path != newest and path.stat().st_mtime < cutoff:
                report._remove(path)
    return report


def _is_temp(path: Path) -> bool:
    return path.name.startswith((TEMP_PREFIX, PART_PREFIX))
