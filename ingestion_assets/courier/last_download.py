"""A source's last good download, kept in raw_download's materialization metadata: where the
staged copy is, its checksum and the source's validators. The next fetch sends them back, so a
source that honours them sends no body when its file has not changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, MetadataValue

from ..fetching.fetcher import FetchedFile
from ..fetching.validators import LastDownload, Validators, source_fingerprint

RAW = AssetKey("raw_download")


def last_download(instance: DagsterInstance, partition_key: str) -> LastDownload | None:
    """From the partition's latest raw_download materialization; None if there is none, or it
    predates validators (then the fetch is a plain one)."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=RAW, asset_partitions=[partition_key]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    meta = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
    try:
        return LastDownload(
            source_fingerprint=str(meta["source_fingerprint"]),
            path=Path(str(meta["staged_copy"])),
            md5=str(meta["checksum_md5"]),
            size=int(str(meta["size_bytes"])),
            original_filename=str(meta["original_filename"]),
            content_type=None
            if meta.get("content_type") in (None, "unknown")
            else str(meta["content_type"]),
            downloaded_at=str(meta["downloaded_at"]),
            validators=Validators(
                etag=str(meta["etag"]) if meta.get("etag") else None,
                last_modified=str(meta["last_modified"]) if meta.get("last_modified") else None,
            ),
        )
    except (KeyError, TypeError, ValueError):
        return None


def download_metadata(fetched: FetchedFile, source_url: str, downloaded_at: str) -> dict[str, Any]:
    """What the next fetch needs of this one, and what the partition shows of it."""
    meta: dict[str, Any] = {
        "source_fingerprint": source_fingerprint(source_url),
        "downloaded_at": downloaded_at,
        "bytes_transferred": 0 if fetched.unchanged_since else fetched.size,
    }
    if fetched.validators.etag:
        meta["etag"] = fetched.validators.etag
    if fetched.validators.last_modified:
        meta["last_modified"] = fetched.validators.last_modified
    if fetched.unchanged_since:
        meta["unchanged_since"] = MetadataValue.text(fetched.unchanged_since)
        meta["conditional_fetch"] = (
            f"304 Not Modified ({fetched.validators.describe()}): the staged copy is the file"
        )
    return meta
