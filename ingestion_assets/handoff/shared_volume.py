"""Hand a staged file over to the shared volume, with its sidecar, or reuse an identical one."""

from __future__ import annotations

import contextlib
import errno
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CourierError
from .atomic import LINK_UNSUPPORTED, atomic_copy, atomic_link, atomic_write, file_md5
from .naming import sanitize_filename
from .sidecar import SIDECAR_SUFFIX, FileMetadata


class HandOffError(CourierError):
    """The file could not be put on the shared volume; `retryable` for a full disk or an I/O
    error, which may clear."""


@dataclass(frozen=True)
class HandedOffFile:
    path: Path
    sidecar_path: Path
    metadata: FileMetadata
    reused: bool
    seconds: float


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


@dataclass(frozen=True)
class SharedVolume:
    root: Path

    def hand_off(
        self,
        staged: Path,
        metadata: FileMetadata,
        extension: str,
        staged_mtime_ns: int | None = None,
    ) -> HandedOffFile:
        """Put `staged` on the volume as `{supplier_id}_{epoch_ms}_{name}` plus its sidecar.

        On the same filesystem the file is a hard link of the staged copy (no bytes moved),
        trusted without a second MD5 pass only if the staged file is untouched since the
        download hashed it (`staged_mtime_ns`); across filesystems it is copied, fsync'ed and
        verified before it is visible: byte for byte against that untouched staged file, else
        by its own MD5.
        """
        started = time.monotonic()
        existing = self.find(metadata.supplier_id, metadata.checksum_md5)
        if existing is not None:
            return existing
        name = sanitize_filename(metadata.original_filename, extension)
        epoch_ms = time.time_ns() // 1_000_000
        while (target := self.root / f"{metadata.supplier_id}_{epoch_ms}_{name}").exists():
            epoch_ms += 1  # two hand-offs in one millisecond: never overwrite a handed-off file
        file_written = False
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                atomic_link(
                    staged,
                    target,
                    metadata.checksum_md5,
                    metadata.file_size_bytes,
                    staged_mtime_ns,
                )
            except OSError as exc:
                if exc.errno not in LINK_UNSUPPORTED:
                    raise
                atomic_copy(staged, target, metadata.checksum_md5, staged_mtime_ns)
            file_written = True
            atomic_write(sidecar_path(target), [metadata.to_json()])
        except OSError as exc:
            with contextlib.suppress(OSError):
                target.unlink(missing_ok=True)  # never a file without its sidecar
            taken_back = " (the file went in, its sidecar did not: the file was taken back)"
            raise HandOffError(
                f"cannot write to the shared folder {self.root}: {exc.strerror or exc}"
                + (taken_back if file_written else ""),
                retryable=exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO),
            ) from exc
        return HandedOffFile(
            target, sidecar_path(target), metadata, False, time.monotonic() - started
        )

    def find(
        self, supplier_id: str, md5: str, derivation: str | None = None
    ) -> HandedOffFile | None:
        """The newest intact file of this supplier with this checksum, if one is still there.
        With `derivation`: the newest intact file derived that way from the file of `md5`."""
        started = time.monotonic()
        for sidecar in sorted(self.root.glob(f"{supplier_id}_*{SIDECAR_SUFFIX}"), reverse=True):
            try:
                metadata = FileMetadata.model_validate(json.loads(sidecar.read_text("utf-8")))
            except (OSError, ValueError):
                continue
            path = sidecar.with_name(sidecar.name[: -len(SIDECAR_SUFFIX)])
            wanted = (
                metadata.derivation is None and metadata.checksum_md5 == md5
                if derivation is None
                else metadata.derivation == derivation and metadata.derived_from_md5 == md5
            )
            if (
                wanted
                and path.is_file()
                and path.stat().st_size == metadata.file_size_bytes
                and file_md5(path) == metadata.checksum_md5
            ):
                return HandedOffFile(path, sidecar, metadata, True, time.monotonic() - started)
        return None
