"""The web page in a real browser: Chromium driven by Playwright against a real `cmi serve`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _serve_helpers import LiveServer, ServeModels, make_photo

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("CMI_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="chromium not installed"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "plate.jpg"
    path.write_bytes(make_photo(320, 240, seed=4))
    return path


def open_page(browser: Any, url: str, width: int = 375) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": width, "height": 800})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("requestfailed", lambda r: problems.append(f"failed {r.url}"))
    page.goto(url)
    return page, problems


def wait_for_result(page: Any) -> None:
    page.wait_for_function(
        "() => { const o = document.getElementById('overlay');"
        " return o.complete && o.naturalWidth > 0 &&"
        " document.querySelectorAll('#legend tbody tr').length > 0; }",
        timeout=30_000,
    )


def test_upload_shows_overlay_legend_and_latency(
    browser: Any,
    photo: Path,
    serve_models: ServeModels,
    live_server: Callable[..., LiveServer],
    tmp_path: Path,
) -> None:
    server = live_server(serve_models.onnx, ["--no-access-log"])
    expected = httpx.post(
        f"{server.url}/v1/segment", files={"file": ("p.jpg", photo.read_bytes(), "image/jpeg")}
    ).json()
    colors = {c["id"]: c["color"] for c in httpx.get(f"{server.url}/v1/model").json()["classes"]}

    page, problems = open_page(browser, server.url)
    expect = sync_api.expect
    expect(page.locator("#model")).to_contain_text(expected["model_id"])
    expect(page.locator("#key-row")).to_be_hidden()

    # Keyboard: Tab reaches the labelled file input.
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "file":
            break
    assert page.evaluate("document.activeElement.id") == "file"
    assert page.get_by_label("Choose a photo").count() == 1

    page.set_input_files("#file", str(photo))
    wait_for_result(page)
    assert page.evaluate("document.getElementById('overlay').naturalWidth") == 320
    assert page.evaluate("document.getElementById('photo').naturalWidth") == 320

    rows = page.locator("#legend tbody tr")
    assert rows.count() == len(expected["classes"])
    first = expected["classes"][0]
    cells = rows.nth(0).locator("td")
    assert cells.nth(1).inner_text() == first["name"]
    assert cells.nth(2).inner_text() == f"{first['share'] * 100:.1f} %"
    swatch = rows.nth(0).locator(".swatch").evaluate("e => getComputedStyle(e).backgroundColor")
    r, g, b = (int(colors[first["id"]][i : i + 2], 16) for i in (1, 3, 5))
    assert swatch == f"rgb({r}, {g}, {b})"
    expect(page.locator("#latency")).to_contain_text("ms")
    expect(page.locator("#status")).to_contain_text(f"Found {len(expected['classes'])} classes")
    assert page.locator("#results").get_attribute("aria-live") == "polite"

    # Phone-sized: nothing wider than the 375 px screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    shot = Path(os.environ.get("CMI_SCREENSHOT_DIR", tmp_path)) / "serve-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert problems == []
    page.close()


def test_page_asks_for_the_api_key(
    browser: Any, photo: Path, serve_models: ServeModels, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(
        serve_models.onnx, ["--api-key-env", "PAGE_KEY", "--no-access-log"], PAGE_KEY="k-123"
    )
    page, _ = open_page(browser, server.url, width=1000)
    expect = sync_api.expect
    expect(page.locator("#key-row")).to_be_visible()
    expect(page.locator("#status")).to_contain_text("API key")
    page.get_by_label("API key").fill("k-123")
    page.get_by_label("API key").press("Tab")
    expect(page.locator("#model")).to_contain_text("fast_unet-")
    page.set_input_files("#file", str(photo))
    wait_for_result(page)
    page.close()


def test_page_shows_errors_from_the_api(
    browser: Any, serve_models: ServeModels, live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = live_server(serve_models.onnx, ["--no-access-log"])
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"these are notes, not a photo")
    page, _ = open_page(browser, server.url)
    page.set_input_files("#file", str(bad))
    sync_api.expect(page.locator("#status")).to_contain_text("415")
    assert "error" in (page.locator("#status").get_attribute("class") or "")
    page.close()


def test_a_failed_upload_clears_the_previous_result(
    browser: Any,
    photo: Path,
    serve_models: ServeModels,
    live_server: Callable[..., LiveServer],
    tmp_path: Path,
) -> None:
    server = live_server(serve_models.onnx, ["--no-access-log"])
    page, _ = open_page(browser, server.url)
    page.set_input_files("#file", str(photo))
    wait_for_result(page)
    expect = sync_api.expect
    expect(page.locator("#results")).to_be_visible()

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(photo.read_bytes()[:200])  # a truncated JPEG: 400
    page.set_input_files("#file", str(bad))
    expect(page.locator("#status")).to_contain_text("400")
    assert "error" in (page.locator("#status").get_attribute("class") or "")
    # Nothing of the previous photo's result may stay on screen next to the error.
    expect(page.locator("#results")).to_be_hidden()
    assert page.locator("#legend tbody tr").count() == 0
    assert page.evaluate("document.getElementById('overlay').getAttribute('src')") in (None, "")
    assert page.locator("#latency").inner_text() == ""
    page.close()


def test_api_docs_render_with_no_network(
    browser: Any, serve_models: ServeModels, live_server: Callable[..., LiveServer]
) -> None:
    """/docs loads Swagger UI from this server only: every other host is cut off."""
    server = live_server(serve_models.onnx, ["--no-access-log"])
    context = browser.new_context()
    outside: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("requestfailed", lambda r: problems.append(f"failed {r.url}"))
    page.goto(f"{server.url}/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/v1/segment" in paths
    assert "/v1/drift" in paths
    assert outside == []
    assert problems == []
    context.close()
