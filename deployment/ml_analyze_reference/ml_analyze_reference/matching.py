"""Matching supplier items against the product catalogue."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rapidfuzz import fuzz, process, utils

from .parsing import RawItem

AUTO_MATCH_SCORE = 90.0
REVIEW_SCORE = 70.0

MATCHED, REVIEW, UNMATCHED = "matched", "review", "unmatched"


@dataclass(frozen=True)
class Match:
    status: str  # matched | review | unmatched
    product: str | None  # catalogue name; kept for review so a person can confirm it
    score: float


@dataclass(frozen=True)
class MatchedItem:
    """A row that made it: its cleaned price and its match."""

    raw: RawItem
    price: float
    match: Match


class Catalogue:
    def __init__(self, names: list[str]) -> None:
        self.names = names
        self._choices = [_comparable(name) for name in names]

    @classmethod
    def from_csv(cls, path: str | Path | None = None) -> Catalogue:
        """Product names from a CSV with a `name` column; the built-in catalogue by default."""
        if path is None:
            text = resources.files(__package__).joinpath("data/catalogue.csv").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8-sig")
        rows = csv.DictReader(text.splitlines())
        if rows.fieldnames is None or "name" not in rows.fieldnames:
            raise ValueError(f"Catalogue {path or 'built-in'} has no 'name' column")
        return cls([row["name"].strip() for row in rows if (row["name"] or "").strip()])

    def match(self, name: str) -> Match:
        query = _comparable(name)
        best = process.extractOne(query, self._choices, scorer=fuzz.token_set_ratio, processor=None)
        if not query or best is None:
            return Match(UNMATCHED, None, 0.0)
        _, score, index = best
        if score >= AUTO_MATCH_SCORE:
            return Match(MATCHED, self.names[index], score)
        if score >= REVIEW_SCORE:
            return Match(REVIEW, self.names[index], score)
        return Match(UNMATCHED, None, score)


def _comparable(name: str) -> str:
    """Lowercased, punctuation folded to spaces, ё as е (suppliers write either)."""
    return utils.default_process(name).replace("ё", "е")
