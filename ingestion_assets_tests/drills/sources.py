"""Suppliers' files and misbehaving sources for the drills, served by the loopback server."""

from __future__ import annotations

import time
from collections import Counter

from .. import loopback
from ..dagster_helpers import master_sheet_csv

ROWS = [
    ("Дрель ударная 750 Вт", "4 990,00"),
    ("Шуруповёрт аккумуляторный 18 В", "7 450"),
    ("Молоток слесарный 500 г", "450,00"),
    ("Perforator SDS-plus 800 W", "8 900"),
]


def price_list(index: int, rows: int = 4, pad: int = 0) -> bytes:
    """A small semicolon CSV price list, different for every supplier (its own articles)."""
    lines = ["Артикул;Наименование;Цена"]
    for n in range(rows):
        name, price = ROWS[n % len(ROWS)]
        lines.append(f"S{index:04d}-{n};{name};{price}")
    body = ("\n".join(lines) + "\n").encode("utf-8")
    if pad:
        body += b"#" * pad + b"\n"
    return body


def slow_body(body: bytes, pieces: int = 4, delay: float = 0.5) -> loopback.Handler:
    """A whole file that takes pieces × delay seconds to arrive (each wait under the read timeout)."""

    def handler(req):
        req.send_response(200)
        req.send_header("Content-Type", "text/csv")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        step = max(1, len(body) // pieces)
        for start in range(0, len(body), step):
            req.wfile.write(body[start : start + step])
            req.wfile.flush()
            time.sleep(delay)

    return handler


def master_sheet(rows: list[list[str]]) -> bytes:
    return master_sheet_csv(rows)


def serve_suppliers(
    server, label: str, count: int, handler_for
) -> tuple[list[str], list[list[str]]]:
    """`count` CSV suppliers "<label> Supplier NN" on `server`, supplier i served by
    `handler_for(i)`: their partition keys and their master-sheet rows."""
    keys, rows = [], []
    for i in range(count):
        name = f"{label} Supplier {i:02d}"
        key = name.lower().replace(" ", "-")
        rows.append([name, server.route(f"/src/{key}.csv", handler_for(i)), "csv", "", ""])
        keys.append(key)
    return keys, rows


def counted(
    body: bytes, requests: Counter, key: str, content_type: str = "text/csv"
) -> loopback.Handler:
    """A whole file, each request for it counted in `requests[key]` (re-downloads show)."""
    serve = loopback.file_body(body, content_type)

    def handler(req):
        requests[key] += 1
        serve(req)

    return handler
