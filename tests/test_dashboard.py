"""The dashboard at ``/`` in a real headless Chromium: upload a file, watch it complete live.

Needs Playwright for Python and a system Chromium (Debian: ``apt-get install chromium``); the
browser is never downloaded. Without them the test is skipped, unless
``ANTIOOM_REQUIRE_SERVICES=1`` (CI), in which case it fails.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import antioom_command, clean_env
from server_helpers import Served, serve

ROWS = 200_000
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path) as served:
        yield served


@pytest.fixture(scope="module")
def products_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dashboard") / "products.csv"
    subprocess.run(
        [*antioom_command(), "generate", str(path), "--rows", str(ROWS)],
        check=True,
        capture_output=True,
        env=clean_env(),
        timeout=120,
    )
    return path


def test_upload_from_the_dashboard(browser: Any, server: Served, products_file: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        page.goto(server.url + "/")
        page.wait_for_selector('#feed-status[data-state="ok"]', timeout=10_000)
        assert page.locator("#docs-link").get_attribute("href") == "docs"  # relative: mountable
        assert page.locator("#target-picker").input_value() == "dataset:products"
        assert page.get_by_label("API key").count() == 1

        page.set_input_files("#file-input", str(products_file))
        assert products_file.name in page.locator("#file-name").inner_text()
        page.click("#upload-button")

        page.wait_for_selector("#upload-status[data-import-id]", timeout=5_000)
        import_id = page.locator("#upload-status").get_attribute("data-import-id")
        assert import_id
        row = page.locator(f'tr[data-testid="import-row"][data-import-id="{import_id}"]')
        row.wait_for(timeout=5_000)
        page.wait_for_selector(
            f'tr[data-import-id="{import_id}"][data-status="completed"]', timeout=120_000
        )
        progress = row.locator('[data-testid="import-progress"]')
        page.wait_for_function(
            "el => el.dataset.percent === '100'", arg=progress.element_handle(), timeout=5_000
        )
        assert row.locator('[data-testid="import-status"]').inner_text().lower() == "completed"
        assert "100 %" in row.locator('[data-testid="import-progress-text"]').inner_text()
        shown = row.locator('[data-testid="import-processed"]').inner_text()
        assert int(re.sub(r"\D", "", shown)) == ROWS
        assert row.locator('[data-testid="import-failed"]').get_attribute("data-value") == "0"
        rejects = row.locator('[data-testid="import-rejects"]').get_attribute("href")
        assert rejects == f"imports/{import_id}/rejects"
        assert (
            row.locator('[data-testid="import-source"]')
            .inner_text()
            .startswith(products_file.name + " (")
        )
        assert row.locator('[data-testid="import-cancel"]').is_hidden()
        assert page.locator("#upload-progress").get_attribute("data-percent") == "100"
        page.wait_for_selector('#upload-status[data-kind="ok"]', timeout=10_000)

        # The RSS chart has samples from the feed and /health, and draws them.
        page.wait_for_function(
            "Number(document.getElementById('rss-chart').dataset.points) >= 3", timeout=10_000
        )
        assert page.locator("#rss-now").inner_text().endswith("MB")

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    finally:
        page.close()
    assert errors == []


def test_imports_list_loads_existing_records(
    browser: Any, server: Served, products_file: Path, tmp_path: Path
) -> None:
    """An import made elsewhere (the CLI client) is listed on load, complete."""
    small = tmp_path / "small.csv"
    small.write_bytes(b"sku,name,price\nA,Apple,1.5\nB,,2\n")
    result = subprocess.run(
        [*antioom_command(), "upload", str(small), "--url", server.url, "--dataset", "products",
         "--import-id", "from-cli", "--json"],
        capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    page = browser.new_page()
    try:
        page.goto(server.url + "/")
        row = page.locator('tr[data-import-id="from-cli"]')
        row.wait_for(timeout=10_000)
        assert row.get_attribute("data-status") == "completed"
        assert row.locator('[data-testid="import-processed"]').get_attribute("data-value") == "1"
        assert row.locator('[data-testid="import-failed"]').get_attribute("data-value") == "1"
        assert row.locator('[data-testid="import-view-rejects"]').inner_text() == "Rejects (1)"
        assert row.locator('[data-testid="import-source"]').inner_text() == "small.csv (32 B)"
    finally:
        page.close()


def test_csv_options_from_the_dashboard(browser: Any, server: Served, tmp_path: Path) -> None:
    """Delimiter ';' and NULL values chosen in "CSV options": sent as query parameters, the
    dialect used is shown with the result, and the rows are stored as the options say."""
    from conftest import fetch

    semi = tmp_path / "semi.csv"
    semi.write_bytes(b"id;name;price\n1;Apple, red;1.5\n2;Pear;-\n3;Fig;2\n")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if r.method == "POST" else None)
    try:
        page.goto(server.url + "/")
        page.wait_for_selector('#feed-status[data-state="ok"]', timeout=10_000)
        assert page.locator("#opt-delimiter").is_hidden()  # collapsed until opened
        page.select_option("#target-picker", "table")
        page.fill("#table-name", "fruit")
        page.click("#csv-options > summary")
        page.select_option("#opt-delimiter", ";")
        page.fill("#opt-null", "-")
        page.set_input_files("#file-input", str(semi))
        page.click("#upload-button")

        page.wait_for_selector('#upload-status[data-kind="ok"]', timeout=30_000)
        dialect = page.locator("#upload-dialect").inner_text()
        assert page.locator("#upload-result").is_visible()
        assert dialect.startswith("delimiter ';', quote '\"' (detected), ")
        assert "header (detected)" in dialect
        assert "encoding utf-8 (detected)" in dialect
        import_id = page.locator("#upload-status").get_attribute("data-import-id")
        row = page.locator(f'tr[data-import-id="{import_id}"][data-status="completed"]')
        row.wait_for(timeout=10_000)
        assert row.locator('[data-testid="import-processed"]').get_attribute("data-value") == "3"
    finally:
        page.close()
    assert errors == []
    (posted,) = requests
    assert "/imports?" in posted and "delimiter=%3B" in posted and "null=-" in posted
    assert "filename=semi.csv" in posted
    assert "encoding" not in posted and "header" not in posted  # auto: left to detection
    rows = fetch(server.db_url, 'SELECT id, name, price FROM "fruit" ORDER BY id')
    assert rows == [(1, "Apple, red", 1.5), (2, "Pear", None), (3, "Fig", 2.0)]


def test_dashboard_on_a_keyed_server(browser: Any, tmp_path: Path) -> None:
    """With API keys, reads need the key too: the page says so until it is typed in; then the
    list, the live feed and the rejects download work, and the key is in no URL but the
    feed's (EventSource cannot send headers)."""
    key = "dashboard-key-0123"
    small = tmp_path / "small.csv"
    small.write_bytes(b"sku,name,price\nA,Apple,1.5\nB,,2\n")
    with serve(tmp_path, env={"ANTIOOM_API_KEYS": key}) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        urls: list[str] = []
        page.on("request", lambda request: urls.append(request.url))
        try:
            page.goto(server.url + "/")
            page.wait_for_selector('#list-message[data-kind="error"]', timeout=10_000)
            assert "check the API key" in page.locator("#list-message").inner_text()
            page.wait_for_selector('#feed-status[data-state="bad"]', timeout=10_000)

            page.fill("#api-key", key)
            page.press("#api-key", "Tab")  # "change": the list and the feed try again
            page.wait_for_selector('#feed-status[data-state="ok"]', timeout=10_000)
            page.set_input_files("#file-input", str(small))
            page.click("#upload-button")
            page.wait_for_selector('#upload-status[data-kind="ok"]', timeout=30_000)
            import_id = page.locator("#upload-status").get_attribute("data-import-id")
            row = page.locator(f'tr[data-import-id="{import_id}"][data-status="completed"]')
            row.wait_for(timeout=10_000)
            with page.expect_download(timeout=10_000) as download:
                row.locator('[data-testid="import-rejects"]').click()
            rejects = Path(download.value.path()).read_text("utf-8").splitlines()
            assert rejects[0] == "record,line,column,reason,raw" and len(rejects) == 2
        finally:
            page.close()
    assert [url for url in urls if key in url] == [f"{server.url}/events?token={key}"]
