from __future__ import annotations

from pydantic import BaseModel, ConfigDict

FORMATS = ("google_sheets", "csv", "excel", "url")


class Supplier(BaseModel):
    """One valid row of the master sheet. `key` is the partition key, a readable stable slug."""

    model_config = ConfigDict(frozen=True)

    key: str
    supplier_id: str
    name: str
    source_url: str
    format: str
    active: bool = True
    use_ml_processing: bool = True
    sheet_name: str | None = None
    notes: str | None = None
    row: int | None = None


class RowProblem(BaseModel):
    """A master-sheet row that was refused, and why. Shown row by row in the UI."""

    row: int
    supplier: str | None
    reason: str


class Registry(BaseModel):
    suppliers: list[Supplier]
    problems: list[RowProblem]
    columns: list[str]

    @property
    def active(self) -> list[Supplier]:
        return [s for s in self.suppliers if s.active]

    def get(self, key: str) -> Supplier | None:
        return next((s for s in self.suppliers if s.key == key), None)
