"""ml-analyze's answers, read liberally: unknown fields ignored, optional ones used when present."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

FINISHED_OK = ("completed", "completed_with_errors")
RUNNING = ("pending", "processing")


class Health(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str = "unknown"
    version: str | None = None

    @property
    def ready(self) -> bool:
        return self.status == "healthy"

    def accepts_work(self, when_degraded: bool = False) -> bool:
        """`degraded` is "not ready" (the production service's jobs then fail), unless the
        deployment says to submit anyway (ML_SUBMIT_WHEN_DEGRADED)."""
        return self.ready or (when_degraded and self.status == "degraded")


class Submission(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_id: str
    status: str = "pending"
    message: str | None = None


class JobStatus(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_id: str
    status: str
    progress_percentage: int = 0
    items_processed: int = 0
    items_total: int = 0
    errors: list[str] = Field(default_factory=list)
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    # Newer deployments; shown when present, never invented.
    phase: str | None = None
    successful_extractions: int | None = None
    failed_extractions: int | None = None
    duplicates_removed: int | None = None
    items_matched: int | None = None
    items_review: int | None = None
    items_unmatched: int | None = None

    @property
    def finished_ok(self) -> bool:
        return self.status in FINISHED_OK

    @property
    def running(self) -> bool:
        return self.status in RUNNING
