"""The catalogue's tables as the courier sees them (../shared/reference/catalogue-schema.md).

Ids and enum values are read and written as text: PostgreSQL casts them, and the embedded
SQLite catalogue of `make dev` stores them as text. Tables are created only in SQLite: a
PostgreSQL catalogue belongs to its own migrations.
"""

from __future__ import annotations

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
    func,
)

metadata = MetaData()

suppliers = Table(
    "suppliers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255), nullable=False, index=True),
    Column("source_type", String(50), nullable=False),
    Column("contact_email", String(255)),
    Column("metadata", JSON, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("source_type IN ('google_sheets', 'csv', 'excel')", name="check_source_type"),
)

supplier_items = Table(
    "supplier_items",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "supplier_id", String(36), ForeignKey("suppliers.id", ondelete="CASCADE"), nullable=False
    ),
    Column("product_id", String(36)),
    Column("supplier_sku", String(255), nullable=False),
    Column("name", String(500), nullable=False),
    Column("current_price", Numeric(10, 2), nullable=False),
    Column("characteristics", JSON, nullable=False, default=dict),
    Column("last_ingested_at", DateTime(timezone=True), server_default=func.now()),
    Column("created_at", DateTime(timezone=True), server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), server_default=func.now()),
    Column("match_status", String(20), nullable=False, server_default="unmatched"),
    Column("match_score", Numeric(5, 2)),
    Column("match_candidates", JSON),
    UniqueConstraint("supplier_id", "supplier_sku", name="unique_supplier_sku"),
)

# ml-analyze's own log table (not in catalogue-schema.md: read only when it exists).
parsing_logs = Table(
    "parsing_logs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("task_id", String(255), nullable=False, index=True),
    Column("supplier_id", String(36), ForeignKey("suppliers.id", ondelete="SET NULL")),
    Column("error_type", String(100), nullable=False),
    Column("error_message", Text, nullable=False),
    Column("row_number", Integer),
    Column("row_data", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# match_status values → the three counts the courier shows. ml-analyze's own code also speaks
# of `matched` and `review`.
MATCH_GROUPS = {
    "auto_matched": "matched",
    "verified_match": "matched",
    "matched": "matched",
    "potential_match": "review",
    "review": "review",
    "unmatched": "unmatched",
}
