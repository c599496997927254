"""Local source files: only under LOCAL_SOURCES_ROOT, copied byte for byte."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ingestion_assets.fetching.errors import PermanentFetchError
from ingestion_assets.fetching.fetcher import SourceFetcher, is_local_path
from ingestion_assets.fetching.local_files import resolve_local_source
from ingestion_assets.fetching.streaming import FetchLimits
from ingestion_assets.fetching.url_guard import UrlGuard

CSV = "Артикул;Цена\r\nА-1;10,5\r\n".encode("cp1251")


@pytest.fixture
def root(fetcher) -> Path:
    return Path(fetcher.local_sources_root)


def entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


def test_is_local_path():
    assert is_local_path("/data/prices.csv")
    assert is_local_path("prices/май.csv")
    assert is_local_path("C:\\prices\\a.csv")  # a drive letter is not a scheme
    assert not is_local_path("file:///data/prices.csv")
    assert not is_local_path("http://example.com/a.csv")


def test_absolute_path_under_the_root_is_copied_byte_for_byte(
    fetcher, root, staging, progress_every_chunk
):
    source = root / "supplier-a" / "прайс.csv"
    source.parent.mkdir()
    source.write_bytes(CSV)
    calls = []

    fetched = fetcher.fetch(str(source), "csv", staging, lambda *a: calls.append(a))

    assert fetched.path.read_bytes() == CSV
    assert fetched.md5 == hashlib.md5(CSV).hexdigest()
    assert fetched.source_type == "local"
    assert fetched.original_filename == "прайс.csv"
    assert fetched.path.parent == staging
    assert source.read_bytes() == CSV  # copied, not moved
    assert entries(staging) == [fetched.path.name]
    assert calls[-1] == (len(CSV), len(CSV))


def test_relative_path_is_resolved_against_the_root(fetcher, root, staging):
    (root / "sub").mkdir()
    (root / "sub" / "prices.csv").write_bytes(CSV)

    fetched = fetcher.fetch("sub/prices.csv", "csv", staging)

    assert fetched.path.read_bytes() == CSV
    assert resolve_local_source("sub/prices.csv", str(root)) == (root / "sub/prices.csv").resolve()


def test_a_symlink_inside_the_root_pointing_inside_is_fine(fetcher, root, staging):
    (root / "real.csv").write_bytes(CSV)
    (root / "link.csv").symlink_to(root / "real.csv")

    assert fetcher.fetch("link.csv", "csv", staging).path.read_bytes() == CSV


@pytest.mark.parametrize(
    "path_of",
    [
        lambda root, outside: "../outside/secret.csv",
        lambda root, outside: "sub/../../outside/secret.csv",
        lambda root, outside: str(outside / "secret.csv"),
        lambda root, outside: str(root) + "/../outside/secret.csv",
        lambda root, outside: "link-out.csv",
        lambda root, outside: "link-dir/secret.csv",
        lambda root, outside: "/etc/passwd",
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "absolute",
        "root-then-dotdot",
        "symlink",
        "symlinked-dir",
        "etc-passwd",
    ],
)
def test_paths_escaping_the_root_are_refused(fetcher, root, staging, tmp_path, path_of):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_bytes(b"secret,1\n")
    (root / "sub").mkdir()
    (root / "link-out.csv").symlink_to(outside / "secret.csv")
    (root / "link-dir").symlink_to(outside, target_is_directory=True)

    with pytest.raises(PermanentFetchError) as caught:
        fetcher.fetch(path_of(root, outside), "csv", staging)

    assert "outside LOCAL_SOURCES_ROOT" in str(caught.value)
    assert str(root.resolve()) in str(caught.value)
    assert entries(staging) == []


def test_the_root_itself_is_not_a_file(fetcher, root, staging):
    with pytest.raises(PermanentFetchError, match="no such file under LOCAL_SOURCES_ROOT"):
        fetcher.fetch(str(root), "csv", staging)


def test_a_sibling_folder_sharing_the_roots_prefix_is_outside(tmp_path, staging):
    """`/x/sources-evil` starts with the text `/x/sources` but is not under it."""
    root = tmp_path / "sources"
    root.mkdir()
    evil = tmp_path / "sources-evil"
    evil.mkdir()
    (evil / "a.csv").write_bytes(CSV)
    fetcher = SourceFetcher(FetchLimits(max_bytes=1024), UrlGuard(), local_sources_root=str(root))

    with pytest.raises(PermanentFetchError, match="outside LOCAL_SOURCES_ROOT"):
        fetcher.fetch(str(evil / "a.csv"), "csv", staging)


def test_nul_in_the_path_is_refused(fetcher, root, staging):
    (root / "prices.csv").write_bytes(CSV)

    with pytest.raises(PermanentFetchError, match="NUL character"):
        fetcher.fetch("prices.csv\x00.txt", "csv", staging)
    assert entries(staging) == []


def test_a_missing_file_is_refused(fetcher, staging):
    with pytest.raises(PermanentFetchError, match="no such file under LOCAL_SOURCES_ROOT"):
        fetcher.fetch("nope.csv", "csv", staging)


@pytest.mark.parametrize("root_value", [None, ""])
def test_local_files_are_disabled_without_a_root(tmp_path, staging, root_value):
    source = tmp_path / "prices.csv"
    source.write_bytes(CSV)
    fetcher = SourceFetcher(FetchLimits(max_bytes=1024), UrlGuard(), local_sources_root=root_value)

    with pytest.raises(PermanentFetchError, match="LOCAL_SOURCES_ROOT is not set"):
        fetcher.fetch(str(source), "csv", staging)
    assert entries(staging) == []


def test_file_urls_are_not_a_way_around_the_root(fetcher, root, staging):
    (root / "prices.csv").write_bytes(CSV)

    with pytest.raises(PermanentFetchError, match="'file://'"):
        fetcher.fetch(f"file://{root}/prices.csv", "csv", staging)


def test_a_local_path_for_format_url_is_not_read(fetcher, root, staging):
    """Only csv/excel rows may name local files; a `url` row must be a URL."""
    (root / "prices.csv").write_bytes(CSV)

    with pytest.raises(PermanentFetchError, match="no scheme"):
        fetcher.fetch(str(root / "prices.csv"), "url", staging)


def test_a_local_file_over_the_cap_is_refused(root, staging):
    (root / "big.csv").write_bytes(b"a,b\n" * 1000)
    fetcher = SourceFetcher(FetchLimits(max_bytes=1000), UrlGuard(), local_sources_root=str(root))

    with pytest.raises(PermanentFetchError, match="file too large"):
        fetcher.fetch("big.csv", "csv", staging)
    assert entries(staging) == []


def test_a_local_empty_file_and_wrong_content_are_refused(fetcher, root, staging):
    (root / "empty.csv").write_bytes(b"")
    (root / "page.xlsx").write_bytes(b"<html><body>not a workbook</body></html>")

    with pytest.raises(PermanentFetchError, match="empty"):
        fetcher.fetch("empty.csv", "csv", staging)
    with pytest.raises(PermanentFetchError, match="HTML page"):
        fetcher.fetch("page.xlsx", "excel", staging)
    assert entries(staging) == []
