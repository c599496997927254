"""PostgreSQL instance storage that reuses a connection instead of opening one per query.

dagster-postgres gives every process but the webserver SQLAlchemy's NullPool: each event a
run writes, each partition lookup, opens a new connection, and the server forks a backend
for it. A supplier's run opened ≈130 of them, and half its in-process time went to
connecting (docs/benchmarks.md). These storages are
dagster-postgres's own, with one engine per database and process, keeping one connection
open; more are opened on demand and closed after use, so a busy daemon never waits for the
pool (dagster-io/dagster#20325 and #33935 track a built-in setting for this). The code server
builds an instance for every sensor tick: its storages take the process's engine, and its
open connection, instead of connecting again.

A connection idle for more than a second is pinged before use (a server restart or an idle
timeout costs a reconnect, not an error); one used a moment ago is not. SQLAlchemy's
pre-ping pinged before every query: a supplier's run made ≈100 round trips for it.

They also remember, per process, what they have seen of the schema. dagster-postgres asks the
server's catalogue whether a table or column exists before many queries (nine times in one
supplier's run, and again in every instance the code server builds for a sensor tick); it
inspects the tables whenever a storage is built; the schedule storage asks for the table
names at every read and write of a sensor's state and tick. A table, a column or a data
migration marked done stays: a schema only grows, by `dagster instance migrate`. A check
that came back false is asked again, so a migration under a running process is still seen.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Self, TypedDict, TypeVar

from dagster._serdes.config_class import ConfigurableClassData
from dagster_postgres.auth import PgTokenProvider
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

POOL_SETTINGS = {
    "isolation_level": "AUTOCOMMIT",  # as dagster-postgres: every statement commits
    "pool_size": 1,  # one idle connection per process: one per run stays far below max_connections
    "max_overflow": -1,  # never wait for the pool: extra connections open and close as before
    "pool_recycle": 3600,
}
PING_AFTER_IDLE_S = 1.0  # a restart takes longer: a connection used within it is alive


class _StorageArgs(TypedDict):
    postgres_url: str
    should_autocreate_tables: bool
    token_provider: PgTokenProvider | None


# Schema facts seen true in this process: (database URL, what). Never logged (the URL may
# hold a password).
_schema_seen: set[tuple[str, str]] = set()


def _seen(postgres_url: str, what: str, check: Callable[[], bool]) -> bool:
    """`check()`, asked of the server until it is once true for this database."""
    if (postgres_url, what) in _schema_seen:
        return True
    present = check()
    if present:
        _schema_seen.add((postgres_url, what))
    return present


def _args_from_config(storage: type, config_value: Mapping[str, Any]) -> _StorageArgs:
    """The storage's arguments from its validated config, as dagster-postgres reads them; its
    tables are not looked for again once this process has built the same storage."""
    url = pg_url_from_config(config_value)
    return _StorageArgs(
        postgres_url=url,
        should_autocreate_tables=config_value.get("should_autocreate_tables", True)
        and (url, f"tables of {storage.__name__}") not in _schema_seen,
        token_provider=get_token_provider_from_config(config_value),
    )


# One engine per database and process (the pid: a forked child must not share connections).
_engines: dict[tuple[int, str], Engine] = {}


def _pooled_engine(postgres_url: str, token_provider: PgTokenProvider | None) -> Engine:
    if token_provider is not None:  # a token's engine stays the storage's own
        return _new_engine(postgres_url, token_provider)
    key = (os.getpid(), postgres_url)
    if key not in _engines:
        _engines[key] = _new_engine(postgres_url, None)
    return _engines[key]


def _new_engine(postgres_url: str, token_provider: PgTokenProvider | None) -> Engine:
    engine = create_pg_engine(postgres_url, token_provider, **POOL_SETTINGS)
    event.listen(engine, "checkin", _note_idle_since)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


def _note_idle_since(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(
    dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
) -> None:
    """A connection back from the pool after a pause answers a ping, or is replaced."""
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since <= PING_AFTER_IDLE_S:
        return
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # the pool discards it and connects again (3 attempts)
        raise exc.DisconnectionError(f"a pooled connection did not answer: {error}") from error


Storage = TypeVar(
    "Storage", bound=PostgresRunStorage | PostgresEventLogStorage | PostgresScheduleStorage
)


def _pooled(storage: Storage, args: _StorageArgs) -> Storage:
    """The storage as dagster-postgres builds it (creating its tables if needed, on its own
    NullPool engine), with a pooled engine swapped in. The config schema stays the base's."""
    storage._engine = _pooled_engine(args["postgres_url"], args["token_provider"])
    _schema_seen.add((args["postgres_url"], f"tables of {type(storage).__name__}"))
    return storage


class PooledPostgresRunStorage(PostgresRunStorage):
    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> Self:
        args = _args_from_config(cls, config_value)
        return _pooled(cls(inst_data=inst_data, **args), args)

    def has_run_stats_index_cols(self) -> bool:
        return _seen(self.postgres_url, "runs stats columns", super().has_run_stats_index_cols)

    def has_backfill_id_column(self) -> bool:
        return _seen(self.postgres_url, "runs.backfill_id", super().has_backfill_id_column)

    def has_bulk_actions_selector_cols(self) -> bool:
        return _seen(
            self.postgres_url, "bulk_actions.selector_id", super().has_bulk_actions_selector_cols
        )

    def has_bulk_action_job_name_column(self) -> bool:
        return _seen(
            self.postgres_url, "bulk_actions.job_name", super().has_bulk_action_job_name_column
        )

    def has_backfill_tags_table(self) -> bool:
        return _seen(self.postgres_url, "table backfill_tags", super().has_backfill_tags_table)

    def has_built_index(self, migration_name: str) -> bool:
        # A data migration marked done stays done (the base remembers it per storage only).
        check = partial(super().has_built_index, migration_name)
        return _seen(self.postgres_url, f"runs index {migration_name}", check)


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> Self:
        args = _args_from_config(cls, config_value)
        return _pooled(cls(inst_data=inst_data, **args), args)

    def has_table(self, table_name: str) -> bool:
        return _seen(
            self.postgres_url, f"table {table_name}", partial(super().has_table, table_name)
        )

    def _has_asset_key_col_on_connection(self, conn: Connection, column_name: str) -> bool:
        check = partial(super()._has_asset_key_col_on_connection, conn, column_name)
        return _seen(self.postgres_url, f"asset_keys.{column_name}", check)

    def has_secondary_index(self, name: str) -> bool:
        check = partial(super().has_secondary_index, name)
        return _seen(self.postgres_url, f"event log index {name}", check)


class PooledPostgresScheduleStorage(PostgresScheduleStorage):
    """Every sensor tick reads and writes its instigator state and its tick, and each of those
    asked the catalogue for the table names (instigators, secondary indexes, ...): a fifth of
    the daemon's CPU in a profile with six sensors ticking."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> Self:
        args = _args_from_config(cls, config_value)
        return _pooled(cls(inst_data=inst_data, **args), args)

    def _has_instigators_table(self, conn: Connection) -> bool:
        check = partial(super()._has_instigators_table, conn)
        return _seen(self.postgres_url, "table instigators", check)

    def _has_asset_daemon_asset_evaluations_table(self, conn: Connection) -> bool:
        check = partial(super()._has_asset_daemon_asset_evaluations_table, conn)
        return _seen(self.postgres_url, "table asset_daemon_asset_evaluations", check)

    def has_secondary_index_table(self) -> bool:
        check = super().has_secondary_index_table
        return _seen(self.postgres_url, "table secondary_indexes", check)

    def has_built_index(self, migration_name: str) -> bool:
        check = partial(super().has_built_index, migration_name)
        return _seen(self.postgres_url, f"schedule index {migration_name}", check)
