"""python -m ml_analyze_reference: serve the reference ml-analyze on HTTP."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from .app import create_app


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
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if args.max_concurrent_jobs < 1:
        parser.error("--max-concurrent-jobs must be at least 1")

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(args.db, args.catalogue, args.max_concurrent_jobs, args.row_delay_ms)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
