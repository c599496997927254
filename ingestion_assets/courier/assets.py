"""raw_download and shared_file, one partition per supplier. Logic lives in fetching/ and handoff/."""

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetObservation,
    Config,
    DataVersion,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from .. import pools
from ..catalogue.assets import synced_supplier_ids
from ..catalogue.identity import with_catalogue_id
from ..catalogue.store import CatalogueError
from ..failures import failure, names_the_supplier, step_failure
from ..fetching.errors import FetchError
from ..fetching.google_sheets import XLSX_MIME
from ..fetching.redact import redact_url
from ..fetching.streaming import human_size
from ..handoff.atomic import file_md5
from ..handoff.derive import DerivationError, count_data_rows
from ..handoff.shared_volume import HandedOffFile, HandOffError, SharedVolume
from ..handoff.sidecar import FileMetadata
from ..inbox.scanner import claim
from ..partitions import suppliers
from ..registry.models import Registry, Supplier
from ..resources import (
    CatalogueResource,
    FetchResource,
    MLAnalyzeResource,
    SharedVolumeResource,
)
from .analysable import AnalysisPlan, derive, plan_analysis
from .last_download import download_metadata, last_download
from .source_retries import FETCH_ATTEMPT_TAG, source_down_observation
from .sources import UnknownSupplier, resolve_supplier

# RawDownload and SharedFile stay importable from here: stored outputs were pickled under this module.
from .stages import RawDownload, SharedFile, describe

# Rows are counted (the yardstick of "far fewer items than rows") in files up to this size.
COUNT_ROWS_UP_TO_BYTES = 10 * 1024 * 1024


def _hand_off_derived(
    volume: SharedVolume,
    original: HandedOffFile,
    plan: AnalysisPlan,
    supplier: Supplier,
    staging: Path,
) -> HandedOffFile:
    """The derived workbook beside the original, with a sidecar of its own that names the
    original and its checksum. Derived once per original: an existing one is reused."""
    meta = original.metadata
    found = volume.find(meta.supplier_id, meta.checksum_md5, plan.derivation)
    if found is not None:
        return found
    staged = staging / f".derived-{meta.checksum_md5}.xlsx"
    try:
        derive(plan, original.path, staged, supplier.sheet_name)
        stem = Path(meta.original_filename).stem or supplier.key
        derived_meta = meta.model_copy(
            update={
                "original_filename": f"{stem}.xlsx",
                "file_type": "excel",
                "mime_type": XLSX_MIME,
                "file_size_bytes": staged.stat().st_size,
                "checksum_md5": file_md5(staged),
                "derived_from_file": original.path.name,
                "derived_from_md5": meta.checksum_md5,
                "derivation": plan.derivation,
            }
        )
        return volume.hand_off(staged, derived_meta, ".xlsx")
    finally:
        staged.unlink(missing_ok=True)


class SourceConfig(Config):
    """A one-off source for this run, instead of the master sheet's (launchpad, inbox)."""

    source_url: str = Field(
        default="", description="URL or local path; empty: the master sheet's source"
    )
    format: str = Field(
        default="", description="google_sheets | csv | excel | url; empty: inferred"
    )
    use_ml_processing: bool | None = Field(
        default=None, description="empty: the master sheet's setting"
    )
    supplier_name: str = Field(default="", description="for a supplier not in the master sheet")
    full_download: bool = Field(
        default=False,
        description="download in full even if the source says the file has not changed",
    )


@asset(
    partitions_def=suppliers,
    group_name="suppliers",
    kinds={"python"},
    pool=pools.DOWNLOADS,
)
@names_the_supplier
def raw_download(
    context: AssetExecutionContext,
    config: SourceConfig,
    supplier_registry: Registry,
    fetch: FetchResource,
    catalogue: CatalogueResource,
) -> Output[RawDownload]:
    """The supplier's file, byte for byte, streamed into the courier's staging folder."""
    try:
        supplier = resolve_supplier(
            supplier_registry,
            context.partition_key,
            config.source_url,
            config.format,
            config.use_ml_processing,
            config.supplier_name,
        )
    except (UnknownSupplier, ValueError) as exc:
        raise failure(context, str(exc), retryable=False) from exc
    source = redact_url(supplier.source_url)
    try:
        with catalogue.session() as store:
            supplier, warning = with_catalogue_id(
                supplier, store, lambda: synced_supplier_ids(context.instance)
            )
    except CatalogueError as exc:
        raise step_failure(
            context, exc, f"{describe(supplier, source)}: no catalogue row, nothing fetched: {exc}"
        ) from exc
    if warning:
        context.log.warning(f"{describe(supplier, source)}: {warning}")
    context.log.info(f"{describe(supplier, source)}: fetching ({supplier.format})")

    def progress(done: int, total: int | None) -> None:
        # An observation, not only a log line: the partition and the overview show it.
        so_far = f"{human_size(done)} of {human_size(total) if total else '?'}"
        context.log_event(
            AssetObservation(
                asset_key=context.asset_key,
                partition=context.partition_key,
                description=f"Downloading: {so_far}",
                metadata={"bytes_so_far": done, **({"bytes_total": total} if total else {})},
            )
        )

    # The master sheet's source is asked whether its file changed since the last download.
    last = (
        None
        if config.source_url or config.full_download
        else last_download(context.instance, context.partition_key)
    )
    try:
        fetched = fetch.fetcher_for(supplier.source_url).fetch(
            supplier.source_url, supplier.format, fetch.staging_dir(supplier.key), progress, last
        )
    except FetchError as exc:
        message = f"{describe(supplier, source)}: {exc}"
        if exc.retryable:
            # It may heal: fetched again minutes later by the source retry sensor.
            attempt = int(context.run.tags.get(FETCH_ATTEMPT_TAG, "1"))
            retry_at = (
                time.time() + fetch.source_retry_delay_seconds * 2 ** (attempt - 1)
                if attempt < fetch.max_fetches
                else None
            )
            one_off = config.model_dump(exclude_defaults=True) if config.source_url else None
            observation = source_down_observation(
                context.partition_key, str(exc), attempt, retry_at, one_off
            )
            context.log_event(observation)
            message += f" ({(observation.description or '').split('; ', 1)[-1]})"
        raise step_failure(
            context,
            exc,
            message,
            retried_elsewhere=exc.retryable,
            metadata={"supplier": supplier.name, "source_url": source, "retryable": exc.retryable},
        ) from exc
    if fetch.is_inbox_file(supplier.source_url):
        # Staged: the handed-in file has been taken, it may leave the inbox now.
        moved = claim(Path(supplier.source_url), Path(fetch.inbox_dir))
        context.log.info(f"{supplier.key}: inbox file taken, moved to {moved}")
    downloaded_at = fetched.unchanged_since or dt.datetime.now(dt.UTC).isoformat()
    if fetched.unchanged_since:
        context.log.info(f"{supplier.key}: unchanged since {fetched.unchanged_since} (HTTP 304)")
    downloaded = RawDownload(supplier, fetched, source, downloaded_at)
    return Output(
        downloaded,
        data_version=DataVersion(fetched.md5),
        metadata={
            "supplier": supplier.name,
            "supplier_id": supplier.supplier_id,
            "source_type": f"{supplier.format} ({fetched.source_type})",
            "source_url": source,
            "original_filename": fetched.original_filename,
            "size_bytes": fetched.size,
            "size": human_size(fetched.size),
            "checksum_md5": fetched.md5,
            "file_type": fetched.kind.file_type,
            "content_type": fetched.content_type or "unknown",
            "duration_s": round(fetched.seconds, 3),
            "mb_per_s": round(fetched.mb_per_s, 2),
            "staged_copy": MetadataValue.path(str(fetched.path)),
            **download_metadata(fetched, supplier.source_url, downloaded_at),
        },
    )


@asset(
    partitions_def=suppliers,
    group_name="suppliers",
    kinds={"python"},
    check_specs=[AssetCheckSpec("checksum_matches_sidecar", asset="shared_file")],
)
@names_the_supplier
def shared_file(
    context: AssetExecutionContext,
    raw_download: RawDownload,
    shared_volume: SharedVolumeResource,
    ml_analyze: MLAnalyzeResource,
) -> Iterator[Output[SharedFile] | AssetCheckResult]:
    """The hand-off: the file on the shared volume (atomic write) with its `.meta.json` sidecar.
    The same content already handed off for this supplier is reused, not copied again."""
    supplier, fetched = raw_download.supplier, raw_download.file
    if not fetched.path.is_file():
        raise failure(
            context,
            f"{describe(supplier, raw_download.source_url)}: the downloaded copy {fetched.path} "
            "is gone (removed by the clean-up?); materialize raw_download again.",
            retryable=False,
        )
    metadata = FileMetadata(
        original_filename=fetched.original_filename,
        source_url=raw_download.source_url,
        source_type=supplier.format,
        supplier_id=supplier.supplier_id,
        supplier_name=supplier.name,
        file_type=fetched.kind.file_type,
        mime_type=fetched.kind.mime_type,
        file_size_bytes=fetched.size,
        checksum_md5=fetched.md5,
        downloaded_at=raw_download.downloaded_at,
        downloaded_by="supplier-courier",
        job_id=context.run_id,
    )
    volume = shared_volume.volume()
    try:
        handed = volume.hand_off(fetched.path, metadata, fetched.kind.extension, fetched.mtime_ns)
    except HandOffError as exc:
        raise step_failure(
            context, exc, f"{describe(supplier, raw_download.source_url)}: {exc}"
        ) from exc
    context.log.info(
        f"{supplier.key}: {'reused' if handed.reused else 'handed off'} {handed.path.name}"
    )
    written_md5 = file_md5(handed.path)
    plan = plan_analysis(
        fetched.kind.file_type,
        supplier.sheet_name,
        ml_analyze.parses(),
        ml_analyze.reads_active_sheet_only,
    )
    derived = None
    if plan.derivation:
        try:
            derived = _hand_off_derived(volume, handed, plan, supplier, fetched.path.parent)
        except DerivationError as exc:
            raise step_failure(
                context,
                exc,
                f"{describe(supplier, raw_download.source_url)}: the file was handed off, but "
                f"a form ml-analyze reads ({plan.derivation}) cannot be made from it: {exc}",
            ) from exc
        except HandOffError as exc:
            raise step_failure(
                context, exc, f"{describe(supplier, raw_download.source_url)}: {exc}"
            ) from exc
        context.log.info(f"{supplier.key}: {plan.derivation}: {derived.path.name}")
    analysed = derived or handed
    data_rows = (
        count_data_rows(analysed.path, analysed.metadata.file_type, plan.priority_sheet)
        if analysed.metadata.file_size_bytes <= COUNT_ROWS_UP_TO_BYTES
        else None
    )
    yield Output(
        SharedFile(
            supplier,
            handed,
            shared_volume.path_for_ml(analysed.path),
            str(fetched.path),
            derived=derived,
            refused=plan.refused,
            priority_sheet=plan.priority_sheet,
            data_rows=data_rows,
        ),
        data_version=DataVersion(fetched.md5),
        metadata={
            "supplier": supplier.name,
            "shared_path": MetadataValue.path(str(handed.path)),
            "sidecar": MetadataValue.path(str(handed.sidecar_path)),
            "path_for_ml_analyze": shared_volume.path_for_ml(handed.path),
            "reused_existing_file": handed.reused,
            "size_bytes": fetched.size,
            "checksum_md5": fetched.md5,
            "file_type": fetched.kind.file_type,
            "handed_off_by_run": handed.metadata.job_id,
            "duration_s": round(handed.seconds, 3),
            "for_ml_analyze": (
                f"derived: {derived.path.name} ({plan.derivation})"
                if derived
                else plan.refused or "the original file"
            ),
            **({"file_rows": data_rows} if data_rows is not None else {}),
            **({"priority_sheet": plan.priority_sheet} if plan.priority_sheet else {}),
        },
    )
    yield AssetCheckResult(
        check_name="checksum_matches_sidecar",
        passed=written_md5 == handed.metadata.checksum_md5 == fetched.md5,
        metadata={"file_md5": written_md5, "sidecar_md5": handed.metadata.checksum_md5},
    )
