"""A re-sync costs what changed: the source's validators (ETag, Last-Modified) are sent back, and
a 304 means the last staged copy is still the file — no body, no new hand-off, no new
submission. Against real HTTP servers on loopback and a real Dagster instance."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from dagster import AssetKey, AssetRecordsFilter, instance_for_test, materialize

from ingestion_assets.fetching.fetcher import FetchedFile, SourceFetcher
from ingestion_assets.fetching.streaming import FetchLimits
from ingestion_assets.fetching.url_guard import UrlGuard
from ingestion_assets.fetching.validators import LastDownload, Validators, source_fingerprint
from ingestion_assets.ml.events import latest_ml_state

from . import loopback
from .dagster_helpers import (
    ALL_ASSETS,
    COURIER,
    courier_resources,
    master_sheet_csv,
    sync_registry,
    sync_supplier,
)
from .test_ml_pipeline import FULL, PRICE_LIST, settled, until

CSV = "Артикул;Наименование;Цена\nA-1;Дрель;4990\nA-2;Молоток;450\n".encode()
FETCHER = SourceFetcher(
    limits=FetchLimits(max_bytes=10 * 1024 * 1024), guard=UrlGuard(("127.0.0.1",))
)
LAST_MODIFIED = "Wed, 02 Dec 2026 10:00:00 GMT"


def remembered(fetched: FetchedFile, url: str) -> LastDownload:
    """What raw_download keeps of a download for the next one."""
    return LastDownload(
        source_fingerprint=source_fingerprint(url),
        path=fetched.path,
        md5=fetched.md5,
        size=fetched.size,
        original_filename=fetched.original_filename,
        content_type=fetched.content_type,
        downloaded_at="2026-12-02T10:00:00+00:00",
        validators=fetched.validators,
    )


@pytest.mark.parametrize(
    ("etag", "last_modified", "asked"),
    [
        ('"v1"', None, {"If-None-Match": '"v1"'}),
        (None, LAST_MODIFIED, {"If-Modified-Since": LAST_MODIFIED}),
        ('W/"v1"', LAST_MODIFIED, {"If-None-Match": 'W/"v1"', "If-Modified-Since": LAST_MODIFIED}),
    ],
)
def test_an_unchanged_file_is_not_sent_again(
    server, tmp_path: Path, etag, last_modified, asked
) -> None:
    source = loopback.ConditionalFile(CSV, etag=etag, last_modified=last_modified)
    url = server.route("/prices.csv", source)
    first = FETCHER.fetch(url, "csv", tmp_path)
    assert first.unchanged_since is None and first.validators == Validators(etag, last_modified)

    again = FETCHER.fetch(url, "csv", tmp_path, last=remembered(first, url))

    assert source.asked == [{}, asked]
    assert source.bytes_sent == len(CSV)  # the body once, for the first fetch only
    assert again.unchanged_since == "2026-12-02T10:00:00+00:00"
    assert (again.path, again.md5, again.size) == (first.path, first.md5, first.size)
    assert again.kind == first.kind and again.path.read_bytes() == CSV


def test_a_changed_file_is_downloaded_with_its_new_validators(server, tmp_path: Path) -> None:
    source = loopback.ConditionalFile(CSV, etag='"v1"')
    url = server.route("/prices.csv", source)
    first = FETCHER.fetch(url, "csv", tmp_path)
    changed = CSV + "A-3;Ключ;780\n".encode()
    source.change(changed, etag='"v2"')

    again = FETCHER.fetch(url, "csv", tmp_path, last=remembered(first, url))

    assert source.asked[-1] == {"If-None-Match": '"v1"'}
    assert again.unchanged_since is None
    assert again.path.read_bytes() == changed and again.validators.etag == '"v2"'


def test_a_source_that_ignores_validators_works_as_before(server, tmp_path: Path) -> None:
    source = loopback.ConditionalFile(CSV, etag='"v1"', honour=False)
    url = server.route("/prices.csv", source)
    first = FETCHER.fetch(url, "csv", tmp_path)

    again = FETCHER.fetch(url, "csv", tmp_path, last=remembered(first, url))

    assert source.asked[-1] == {"If-None-Match": '"v1"'}
    assert again.unchanged_since is None and again.md5 == first.md5
    assert source.bytes_sent == 2 * len(CSV)


@pytest.mark.parametrize("damage", ["removed", "rewritten", "truncated"])
def test_a_staged_copy_gone_or_changed_means_a_full_download(
    server, tmp_path: Path, damage: str
) -> None:
    source = loopback.ConditionalFile(CSV, etag='"v1"')
    url = server.route("/prices.csv", source)
    first = FETCHER.fetch(url, "csv", tmp_path)
    last = remembered(first, url)
    if damage == "removed":  # the clean-up took it
        first.path.unlink()
    elif damage == "rewritten":  # same size, other bytes
        first.path.write_bytes(CSV.replace(b"4990", b"9999"))
    else:
        first.path.write_bytes(CSV[:10])

    again = FETCHER.fetch(url, "csv", tmp_path, last=last)

    assert source.asked[-1] == {}  # not asked: nothing to fall back on
    assert again.unchanged_since is None and again.path.read_bytes() == CSV


def test_validators_of_another_source_are_not_sent(server, tmp_path: Path) -> None:
    old = loopback.ConditionalFile(CSV, etag=None, last_modified=LAST_MODIFIED)
    new = loopback.ConditionalFile(CSV + b"A-9;X;1\n", etag=None, last_modified=LAST_MODIFIED)
    old_url, new_url = server.route("/old.csv", old), server.route("/new.csv", new)
    first = FETCHER.fetch(old_url, "csv", tmp_path)

    moved = FETCHER.fetch(new_url, "csv", tmp_path, last=remembered(first, old_url))

    assert new.asked == [{}] and moved.unchanged_since is None


@pytest.mark.parametrize(
    "etag", ['"' + "x" * 300 + '"', '"v1"\r\nX-Injected: 1', '"v\x001"', '"вер"']
)
def test_a_validator_unfit_to_send_back_is_not_kept(etag: str) -> None:
    assert Validators.of({"etag": etag}) == Validators()


# --- through Dagster --------------------------------------------------------------------------


def materializations(instance, asset: str, key: str) -> list[dict]:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[key]), limit=10
    ).records
    return [
        {k: v.value for k, v in r.asset_materialization.metadata.items()}
        for r in reversed(records)  # oldest first
    ]


def test_a_resync_of_an_unchanged_source_transfers_nothing_and_submits_nothing(
    server, tmp_path: Path, ml_service
) -> None:
    source = loopback.ConditionalFile(PRICE_LIST, etag='"price-v1"')
    url = server.route("/alfa.xlsx", source)
    master = server.route(
        "/master.csv", loopback.file_body(master_sheet_csv([["Alfa", url, "excel", "yes", "yes"]]))
    )
    resources = courier_resources(tmp_path, master, ml_url=ml_service.url)
    ml = resources["ml_analyze"]
    with instance_for_test() as instance:
        sync_registry(instance, resources)
        assert sync_supplier(instance, resources, "alfa", selection=FULL).success
        until(instance, ml, None, settled)
        assert sync_supplier(instance, resources, "alfa", selection=FULL).success

        first, second = materializations(instance, "raw_download", "alfa")
        shared = materializations(instance, "shared_file", "alfa")
        state = latest_ml_state(instance, "alfa")[0]

    assert source.asked == [{}, {"If-None-Match": '"price-v1"'}]
    assert source.bytes_sent == len(PRICE_LIST)
    assert first["bytes_transferred"] == len(PRICE_LIST) and "unchanged_since" not in first
    assert second["bytes_transferred"] == 0
    assert second["unchanged_since"] == first["downloaded_at"]
    assert "304 Not Modified" in second["conditional_fetch"]
    assert second["checksum_md5"] == first["checksum_md5"]
    assert second["staged_copy"] == first["staged_copy"]
    assert [s["reused_existing_file"] for s in shared] == [False, True]
    assert state != "submitted"  # the second run did not submit the same file again
    with contextlib.closing(sqlite3.connect(tmp_path / "ml.sqlite3")) as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1


def test_full_download_asks_nothing_of_the_source(server, tmp_path: Path) -> None:
    source = loopback.ConditionalFile(CSV, etag='"v1"')
    url = server.route("/beta.csv", source)
    master = server.route(
        "/master.csv", loopback.file_body(master_sheet_csv([["Beta", url, "csv", "yes", "no"]]))
    )
    resources = courier_resources(tmp_path, master)
    with instance_for_test() as instance:
        sync_registry(instance, resources)
        assert sync_supplier(instance, resources, "beta").success
        config = {"ops": {"raw_download": {"config": {"full_download": True}}}}
        result = materialize(
            ALL_ASSETS,
            selection=COURIER,
            partition_key="beta",
            instance=instance,
            resources=resources,
            run_config=config,
        )
        assert result.success
        latest = materializations(instance, "raw_download", "beta")[-1]
    assert source.asked == [{}, {}]
    assert latest["bytes_transferred"] == len(CSV) and "unchanged_since" not in latest
