"""python -m ingestion_assets status | set-pool-limits, on the instance at DAGSTER_HOME."""

from __future__ import annotations

import argparse

from dagster import DagsterInstance

from .pools import set_pool_limits
from .status import all_statuses, render


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ingestion_assets")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="where every supplier stands (phase, file, items, errors)")
    commands.add_parser(
        "set-pool-limits",
        help="set the concurrency pools' limits (ML_ANALYZE_POOL_LIMIT, DOWNLOAD_POOL_LIMIT)",
    )
    args = parser.parse_args(argv)
    with DagsterInstance.get() as instance:
        if args.command == "status":
            print(render(all_statuses(instance)))
        else:
            for pool, limit in set_pool_limits(instance).items():
                print(f"pool {pool}: {limit}")


if __name__ == "__main__":
    main()
