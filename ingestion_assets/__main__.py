"""python -m ingestion_assets status: one line per supplier, from the instance at DAGSTER_HOME."""

from __future__ import annotations

import argparse

from dagster import DagsterInstance

from .status import all_statuses, render


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ingestion_assets")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="where every supplier stands (phase, file, items, errors)")
    parser.parse_args(argv)
    with DagsterInstance.get() as instance:
        print(render(all_statuses(instance)))


if __name__ == "__main__":
    main()
