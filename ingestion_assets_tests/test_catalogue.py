"""The catalogue's suppliers kept in step with the master sheet, against a real PostgreSQL with
exactly the tables of catalogue-schema.md."""

from __future__ import annotations

import json
import uuid

import psycopg2
import pytest

from ingestion_assets.catalogue.store import Catalogue, CatalogueError
from ingestion_assets.registry.identity import SUPPLIER_NAMESPACE, supplier_key
from ingestion_assets.registry.models import Supplier


def sheet_supplier(
    name: str, url: str = "https://example.com/p.xlsx", fmt: str = "excel", **kw
) -> Supplier:
    key = supplier_key(name)
    return Supplier(
        key=key,
        supplier_id=kw.pop("supplier_id", str(uuid.uuid5(SUPPLIER_NAMESPACE, key))),
        name=name,
        source_url=url,
        format=fmt,
        **kw,
    )


def sql(url: str, query: str, *args):
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(query, args)
        rows = cur.fetchall() if cur.description else None
    conn.close()
    return rows


def rows_by_name(url: str) -> dict[str, tuple]:
    return {
        name: (str(id_), source_type, meta)
        for id_, name, source_type, meta in sql(
            url, "SELECT id, name, source_type, metadata FROM suppliers"
        )
    }


@pytest.fixture
def catalogue(catalogue_url):
    cat = Catalogue(catalogue_url)
    yield cat
    cat.close()


def test_first_sync_creates_every_supplier_with_its_own_id(catalogue, catalogue_url):
    sheet = [
        sheet_supplier("Alpha Tools"),
        sheet_supplier("Beta", "https://example.com/list.csv", "csv", notes="weekly"),
        sheet_supplier("Gamma", "https://example.com/files/prices.pdf", "url"),
        sheet_supplier("Delta", "https://example.com/download?id=7", "url", active=False),
    ]
    report = catalogue.sync(sheet)
    assert report.counts == {"created": 4, "updated": 0, "deactivated": 0, "unchanged": 0}
    assert report.failures == []
    rows = rows_by_name(catalogue_url)
    assert rows["Alpha Tools"][0] == sheet[0].supplier_id
    assert report.supplier_ids == {s.key: s.supplier_id for s in sheet}
    assert rows["Beta"][1] == "csv" and rows["Beta"][2]["notes"] == "weekly"
    # url sources: PDF stored as csv (as the original sync did), others as excel
    assert rows["Gamma"][1] == "csv" and rows["Gamma"][2]["source_format"] == "url"
    assert rows["Delta"][1] == "excel" and rows["Delta"][2]["is_active"] is False
    assert rows["Alpha Tools"][2]["managed_by"] == "supplier-courier"


def test_sync_is_idempotent(catalogue):
    sheet = [sheet_supplier("Alpha"), sheet_supplier("Beta")]
    catalogue.sync(sheet)
    again = catalogue.sync(sheet)
    assert again.counts == {"created": 0, "updated": 0, "deactivated": 0, "unchanged": 2}


def test_existing_row_keeps_its_id_matched_by_name_ignoring_case(catalogue, catalogue_url):
    old_id = str(uuid.uuid4())
    sql(
        catalogue_url,
        "INSERT INTO suppliers (id, name, source_type, metadata) VALUES (%s, 'ACME tools', 'csv', %s)",
        old_id,
        json.dumps({"use_ml_processing": False, "source_url": "old"}),
    )
    acme = sheet_supplier("Acme Tools")
    report = catalogue.sync([acme])
    assert report.supplier_ids == {acme.key: old_id}
    assert report.counts["updated"] == 1 and report.counts["created"] == 0
    (row,) = sql(catalogue_url, "SELECT id, name, source_type, metadata FROM suppliers")
    assert str(row[0]) == old_id and row[1] == "Acme Tools" and row[2] == "excel"
    # merged, never replaced: the admin's key stays, the courier's keys are current
    assert row[3]["use_ml_processing"] is False
    assert row[3]["source_url"] == "https://example.com/p.xlsx"
    # ensure() finds the same row for the same supplier
    assert catalogue.ensure(acme) == old_id


def test_existing_row_with_the_same_id_is_updated_not_duplicated(catalogue, catalogue_url):
    fixed = str(uuid.uuid4())
    sql(
        catalogue_url,
        "INSERT INTO suppliers (id, name, source_type) VALUES (%s, 'Old name', 'excel')",
        fixed,
    )
    report = catalogue.sync([sheet_supplier("New name", supplier_id=fixed)])
    assert report.counts["updated"] == 1
    assert rows_by_name(catalogue_url)["New name"][0] == fixed
    assert "Old name" not in rows_by_name(catalogue_url)


def test_left_or_inactive_suppliers_are_deactivated_and_strangers_untouched(
    catalogue, catalogue_url
):
    stranger = str(uuid.uuid4())
    sql(
        catalogue_url,
        "INSERT INTO suppliers (id, name, source_type, metadata) VALUES (%s, 'Manual', 'csv', '{}')",
        stranger,
    )
    alpha, beta = sheet_supplier("Alpha"), sheet_supplier("Beta")
    catalogue.sync([alpha, beta])
    report = catalogue.sync([alpha.model_copy(update={"active": False})])
    assert report.counts == {"created": 0, "updated": 0, "deactivated": 2, "unchanged": 0}
    rows = rows_by_name(catalogue_url)
    assert rows["Alpha"][2]["is_active"] is False and rows["Beta"][2]["is_active"] is False
    assert rows["Manual"][2] == {}  # never managed: not touched
    # no row is ever deleted; a deactivated row left alone stays unchanged on the next sync
    assert len(rows) == 3
    assert catalogue.sync([alpha.model_copy(update={"active": False})]).counts["unchanged"] == 1
    # back in the sheet: active again, same row
    back = catalogue.sync([alpha, beta])
    assert back.counts["updated"] == 2 and back.supplier_ids[beta.key] == beta.supplier_id


def test_a_row_the_database_refuses_is_reported_and_the_others_written(catalogue, catalogue_url):
    sql(catalogue_url, "ALTER TABLE suppliers ADD CONSTRAINT no_banned CHECK (name <> 'Banned')")
    report = catalogue.sync([sheet_supplier("Banned"), sheet_supplier("Fine")])
    assert report.counts["created"] == 1
    assert [f.supplier for f in report.failures] == ["Banned"]
    assert "no_banned" in report.failures[0].reason
    assert set(rows_by_name(catalogue_url)) == {"Fine"}


def test_ensure_creates_a_missing_supplier_once(catalogue, catalogue_url):
    inbox = sheet_supplier("Inbox Only")
    assert catalogue.ensure(inbox) == inbox.supplier_id
    assert catalogue.ensure(inbox) == inbox.supplier_id
    assert len(rows_by_name(catalogue_url)) == 1


def test_item_counts_map_the_enum(catalogue, catalogue_url):
    alpha = sheet_supplier("Alpha")
    catalogue.sync([alpha])
    for sku, status in enumerate(
        ["auto_matched", "verified_match", "potential_match", "unmatched", "unmatched"]
    ):
        sql(
            catalogue_url,
            "INSERT INTO supplier_items (supplier_id, supplier_sku, name, current_price, match_status)"
            " VALUES (%s, %s, 'item', 1.5, %s)",
            alpha.supplier_id,
            str(sku),
            status,
        )
    counts = catalogue.item_counts(alpha.supplier_id)
    assert (counts.total, counts.matched, counts.review, counts.unmatched) == (5, 2, 1, 2)


def test_log_messages_of_a_job(catalogue, catalogue_url):
    import datetime as dt

    alpha = sheet_supplier("Alpha")
    catalogue.sync([alpha])
    sql(
        catalogue_url,
        "INSERT INTO parsing_logs (task_id, supplier_id, error_type, error_message, row_number)"
        " VALUES ('job-1', %s, 'database', 'duplicate key value violates unique constraint', NULL),"
        " ('job-0', NULL, 'parsing', 'someone else', 3)",
        alpha.supplier_id,
    )
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    assert catalogue.log_messages(alpha.supplier_id, "job-1", since) == [
        "[database] duplicate key value violates unique constraint"
    ]


def test_unreachable_catalogue_is_a_retryable_error_with_the_url_but_no_password(free_port):
    cat = Catalogue(f"postgresql://courier:s3cret@127.0.0.1:{free_port}/catalogue")
    with pytest.raises(CatalogueError) as caught:
        cat.sync([sheet_supplier("Alpha")])
    assert caught.value.retryable
    assert f"127.0.0.1:{free_port}/catalogue" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_embedded_sqlite_catalogue(tmp_path):
    cat = Catalogue(f"sqlite:///{tmp_path / 'catalogue.sqlite3'}")
    alpha = sheet_supplier("Alpha")
    assert cat.sync([alpha]).counts["created"] == 1
    assert cat.sync([alpha]).counts["unchanged"] == 1
    assert cat.item_counts(alpha.supplier_id).total == 0
