"""The catalogue database, through SQLAlchemy Core: PostgreSQL in production, SQLite for the
embedded catalogue of `make dev`. Every method is one short transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, create_engine, event, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from ..errors import CourierError
from ..registry.models import Supplier
from . import schema
from .sync import Action, CatalogueRow, Change, find_row, plan_sync

CONNECT_TIMEOUT_S = 5


class CatalogueError(CourierError):
    """The catalogue cannot be used; `retryable` (the default) when it is unreachable rather
    than refusing."""

    retryable = True


@dataclass(frozen=True)
class RowFailure:
    supplier: str
    reason: str


@dataclass
class SyncReport:
    counts: dict[str, int] = field(default_factory=lambda: {a.value: 0 for a in Action})
    failures: list[RowFailure] = field(default_factory=list)
    supplier_ids: dict[str, str] = field(default_factory=dict)  # partition key → row id


@dataclass(frozen=True)
class ItemCounts:
    total: int
    matched: int
    review: int
    unmatched: int


def shown_url(url: str) -> str:
    """The database URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a URL SQLAlchemy cannot parse is shown by its scheme only
        return url.split(":", 1)[0] + "://…"


def _reason(exc: BaseException) -> str:
    """The database's own first line: 'insert or update … violates check constraint …'."""
    original = getattr(exc, "orig", None) or exc
    return (str(original).strip().splitlines() or [type(original).__name__])[0]


class Catalogue:
    def __init__(self, url: str) -> None:
        self.url = url
        self.shown_url = shown_url(url)
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    def _create_engine(self) -> Engine:
        try:
            parsed = make_url(self.url)
        except Exception as exc:
            raise CatalogueError(
                f"CATALOGUE_DATABASE_URL is not a database URL ({self.shown_url})", retryable=False
            ) from exc
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed, connect_args={"timeout": 30})

            @event.listens_for(engine, "connect")
            def _foreign_keys(dbapi_connection, _record):  # type: ignore[no-untyped-def]
                dbapi_connection.execute("PRAGMA foreign_keys=ON")

            schema.metadata.create_all(engine)  # the embedded dev catalogue only
            return engine
        return create_engine(
            parsed,
            pool_pre_ping=True,
            pool_size=2,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
        )

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except CatalogueError:
            raise
        except DBAPIError as exc:
            raise CatalogueError(
                f"catalogue {self.shown_url}: cannot {doing}: {_reason(exc)}",
                # connection refused, timed out, dropped: it heals; a refusal does not
                retryable=isinstance(exc, (OperationalError, InterfaceError)),
            ) from exc
        except SQLAlchemyError as exc:
            raise CatalogueError(f"catalogue {self.shown_url}: cannot {doing}: {exc}") from exc

    # -- suppliers -----------------------------------------------------------------------------

    def _rows(self, conn: Connection) -> list[CatalogueRow]:
        s = schema.suppliers
        query = select(s.c.id, s.c.name, s.c.source_type, s.c.metadata, s.c.created_at)
        return [
            CatalogueRow(str(r.id), r.name, r.source_type, r.metadata or {}, r.created_at)
            for r in conn.execute(query)
        ]

    def _lock(self, conn: Connection) -> None:
        """Two syncs at once would both create the same supplier: one at a time."""
        if conn.dialect.name == "postgresql":
            conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtext('supplier-courier:suppliers'))")
            )

    def sync(self, sheet: Sequence[Supplier]) -> SyncReport:
        """Keep the suppliers table in step with the sheet, in one transaction. A row the
        database refuses is reported with its reason; the others are written."""
        report = SyncReport()
        with self._transaction("sync the suppliers table") as conn:
            self._lock(conn)
            plan = plan_sync(sheet, self._rows(conn))
            for change in plan.changes:
                if change.action is not Action.UNCHANGED:
                    try:
                        with conn.begin_nested():
                            self._apply(conn, change)
                    except DBAPIError as exc:
                        report.failures.append(RowFailure(change.name, _reason(exc)))
                        continue
                report.counts[change.action.value] += 1
                if change.supplier_key:
                    report.supplier_ids[change.supplier_key] = change.row_id
        return report

    def _apply(self, conn: Connection, change: Change) -> None:
        s = schema.suppliers
        values = {
            "name": change.name,
            "source_type": change.source_type,
            "metadata": change.metadata,
        }
        if change.action is Action.CREATE:
            conn.execute(s.insert().values(id=change.row_id, **values))
        else:
            conn.execute(
                s.update().where(s.c.id == change.row_id).values(updated_at=func.now(), **values)
            )

    def ensure(self, supplier: Supplier) -> str:
        """The supplier's row id, the row created first when there is none (a supplier handed
        in through the inbox or a one-off source). Does not update an existing row."""
        with self._transaction(f"find or create supplier '{supplier.name}'") as conn:
            self._lock(conn)
            row = find_row(supplier, self._rows(conn), set())
            if row is not None:
                return row.id
            plan = plan_sync([supplier], [])
            self._apply(conn, plan.changes[0])
            return supplier.supplier_id

    # -- what ml-analyze wrote -----------------------------------------------------------------

    def item_counts(self, supplier_id: str) -> ItemCounts:
        items = schema.supplier_items
        query = (
            select(items.c.match_status, func.count())
            .where(items.c.supplier_id == supplier_id)
            .group_by(items.c.match_status)
        )
        with self._transaction("count the supplier's items") as conn:
            by_status = {str(status): int(n) for status, n in conn.execute(query)}
        groups = {"matched": 0, "review": 0, "unmatched": 0}
        for status, n in by_status.items():
            groups[schema.MATCH_GROUPS.get(status, "unmatched")] += n
        return ItemCounts(total=sum(by_status.values()), **groups)

    def log_messages(
        self, supplier_id: str, job_id: str, since: dt.datetime, limit: int = 20
    ) -> list[str]:
        """ml-analyze's own log rows for this job, or for the supplier since the job began."""
        logs = schema.parsing_logs
        with self._transaction("read ml-analyze's parsing_logs") as conn:
            if not inspect(conn).has_table("parsing_logs"):
                return []
            query = (
                select(logs.c.error_type, logs.c.error_message, logs.c.row_number)
                .where(
                    (logs.c.task_id == job_id)
                    | ((logs.c.supplier_id == supplier_id) & (logs.c.created_at >= since))
                )
                .order_by(logs.c.created_at)
                .limit(limit)
            )
            return [
                f"[{r.error_type}]"
                + (f" row {r.row_number}:" if r.row_number else "")
                + f" {r.error_message}"
                for r in conn.execute(query)
            ]
