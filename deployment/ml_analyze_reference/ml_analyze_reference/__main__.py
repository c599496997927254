"""python -m ml_analyze_reference: serve the reference ml-analyze on HTTP."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from .app import create_app
from .profiles import PROFILES
from .validation import FILE_TYPES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ml_analyze_reference", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--db",
        default="./.data/ml-analyze-reference.sqlite3",
        help="SQLite file for jobs and items",
    )
    parser.add_argument(
        "--max-concurrent-jobs",
        type=int,
        default=2,
        help="files analysed at once; others wait as pending",
    )
    parser.add_argument(
        "--catalogue", default=None, help="CSV of products with a 'name' column (default: built-in)"
    )
    parser.add_argument(
        "--row-delay-ms", type=int, default=0, help="artificial delay per row, to watch progress"
    )
    parser.add_argument(
        "--catalogue-db",
        metavar="URL",
        default=None,
        help="SQLAlchemy URL of the catalogue database to store items in (supplier_items),"
        " e.g. postgresql://user@host/catalogue or sqlite:///catalogue.sqlite3",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="reference",
        help="'production': the deployed service's behaviours (the four options below)",
    )
    parser.add_argument(
        "--file-types",
        type=_file_types,
        default=None,
        help=f"comma-separated types whose jobs are parsed (default: {','.join(FILE_TYPES)})",
    )
    flags = {
        "--active-sheet-only": "read only a workbook's active sheet, ignore priority_sheet",
        "--terse-errors": "a failed job's errors say only 'File parsing failed'",
        "--legacy-status": "status without phase, extraction and match counts",
        "--upsert-items": "a SKU the supplier already has is updated, not a failed job",
    }
    for flag, text in flags.items():
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if args.max_concurrent_jobs < 1:
        parser.error("--max-concurrent-jobs must be at least 1")

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(
        args.db,
        args.catalogue,
        args.max_concurrent_jobs,
        args.row_delay_ms,
        catalogue_db_url=args.catalogue_db,
        profile=args.profile,
        file_types=args.file_types,
        active_sheet_only=args.active_sheet_only,
        terse_errors=args.terse_errors,
        legacy_status=args.legacy_status,
        upsert_items=args.upsert_items,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


def _file_types(value: str) -> list[str]:
    types = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [kind for kind in types if kind not in FILE_TYPES]
    if unknown or not types:
        raise argparse.ArgumentTypeError(f"choose among {','.join(FILE_TYPES)}, not {value!r}")
    return types


if __name__ == "__main__":
    main()
