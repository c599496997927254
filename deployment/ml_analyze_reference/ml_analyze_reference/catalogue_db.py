"""The catalogue database: a job's items written into `supplier_items` as production writes them.

All the job's items in one plain INSERT transaction at the end of the job, no ON CONFLICT: a
supplier with no `suppliers` row fails the job on the foreign key, a SKU the supplier already
has fails it on `unique_supplier_sku`. A row without a SKU gets a fallback SKU salted per
server instance (production's change per process), so after a restart the same file is
stored a second time. A failed job gets a `parsing_logs` row; when that insert fails too (the
same foreign key), it is dropped, as production drops it.

A PostgreSQL catalogue's tables belong to its migrations and are never created here; a SQLite
catalogue (the embedded one of `make dev`) gets equivalent tables when they are missing, and
enforces its foreign keys.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .matching import MATCHED, REVIEW, UNMATCHED, MatchedItem
from .parsing import RawItem

log = logging.getLogger(__name__)

# The matcher's words -> the catalogue's enum `match_status`.
MATCH_STATUSES = {MATCHED: "auto_matched", REVIEW: "potential_match", UNMATCHED: "unmatched"}
_ENUM_VALUES = ("unmatched", "auto_matched", "potential_match", "verified_match")

# PostgreSQL's own types there; text in SQLite, where the courier reads and writes text too.
_UUID = String(36).with_variant(postgresql.UUID(as_uuid=False), "postgresql")
_JSON = JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_MATCH_STATUS = String(20).with_variant(
    postgresql.ENUM(*_ENUM_VALUES, name="match_status", create_type=False), "postgresql"
)


def _timestamp(name: str) -> Column[datetime]:
    return Column(name, DateTime(timezone=True), nullable=False, server_default=func.now())


metadata = MetaData()

suppliers = Table(
    "suppliers",
    metadata,
    Column("id", _UUID, primary_key=True),
    Column("name", String(255), nullable=False, index=True),
    Column("source_type", String(50), nullable=False),
    Column("contact_email", String(255)),
    Column("metadata", _JSON, nullable=False, server_default="{}"),
    _timestamp("created_at"),
    _timestamp("updated_at"),
    CheckConstraint("source_type IN ('google_sheets', 'csv', 'excel')", name="check_source_type"),
)

supplier_items = Table(
    "supplier_items",
    metadata,
    Column("id", _UUID, primary_key=True),
    Column("supplier_id", _UUID, ForeignKey("suppliers.id", ondelete="CASCADE"), nullable=False),
    Column("product_id", _UUID),  # FK to products in PostgreSQL; SQLite has no products table
    Column("supplier_sku", String(255), nullable=False),
    Column("name", String(500), nullable=False),
    Column("current_price", Numeric(10, 2), nullable=False),
    Column("characteristics", _JSON, nullable=False, server_default="{}"),
    _timestamp("last_ingested_at"),
    _timestamp("created_at"),
    _timestamp("updated_at"),
    Column("match_status", _MATCH_STATUS, nullable=False, server_default="unmatched"),
    Column("match_score", Numeric(5, 2)),
    Column("match_candidates", _JSON),
    CheckConstraint("current_price >= 0", name="check_current_price"),
    CheckConstraint(f"match_status IN {_ENUM_VALUES}", name="check_match_status"),
    CheckConstraint("match_score >= 0 AND match_score <= 100", name="check_match_score"),
    UniqueConstraint("supplier_id", "supplier_sku", name="unique_supplier_sku"),
)

parsing_logs = Table(
    "parsing_logs",
    metadata,
    Column("id", _UUID, primary_key=True),
    Column("task_id", String(255), nullable=False, index=True),
    Column("supplier_id", _UUID, ForeignKey("suppliers.id", ondelete="SET NULL"), index=True),
    Column("error_type", String(100), nullable=False),
    Column("error_message", Text, nullable=False),
    Column("row_number", Integer),
    Column("row_data", _JSON),
    _timestamp("created_at"),
)

# SQLite names neither constraint of the items insert: say what PostgreSQL says, so one
# reading fits both.
_SQLITE_ITEMS_AS_POSTGRES = {
    "FOREIGN KEY constraint failed": "ForeignKeyViolation: insert or update on table"
    ' "supplier_items" violates foreign key constraint "supplier_items_supplier_id_fkey"',
    "UNIQUE constraint failed: supplier_items.supplier_id, supplier_items.supplier_sku": (
        'UniqueViolation: duplicate key value violates unique constraint "unique_supplier_sku"'
    ),
}


class CatalogueWriteError(Exception):
    """The job's items could not be stored; the message is the database's own."""


class CatalogueDb:
    def __init__(self, url: str) -> None:
        self._url = make_url(url)
        self.is_sqlite = self._url.get_backend_name() == "sqlite"
        self._engine = create_engine(
            self._url,
            pool_pre_ping=True,
            # The courier writes the same SQLite file: wait for its locks rather than fail.
            connect_args={"timeout": 30} if self.is_sqlite else {},
        )
        if self.is_sqlite:
            event.listen(self._engine, "connect", _enforce_foreign_keys)
        self._salt = secrets.token_hex(4)  # a new one per server instance, as per process

    def create_missing_tables(self) -> None:
        """SQLite only: create the catalogue's tables that are missing."""
        if not self.is_sqlite:
            return
        if self._url.database and self._url.database != ":memory:":
            Path(self._url.database).parent.mkdir(parents=True, exist_ok=True)
        metadata.create_all(self._engine)

    def ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def close(self) -> None:
        self._engine.dispose()

    def fallback_sku(self, raw: RawItem) -> str:
        """The SKU of a row without one: stable within this instance, new after a restart."""
        digest = hashlib.sha256(f"{raw.row_number}\x1f{raw.name}".encode()).hexdigest()[:12]
        return f"AUTO-{self._salt}-{digest}"

    def insert_items(
        self, supplier_id: str, items: Sequence[MatchedItem], *, upsert: bool = False
    ) -> None:
        """All the items in one INSERT transaction; CatalogueWriteError if the database refuses.
        `upsert` (the reference's newer behaviour): a SKU the supplier already has is updated in
        place instead of failing the job, so a file can be analysed again."""
        if not items:
            return
        now = datetime.now(UTC)
        rows = [self._row(supplier_id, item, now) for item in items]
        statement: Any = insert(supplier_items)
        if upsert:
            rows = list({row["supplier_sku"]: row for row in rows}.values())  # last one wins
            dialect = postgresql if not self.is_sqlite else sqlite
            statement = dialect.insert(supplier_items)
            kept = ("id", "supplier_id", "supplier_sku", "created_at")
            statement = statement.on_conflict_do_update(
                index_elements=["supplier_id", "supplier_sku"],
                set_={c: statement.excluded[c] for c in rows[0] if c not in kept},
            )
        try:
            with self._engine.begin() as conn:
                conn.execute(statement, rows)
        except SQLAlchemyError as exc:
            message = describe(exc)
            if isinstance(exc, DBAPIError) and str(exc.orig) in _SQLITE_ITEMS_AS_POSTGRES:
                message = f"{_SQLITE_ITEMS_AS_POSTGRES[str(exc.orig)]} (SQLite: {exc.orig})"
            raise CatalogueWriteError(message) from exc

    def log_failure(self, job_id: str, supplier_id: str, error_type: str, message: str) -> None:
        """A parsing_logs row for a failed job; dropped if it cannot be stored (production)."""
        row = {
            "id": str(uuid.uuid4()),
            "task_id": job_id,
            "supplier_id": supplier_id,
            "error_type": error_type,
            "error_message": message,
            "created_at": datetime.now(UTC),
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(parsing_logs), row)
        except SQLAlchemyError as exc:
            log.warning("job %s: not logged in parsing_logs: %s", job_id, describe(exc))

    def _row(self, supplier_id: str, item: MatchedItem, now: datetime) -> dict[str, Any]:
        raw, match = item.raw, item.match
        characteristics = {
            key: value
            for key, value in (("category", raw.category), ("brand", raw.brand), ("unit", raw.unit))
            if value is not None
        }
        score = round(match.score, 2)
        candidates = [{"name": match.product, "score": score}] if match.product else None
        return {
            "id": str(uuid.uuid4()),
            "supplier_id": supplier_id,
            "supplier_sku": raw.sku or self.fallback_sku(raw),
            "name": raw.name,
            "current_price": round(item.price, 2),
            "characteristics": characteristics,
            "last_ingested_at": now,
            "created_at": now,
            "updated_at": now,
            "match_status": MATCH_STATUSES[match.status],
            "match_score": score,
            "match_candidates": candidates,
        }


def describe(exc: SQLAlchemyError) -> str:
    """The driver's message on one line, after its error class: 'UniqueViolation: duplicate …'."""
    if not isinstance(exc, DBAPIError):
        return str(exc)
    return f"{type(exc.orig).__name__}: {' '.join(str(exc.orig).split())}"


def _enforce_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
