"""Local source files, confined to LOCAL_SOURCES_ROOT (symlinks resolved before the check)."""

from __future__ import annotations

from pathlib import Path

from .errors import PermanentFetchError
from .streaming import CHUNK_SIZE, FetchLimits, ProgressCallback, StreamedBytes, stream_to_temp


def resolve_local_source(path: str, root: str | None) -> Path:
    if not root:
        raise PermanentFetchError("local files are disabled: LOCAL_SOURCES_ROOT is not set")
    if "\x00" in path:
        raise PermanentFetchError("the path contains a NUL character")
    root_path = Path(root).resolve()
    candidate = Path(path)
    resolved = (candidate if candidate.is_absolute() else root_path / candidate).resolve()
    if not resolved.is_relative_to(root_path):
        raise PermanentFetchError(f"the path is outside LOCAL_SOURCES_ROOT ({root_path})")
    if not resolved.is_file():
        raise PermanentFetchError("no such file under LOCAL_SOURCES_ROOT")
    return resolved


def copy_local_source(
    path: str,
    root: str | None,
    dest_dir: Path,
    limits: FetchLimits,
    progress: ProgressCallback | None = None,
) -> tuple[Path, StreamedBytes]:
    source = resolve_local_source(path, root)
    with source.open("rb") as handle:
        streamed = stream_to_temp(
            iter(lambda: handle.read(CHUNK_SIZE), b""),
            dest_dir,
            limits,
            expected_size=source.stat().st_size,
            progress=progress,
        )
    return source, streamed
