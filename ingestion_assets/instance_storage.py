"""PostgreSQL instance storage that reuses a connection instead of opening one per query.

dagster-postgres gives every process but the webserver SQLAlchemy's NullPool: each event a
run writes, each partition lookup, opens a new connection, and the server forks a backend
for it. A supplier's run opened ≈130 of them, and half its in-process time went to
connecting (docs/benchmarks.md). These storages are
dagster-postgres's own, with one kept-open connection per storage and process; more are
opened on demand and closed after use, so a busy daemon never waits for the pool
(dagster-io/dagster#20325 and #33935 track a built-in setting for this).
"""

from __future__ import annotations

from collections.abc import Mapping
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
from sqlalchemy.engine import Engine

POOL_SETTINGS = {
    "isolation_level": "AUTOCOMMIT",  # as dagster-postgres: every statement commits
    "pool_size": 1,  # one idle connection per storage and process: runs × 3 stays far below max_connections
    "max_overflow": -1,  # never wait for the pool: extra connections open and close as before
    "pool_recycle": 3600,
    "pool_pre_ping": True,  # a server restart or an idle timeout costs a reconnect, not an error
}


class _StorageArgs(TypedDict):
    postgres_url: str
    should_autocreate_tables: bool
    token_provider: PgTokenProvider | None


def _args_from_config(config_value: Mapping[str, Any]) -> _StorageArgs:
    """The storage's arguments from its validated config, as dagster-postgres reads them."""
    return _StorageArgs(
        postgres_url=pg_url_from_config(config_value),
        should_autocreate_tables=config_value.get("should_autocreate_tables", True),
        token_provider=get_token_provider_from_config(config_value),
    )


def _pooled_engine(postgres_url: str, token_provider: PgTokenProvider | None) -> Engine:
    return create_pg_engine(postgres_url, token_provider, **POOL_SETTINGS)


Storage = TypeVar(
    "Storage", bound=PostgresRunStorage | PostgresEventLogStorage | PostgresScheduleStorage
)


def _pooled(storage: Storage, args: _StorageArgs) -> Storage:
    """The storage as dagster-postgres builds it (creating its tables if needed, on its own
    NullPool engine), with a pooled engine swapped in. The config schema stays the base's."""
    storage._engine = _pooled_engine(args["postgres_url"], args["token_provider"])
    return storage


class PooledPostgresRunStorage(PostgresRunStorage):
    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> Self:
        args = _args_from_config(config_value)
        return _pooled(cls(inst_data=inst_data, **args), args)


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> Self:
        args = _args_from_config(config_value)
        return _pooled(cls(inst_data=inst_data, **args), args)


class PooledPostgresScheduleStorage(PostgresScheduleStorage):
    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> Self:
        args = _args_from_config(config_value)
        return _pooled(cls(inst_data=inst_data, **args), args)
