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

from dagster._core.storage.config import pg_config
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

POOL_SETTINGS = {
    "isolation_level": "AUTOCOMMIT",  # as dagster-postgres: every statement commits
    "pool_size": 1,  # one idle connection per storage and process: runs × 3 stays far below max_connections
    "max_overflow": -1,  # never wait for the pool: extra connections open and close as before
    "pool_recycle": 3600,
    "pool_pre_ping": True,  # a server restart or an idle timeout costs a reconnect, not an error
}


class _Pooled:
    """Mixin: build the storage as dagster-postgres does, then swap in a pooled engine."""

    postgres_url: str
    _token_provider: object

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)  # creates the tables if needed, on its NullPool engine
        self._engine = create_pg_engine(self.postgres_url, self._token_provider, **POOL_SETTINGS)

    @classmethod
    def config_type(cls):
        return pg_config()

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


class PooledPostgresRunStorage(_Pooled, PostgresRunStorage):
    pass


class PooledPostgresEventLogStorage(_Pooled, PostgresEventLogStorage):
    pass


class PooledPostgresScheduleStorage(_Pooled, PostgresScheduleStorage):
    pass
