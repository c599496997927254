"""Tables in asset metadata, rendered by the Dagster UI as Markdown."""

from __future__ import annotations

from collections.abc import Sequence


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]], width: int = 120) -> str:
    def cell(value: object) -> str:
        text = str(value if value is not None else "")
        return text.replace("|", "\\|").replace("\n", " ")[:width]

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
