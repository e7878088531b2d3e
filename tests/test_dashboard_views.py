"""The dashboard's dataset picker, pre-flight, rejects view, prefix mount and narrow-screen
layout, in a real headless Chromium (see test_dashboard.py for what it needs).

Screenshots go to ``$ANTIOOM_SCREENSHOTS`` when set, else to the test's temporary directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from conftest import clean_env
from server_helpers import Served, free_port, serve, wait_health

DATASETS = """
[datasets.customers]
table = "crm_customers"
mode = "upsert"
key = ["email"]

[[datasets.customers.columns]]
name = "email"
source = "E-mail"
required = true
pattern = '[^@]+@[^@]+'

[[datasets.customers.columns]]
name = "plan"
choices = ["free", "pro"]
"""


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    directory = Path(os.environ.get("ANTIOOM_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    page.screenshot(path=str(path), full_page=True)
    return path


@contextmanager
def watched_page(chromium: Any, width: int = 1280) -> Iterator[tuple[Any, list[str], list[Any]]]:
    """A page, the errors its scripts log, and the requests it makes."""
    page = chromium.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    requests: list[Any] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("request", lambda request: requests.append(request))
    try:
        yield page, errors, requests
    finally:
        page.close()


def rejects_file(path: Path, rows: int = 300) -> Path:
    """Products rows, two of three rejected: 2/3 for a price <= 0, the rest for no name."""
    lines = ["sku,name,price"]
    for i in range(rows):
        if i % 3 == 0:
            lines.append(f"SKU-{i},Product {i},{i % 7 + 1}.5")
        elif i % 3 == 1 or i % 6 == 2:
            lines.append(f"SKU-{i},Product {i},-{i}")
        else:
            lines.append(f"SKU-{i},,{i}")
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def upload_in_page(page: Any, path: Path, timeout: float = 60_000) -> str:
    page.set_input_files("#file-input", str(path))
    page.click("#upload-button")
    page.wait_for_selector("#upload-status[data-import-id]", timeout=10_000)
    import_id: str = page.locator("#upload-status").get_attribute("data-import-id")
    page.wait_for_selector(
        f'tr[data-import-id="{import_id}"][data-status="completed"]', timeout=timeout
    )
    return import_id


def test_dataset_picker(browser: Any, tmp_path: Path) -> None:
    """The picker lists GET /datasets and "a table"; a dataset shows its table, mode, key and
    columns with their rules; the upload goes where the picker says."""
    datasets = tmp_path / "datasets.toml"
    datasets.write_text(DATASETS, "utf-8")
    people = tmp_path / "people.csv"
    people.write_text("E-mail,plan\na@x.org,free\nb@x.org,gold\nnot-an-email,pro\n", "utf-8")
    with (
        serve(tmp_path, "--datasets", str(datasets)) as server,
        watched_page(browser) as (
            page,
            errors,
            _,
        ),
    ):
        page.goto(server.url + "/")
        page.wait_for_selector('#target-picker[data-loaded="2"]', timeout=10_000)
        options = page.eval_on_selector_all(
            "#target-picker option", "els => els.map(e => [e.value, e.textContent])"
        )
        assert options == [
            ["dataset:customers", "customers → crm_customers (2 columns)"],
            ["dataset:products", "products (3 columns)"],
            ["table", "A table (infer columns from the header)…"],
        ]
        assert page.locator("#target-picker").input_value() == "dataset:products"
        assert page.locator("#table-name").is_hidden()
        info = page.locator("#dataset-info").inner_text()
        assert "Into table products · upsert by sku · sets updated_at" in info
        assert "price float > 0 · required" in info

        page.select_option("#target-picker", "dataset:customers")
        email = page.locator('#dataset-info li[data-column="email"]').inner_text()
        assert email == "email string matches [^@]+@[^@]+ · from “E-mail” · required · key"
        plan = page.locator('#dataset-info li[data-column="plan"]').inner_text()
        assert plan == "plan string one of free, pro"
        assert page.locator("#mode option").first.inner_text() == "Default (upsert by email)"
        screenshot(page, tmp_path, "picker.png")

        import_id = upload_in_page(page, people)
        row = page.locator(f'tr[data-import-id="{import_id}"]')
        assert row.locator('[data-testid="import-processed"]').get_attribute("data-value") == "1"
        assert row.locator('[data-testid="import-failed"]').get_attribute("data-value") == "2"
        assert (
            "→ customers → crm_customers"
            in row.locator('[data-testid="import-target"]').inner_text()
        )

        page.select_option("#target-picker", "table")
        assert page.locator("#table-name").is_visible()
        assert page.locator("#mode option").first.inner_text() == "Default (insert)"
    assert errors == []


def test_preflight_refusal_sends_no_body(browser: Any, tmp_path: Path) -> None:
    """A target or mode the server refuses is reported from GET imports/check: the file is
    never POSTed, and no import is listed."""
    data = rejects_file(tmp_path / "data.csv", 30)
    with serve(tmp_path) as server, watched_page(browser) as (page, errors, requests):
        page.goto(server.url + "/")
        page.wait_for_selector('#feed-status[data-state="ok"]', timeout=10_000)
        page.set_input_files("#file-input", str(data))
        page.select_option("#target-picker", "table")
        for name, mode, reason in (
            ("drop table", "", "invalid table name 'drop table'"),
            ("orders", "upsert", "mode upsert needs a key"),
        ):
            page.fill("#table-name", name)
            page.select_option("#mode", mode)
            page.click("#upload-button")
            page.wait_for_selector('#upload-status[data-kind="error"]', timeout=10_000)
            message = page.locator("#upload-status").inner_text()
            assert message.startswith("Not sent: ") and reason in message, message
            assert "(HTTP 400)" in message
            assert page.locator("#upload-status").get_attribute("data-stage") == "preflight"
            screenshot(page, tmp_path, "preflight.png")
        assert page.locator("#upload-button").is_enabled()
        assert page.locator('tr[data-testid="import-row"]').count() == 0
        checks = [r for r in requests if "/imports/check?" in r.url]
        assert len(checks) == 2 and all(r.method == "GET" for r in checks)
        assert "size=" in checks[0].url and "table=drop+table" in checks[0].url
        assert [r for r in requests if r.method == "POST"] == []
        assert "POST" not in server.log_text()
        assert httpx.get(server.url + "/imports").json()["total"] == 0
    # Chromium logs the two refused checks themselves; nothing else went wrong.
    assert [e for e in errors if "status of 400 (Bad Request)" not in e] == []


def test_rejects_view(browser: Any, tmp_path: Path) -> None:
    """The rejected rows in a table, pages of 100, counts per reason as filters, and the caps:
    200 rejected, 150 kept."""
    data = rejects_file(tmp_path / "rejects.csv", 300)
    env = {"ANTIOOM_STORED_REJECTS_PER_IMPORT": "150"}
    with serve(tmp_path, env=env) as server, watched_page(browser) as (page, errors, _):
        page.goto(server.url + "/")
        page.wait_for_selector('#feed-status[data-state="ok"]', timeout=10_000)
        import_id = upload_in_page(page, data)
        row = page.locator(f'tr[data-import-id="{import_id}"]')
        assert row.locator('[data-testid="import-source"]').inner_text().startswith("rejects.csv")
        row.locator('[data-testid="import-view-rejects"]').click()
        page.wait_for_selector('#rejects-panel[data-loaded="true"]', timeout=10_000)

        caps = page.locator("#rejects-caps")
        assert (caps.get_attribute("data-kept"), caps.get_attribute("data-total")) == ("150", "200")
        assert caps.get_attribute("data-capped") == "true"
        assert caps.inner_text().startswith("200 rows rejected; 150 kept (the server keeps at most")
        chips = page.locator('[data-testid="reason-filter"]')
        found = chips.evaluate_all("els => els.map(e => [e.dataset.reason, +e.dataset.count])")
        assert found[0] == ["", 150]
        reasons = dict(found[1:])
        assert set(reasons) == {"must be > 0", "required value is missing"}
        assert sum(reasons.values()) == 150
        body = page.locator('#rejects-body tr[data-testid="reject-row"]')
        assert body.count() == 100
        assert page.locator("#rejects-shown").inner_text() == "100 of 150 shown"
        first = body.first.locator("td").all_inner_texts()
        assert first[2:4] == ["price", "must be > 0"] and first[4].startswith("SKU-1,Product 1,-1")
        page.click("#rejects-more")
        page.wait_for_function(
            "document.querySelectorAll('#rejects-body tr').length === 150", timeout=10_000
        )
        assert page.locator("#rejects-more").is_hidden()

        missing = chips.filter(has_text="required value is missing")
        missing.click()
        count = reasons["required value is missing"]
        page.wait_for_function(
            f"document.querySelectorAll('#rejects-body tr').length === {count}", timeout=10_000
        )
        assert missing.get_attribute("aria-pressed") == "true"
        shown = body.evaluate_all("rows => rows.map(r => r.cells[3].textContent)")
        assert set(shown) == {"required value is missing"}
        assert set(body.evaluate_all("rows => rows.map(r => r.cells[2].textContent)")) == {"name"}

        download = page.locator("#rejects-download")
        assert download.get_attribute("href") == f"imports/{import_id}/rejects"
        with page.expect_download(timeout=10_000) as saved:
            download.click()
        assert len(Path(saved.value.path()).read_text("utf-8").splitlines()) == 151
        screenshot(page, tmp_path, "rejects.png")
    assert errors == []


PARENT_APP = """
from fastapi import FastAPI

from antioom.server import create_app

app = FastAPI(title="the team's own app")


@app.get("/")
def home() -> dict[str, str]:
    return {"app": "parent"}


app.mount("/antioom", create_app())
"""


@contextmanager
def parent_app(tmp_path: Path) -> Iterator[Served]:
    """A real uvicorn process serving a FastAPI app that mounts anti-oom at /antioom."""
    (tmp_path / "parent_app.py").write_text(PARENT_APP, "utf-8")
    port = free_port()
    db_url = f"sqlite:///{tmp_path / 'mounted.db'}"
    log = tmp_path / "parent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "parent_app:app", "--port", str(port)],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(ANTIOOM_DB_URL=db_url, PYTHONPATH=str(tmp_path)),
        )
    served = Served(proc, f"http://127.0.0.1:{port}", db_url, log)
    try:
        wait_health(served.url + "/antioom", proc=proc)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_dashboard_under_a_mount_prefix(browser: Any, tmp_path: Path) -> None:
    """Mounted at /antioom in another app: health, feed, datasets, pre-flight, upload and the
    rejects view all reach /antioom/…, none the parent's /…"""
    data = rejects_file(tmp_path / "mounted.csv", 30)
    with parent_app(tmp_path) as server, watched_page(browser) as (page, errors, requests):
        assert httpx.get(server.url + "/").json() == {"app": "parent"}
        page.goto(server.url + "/antioom")  # redirected to /antioom/
        assert page.url == server.url + "/antioom/"
        page.wait_for_selector('#server-status[data-state="ok"]', timeout=10_000)
        page.wait_for_selector('#feed-status[data-state="ok"]', timeout=10_000)
        page.wait_for_selector('#target-picker[data-loaded="1"]', timeout=10_000)
        assert page.locator("#docs-link").evaluate("a => a.href") == server.url + "/antioom/docs"
        import_id = upload_in_page(page, data)
        page.locator(
            f'tr[data-import-id="{import_id}"] [data-testid="import-view-rejects"]'
        ).click()
        page.wait_for_selector('#rejects-panel[data-loaded="true"]', timeout=10_000)
        assert page.locator('#rejects-body tr[data-testid="reject-row"]').count() == 20
        screenshot(page, tmp_path, "mounted.png")
        paths = {r.url.removeprefix(server.url).split("?")[0] for r in requests}
        assert {
            "/antioom/health",
            "/antioom/events",
            "/antioom/datasets",
            "/antioom/imports",
        } <= paths
        assert "/antioom/imports/check" in paths
        outside = sorted(p for p in paths if not p.startswith("/antioom"))
        assert outside == [], outside
    assert errors == []


def test_narrow_screen(browser: Any, tmp_path: Path) -> None:
    """At 420 px the page never scrolls sideways: the forms stack, and the imports and rejects
    tables scroll in their own boxes."""
    data = rejects_file(tmp_path / "a-rather-long-file-name-for-a-phone-2024-12-31.csv", 30)
    with serve(tmp_path) as server, watched_page(browser, width=420) as (page, errors, _):
        page.goto(server.url + "/")
        page.wait_for_selector('#feed-status[data-state="ok"]', timeout=10_000)
        import_id = upload_in_page(page, data)
        page.locator(
            f'tr[data-import-id="{import_id}"] [data-testid="import-view-rejects"]'
        ).click()
        page.wait_for_selector('#rejects-panel[data-loaded="true"]', timeout=10_000)
        page.click("#csv-options > summary")
        page.evaluate("window.scrollTo(0, 0)")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 420, width
        for box in ("#imports-table", "#rejects-table"):
            wrap = page.locator(box).evaluate(
                "t => { const w = t.parentElement; const s = getComputedStyle(w); "
                "return [w.clientWidth, w.scrollWidth, s.overflowX]; }"
            )
            assert wrap[0] <= 420 and wrap[2] == "auto", (box, wrap)
            assert wrap[1] > wrap[0], (box, wrap)  # wider than the screen: scrolls inside
        page.evaluate("document.querySelectorAll('.table-wrap').forEach(w => w.scrollLeft = 0)")
        screenshot(page, tmp_path, "narrow.png")
    assert errors == []
