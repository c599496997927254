"""What passes between the stages (raw_download → shared_file → ml_analysis_result), and how a
message names the supplier and its source."""

from dataclasses import dataclass

from ..fetching.fetcher import FetchedFile
from ..handoff.shared_volume import HandedOffFile
from ..registry.models import Supplier


@dataclass(frozen=True)
class RawDownload:
    """What raw_download hands to shared_file: the staged bytes and whose they are."""

    supplier: Supplier
    file: FetchedFile
    source_url: str  # redacted
    downloaded_at: str


@dataclass(frozen=True)
class SharedFile:
    """What the ML hand-off needs: the file on the shared volume and how ml-analyze sees it."""

    supplier: Supplier
    handed_off: HandedOffFile  # the original bytes
    ml_path: str  # the file to analyse, as ml-analyze sees it
    staged_path: str  # the courier's own copy: a retry hands it off again if the clean-up took the shared one
    derived: HandedOffFile | None = None  # a form the service reads, made from the original
    refused: str = ""  # why the deployed ml-analyze cannot be given this file at all
    priority_sheet: str | None = None
    data_rows: int | None = None  # non-empty rows of what is analysed, when counted

    @property
    def to_analyse(self) -> HandedOffFile:
        return self.derived or self.handed_off

    @property
    def derivation(self) -> str | None:
        return self.derived.metadata.derivation if self.derived else None


def describe(supplier: Supplier, source: str) -> str:
    return f"Supplier '{supplier.name}' ({supplier.key}), source {source}"
