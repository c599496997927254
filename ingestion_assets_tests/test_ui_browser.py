"""Real-browser check (issue 4): the product started as `make dev` starts it (demo data, the static
server, the reference ml-analyze, `dagster dev` with its daemon), driven in headless Chromium with
Playwright as a data engineer would: the asset graph shows raw_download → shared_file →
ml_analysis_result, and one supplier partition materialized from the UI goes all the way to a
completed ml_analysis_result.

Chromium comes from the system's packages (/usr/bin/chromium; `.ci/run` installs it). Screenshots of
every step are kept in test-artifacts/ui/ (a failing step gets a *-FAILED.png), with the product's
logs in test-artifacts/ui/logs/.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from .conftest import needs
from .product import REPO, Product

ARTIFACTS = REPO / "test-artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PARTITION = "beta-hardware"  # a demo supplier: a local CSV in cp1251
PIPELINE_EDGES = [("raw_download", "shared_file"), ("shared_file", "ml_analysis_result")]
ASSETS = ["supplier_registry", "raw_download", "shared_file", "ml_analysis_result"]
UI_TIMEOUT_MS = 30_000
RUN_TIMEOUT_S = 120
COMPLETION_TIMEOUT_S = 180

pytestmark = pytest.mark.timeout(480)

# The edges drawn in an asset graph, as [from, to] asset names: each arrow (an SVG path with an
# arrowhead) is matched to the nodes its two ends touch. Works whichever way the graph is laid out.
EDGES_JS = """
(names) => {
  const boxes = [];
  for (const node of document.querySelectorAll("svg foreignObject")) {
    const text = node.textContent || "";
    const name = names.filter((n) => text.includes(n)).sort((a, b) => b.length - a.length)[0];
    if (!name || node.classList.contains("group")) continue;
    boxes.push({name, svg: node.ownerSVGElement, x: +node.getAttribute("x"),
                y: +node.getAttribute("y"), w: +node.getAttribute("width"),
                h: +node.getAttribute("height")});
  }
  const gap = (b, x, y) => Math.hypot(Math.max(b.x - x, 0, x - b.x - b.w),
                                      Math.max(b.y - y, 0, y - b.y - b.h));
  const touching = (svg, x, y) => {
    let best = null, bestGap = 40;
    for (const b of boxes) {
      if (b.svg === svg && gap(b, x, y) < bestGap) { best = b.name; bestGap = gap(b, x, y); }
    }
    return best;
  };
  const edges = [];
  for (const path of document.querySelectorAll("svg path[marker-end]")) {
    const n = (path.getAttribute("d") || "").match(/-?\\d+(\\.\\d+)?/g);
    if (!n || n.length < 4) continue;
    edges.push([touching(path.ownerSVGElement, +n[0], +n[1]),
                touching(path.ownerSVGElement, +n[n.length - 2], +n[n.length - 1])]);
  }
  return edges;
}
"""

LATEST_ANALYSIS = """
query ($partition: String!) {
  assetNodeOrError(assetKey: {path: ["ml_analysis_result"]}) {
    ... on AssetNode {
      partitionKeys
      assetMaterializations(partitions: [$partition], limit: 1) { runId timestamp }
    }
  }
  runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED]}) {
    ... on Runs { results { runId } }
  }
}
"""


class Shots:
    """Numbered screenshots in test-artifacts/ui/, named after the test and the step."""

    count = 0

    def __init__(self, page, test: str) -> None:
        self.page, self.test = page, test.removeprefix("test_")

    def __call__(self, step: str) -> None:
        Shots.count += 1
        path = ARTIFACTS / f"{Shots.count:02d}-{self.test}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True, animations="disabled")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        needs(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        needs("the playwright package is not installed (pip install -e '.[test]')")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def product(browser, tmp_path_factory):
    running = Product(tmp_path_factory.mktemp("product"), row_delay_ms=20)
    try:
        running.start()
        # The "join the community" pop-up, shown once per instance, would cover the first page.
        running.graphql("mutation { setNuxSeen }")
        yield running
    finally:
        running.stop()
        running.copy_logs(ARTIFACTS / "logs")


@pytest.fixture
def shot(browser, product, request):
    """A fresh page on the UI; its screenshots; a *-FAILED.png when the test fails."""
    context = browser.new_context(base_url=product.ui_url, viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    # In case the pop-up shows up anyway: dismiss it before any action it would block.
    page.add_locator_handler(
        page.get_by_text("Join the Dagster community"),
        lambda: page.get_by_role("button", name="Skip").click(),
    )
    shots = Shots(page, request.node.name)
    failed_before = request.session.testsfailed
    yield shots
    if request.session.testsfailed > failed_before:
        shots("FAILED")
    context.close()


def test_asset_graph_shows_the_pipeline(shot):
    from playwright.sync_api import expect

    page = shot.page

    # Global asset lineage: the groups are collapsed; unfold the suppliers group.
    page.goto("/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    group = page.locator("svg foreignObject").filter(has_text=re.compile(r"^suppliers"))
    group.get_by_role("img", name="unfold_more").click()
    for name in ("raw_download", "shared_file", "ml_analysis_result"):
        expect(page.locator("svg foreignObject").filter(has_text=name).first).to_be_visible()
    assert_edges_drawn(page, PIPELINE_EDGES)
    shot("global-lineage")

    # The suppliers group's own graph shows the whole chain, the master sheet's registry first.
    page.goto("/locations/ingestion_assets/asset-groups/suppliers")
    assert_edges_drawn(page, [("supplier_registry", "raw_download"), *PIPELINE_EDGES])
    shot("suppliers-graph")

    # Each asset's page lists its upstream and downstream assets.
    for asset, upstream, downstream in (
        ("raw_download", "supplier_registry", "shared_file"),
        ("shared_file", "raw_download", "ml_analysis_result"),
        ("ml_analysis_result", "shared_file", None),
    ):
        page.goto(f"/assets/{asset}")
        for title, neighbour in (("Upstream assets", upstream), ("Downstream assets", downstream)):
            listing = page.get_by_text(title, exact=True).locator("xpath=following-sibling::*[1]")
            if neighbour:
                expect(listing.locator(f'a[href="/assets/{neighbour}"]')).to_be_visible()
        shot(f"{asset}-lineage")


# Where each demo supplier must stand on the overview, and words its row must show.
OVERVIEW_EXPECTED = {
    "epsilon-moved": ("failed", "HTTP 404"),  # a source that is gone
    "zeta-wholesale": ("analyzing", "%"),  # a big file, analysed slowly
    "alfa-instrument": ("complete", ""),
    "delta-paused": ("inactive", "marked inactive in the master sheet"),
}
OVERVIEW_QUERY = """
query {
  assetNodeOrError(assetKey: {path: ["supplier_overview"]}) {
    ... on AssetNode {
      assetMaterializations(limit: 1) {
        metadataEntries { label ... on MarkdownMetadataEntry { mdStr } }
      }
    }
  }
}
"""


def overview_rows(product: Product) -> dict[str, str]:
    """Each supplier key's row (Markdown) in the latest overview the sensor reported."""
    node = product.graphql(OVERVIEW_QUERY)["assetNodeOrError"]
    found = node.get("assetMaterializations") or []
    entries = found[0]["metadataEntries"] if found else []
    table = next((e["mdStr"] for e in entries if e["label"] == "suppliers, with links"), "")
    rows = {}
    for line in table.splitlines()[2:]:
        key = re.search(r"`([^`]+)`", line)
        if key:
            rows[key.group(1)] = line
    return rows


def shows_expected(rows: dict[str, str]) -> bool:
    return all(
        f"**{phase}" in rows.get(key, "") and words in rows.get(key, "")
        for key, (phase, words) in OVERVIEW_EXPECTED.items()
    )


def test_the_overview_shows_every_supplier_where_it_stands(shot, product):
    """One page, every supplier: failing, analysing, complete, inactive, each shown as such."""
    from playwright.sync_api import expect

    page = shot.page
    deadline = time.monotonic() + COMPLETION_TIMEOUT_S
    while True:
        rows = overview_rows(product)
        if shows_expected(rows):
            break
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the overview never showed every expected state: {rows}\n{product.log_tail()}"
            )
        time.sleep(2)

    # The overview asset's page shows the table in place.
    page.goto("/assets/supplier_overview")
    table = page.locator("td table").filter(has_text="last change (UTC)")  # in the metadata
    expect(table).to_be_visible()
    for key, (phase, words) in OVERVIEW_EXPECTED.items():
        row = table.get_by_role("row").filter(has_text=f"({key})")
        expect(row).to_contain_text(phase)
        expect(row).to_contain_text(words)
    shot("overview")

    # The same table with links, wide, in a dialog: each supplier to its partition, each run
    # to its page.
    page.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog").filter(has_text="suppliers, with links")
    links = dialog.locator("table")
    expect(links).to_be_visible()
    for key, (phase, words) in OVERVIEW_EXPECTED.items():
        row = links.get_by_role("row").filter(has_text=key)
        expect(row).to_contain_text(phase)
        expect(row).to_contain_text(words)
    alfa = links.get_by_role("link", name="Альфа Инструмент")
    expect(alfa).to_have_attribute("href", re.compile(r"partition=alfa-instrument"))
    shot("overview-with-links")
    links.get_by_role("row").filter(has_text="epsilon-moved").locator('a[href^="/runs/"]').click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    expect(page.get_by_text("partition: epsilon-moved").first).to_be_visible()
    # Its log leads with the supplier and the cause, not a stack trace.
    cause = page.get_by_text(
        re.compile(r"Supplier 'Epsilon Moved' \(epsilon-moved\), source \S+: [^\n]*HTTP 404")
    )
    expect(cause.first).to_be_visible()
    shot("overview-failed-supplier-run")


def test_partition_materialized_from_the_ui_reaches_completion(shot, product):
    from playwright.sync_api import expect

    page = shot.page

    # The product syncs every demo supplier at start by itself (initial-sync sensor). Let that
    # settle first, so the analysis reported below can only be the one launched from the UI.
    wait_for_initial_sync(product)
    page.goto("/runs")
    expect(run_rows(page).filter(has_text=f"partition: {PARTITION}").first).to_be_visible()
    shot("runs-after-initial-sync")

    # Materialize all… in the suppliers group, for one partition, with force: true so the
    # unchanged file is analysed again rather than skipped as already analysed.
    page.goto("/locations/ingestion_assets/asset-groups/suppliers")
    page.get_by_role("button", name=re.compile(r"Materialize all")).click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    expect(dialog).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem").filter(has_text=PARTITION).click()
    page.keyboard.press("Escape")
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    dialog.get_by_text("Config", exact=True).click()
    dialog.get_by_role("button", name="Add config").click()
    editor = page.get_by_role("dialog").filter(has_text="Config Editor")
    editor.locator(".CodeMirror").click()
    page.keyboard.insert_text("ops:\n  ml_analysis_result:\n    config:\n      force: true\n")
    expect(editor.get_by_text("No errors")).to_be_visible()
    shot("config-force")
    editor.get_by_role("button", name="Save config").click()
    launch = dialog.get_by_role("button", name="Launch 1 run")
    expect(launch).to_be_enabled()
    shot("materialize-dialog")
    launch.click()

    # The toast names the run; its View button opens the run.
    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
    expect(toast).to_be_visible()
    shot("launched")
    notifications = page.get_by_role("region", name=re.compile("Notifications"))
    notifications.get_by_role("link", name="View").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = page.url.rsplit("/", 1)[-1]
    expect(page.get_by_text(f"partition: {PARTITION}").first).to_be_visible()
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(
        timeout=RUN_TIMEOUT_S * 1000
    )
    page.get_by_placeholder(re.compile(r"^Filter")).fill("submitted to ml-analyze")
    submitted = page.get_by_text(re.compile(r"submitted to ml-analyze as job [0-9a-f-]{36}"))
    expect(submitted.first).to_be_visible()
    job_id = re.search(r"as job ([0-9a-f-]{36})", submitted.first.inner_text()).group(1)
    shot("run-succeeded")

    # The Runs page lists it: this partition, launched by hand (not by a sensor), succeeded.
    page.goto("/runs")
    row = run_rows(page).filter(has=page.locator(f'a[href="/runs/{run_id}"]'))
    expect(row).to_contain_text(f"partition: {PARTITION}")
    expect(row).to_contain_text("Manually launched")
    expect(row).to_contain_text("Success")
    expect(row).not_to_contain_text("sensor")
    shot("runs-page")

    # The ml status sensor (in dagster dev's daemon) materializes the partition's
    # ml_analysis_result when ml-analyze finishes this very job. The asset's events, filtered to
    # this partition's materializations, open on the latest one.
    page.goto(
        "/assets/ml_analysis_result?view=events"
        f"&type%5B0%5D=Materialization&partitions%5B0%5D={PARTITION}"
    )
    ml_job_row = page.get_by_role("row").filter(has_text="ml_job_id").first
    deadline = time.monotonic() + COMPLETION_TIMEOUT_S
    while True:
        try:
            expect(ml_job_row).to_contain_text(job_id, timeout=10_000)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{PARTITION}'s ml_analysis_result was not materialized for ml-analyze job "
                    f"{job_id}, submitted by run {run_id}, within {COMPLETION_TIMEOUT_S} s "
                    f"(logs: {ARTIFACTS / 'logs'})"
                ) from None
            page.reload()
    expect(page.get_by_text(f"Partition {PARTITION} materialized")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="outcome").first).to_contain_text("completed")
    shot("partition-completed")

    # The sensor that reported it is still healthy: its latest tick did not fail.
    page.goto("/locations/ingestion_assets/sensors/ml_status_sensor")
    latest_tick = page.get_by_role("row").filter(has_text="Latest tick")
    expect(latest_tick).to_contain_text(
        re.compile(r"Success|Skipped|Failure|runs? requested"), timeout=30_000
    )
    if "Failure" in latest_tick.inner_text():
        latest_tick.get_by_role("button", name="View").click()
        dialog = page.get_by_role("dialog").filter(has_text="Error")
        expect(dialog).to_be_visible()
        error = dialog.inner_text()
        shot("ml-status-sensor-failing")
        raise AssertionError(f"ml_status_sensor's latest tick failed:\n{error[:2000]}")
    shot("ml-status-sensor")


def run_rows(page):
    """The rows of the Runs page (a virtualized list of divs, not a table)."""
    return page.locator("[data-index]")


def assert_edges_drawn(page, expected: list[tuple[str, str]]) -> None:
    """Wait until the graph draws every expected arrow; fail with the arrows it does draw."""
    wanted = [list(edge) for edge in expected]
    check = f"""(names) => {{
        const edges = ({EDGES_JS})(names);
        const wanted = {wanted!r};
        return wanted.every(([a, b]) => edges.some(([x, y]) => x === a && y === b));
    }}"""
    try:
        page.wait_for_function(check, arg=ASSETS, timeout=UI_TIMEOUT_MS)
    except Exception as exc:
        drawn = page.evaluate(EDGES_JS, ASSETS)
        raise AssertionError(f"the asset graph draws {drawn}, not all of {expected}") from exc


def wait_for_initial_sync(product: Product, timeout: float = 150) -> None:
    """The demo's partitions exist, no run is queued or running, and PARTITION has an analysis."""
    deadline = time.monotonic() + timeout
    while True:
        data = product.graphql(LATEST_ANALYSIS, {"partition": PARTITION})
        node, runs = data["assetNodeOrError"], data["runsOrError"]["results"]
        if PARTITION in node["partitionKeys"] and node["assetMaterializations"] and not runs:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the initial sync did not settle in {timeout:.0f} s: partitions "
                f"{node['partitionKeys']}, {PARTITION}'s analyses {node['assetMaterializations']}, "
                f"runs in flight {runs}\n{product.log_tail()}"
            )
        time.sleep(1)
