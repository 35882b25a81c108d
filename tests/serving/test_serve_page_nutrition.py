"""The page's "Estimated portions" table in Chromium against a real `cmi serve`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _serve_helpers import LiveServer, ServeModels, make_photo

sync_api = pytest.importorskip("playwright.sync_api")
from test_serve_page import ARGS, CHROMIUM, open_page, wait_for_result  # noqa: E402

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


DASH = "\u2013"  # the page writes ranges with an en dash


def js_number(value: float) -> str:
    """How the page's String(number) writes a JSON number."""
    return str(int(value)) if value == int(value) else repr(value)


def expected_nutrition(server: LiveServer, photo: bytes, plate: float) -> dict[str, Any]:
    r = httpx.post(
        f"{server.url}/v1/segment",
        params={"nutrition": "true", "plate_diameter_cm": plate},
        files={"file": ("plate.jpg", photo, "image/jpeg")},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()["nutrition"]


def test_page_shows_nutrition_and_follows_the_plate_size(
    browser: Any,
    serve_models: ServeModels,
    live_server: Callable[..., LiveServer],
    tmp_path: Path,
) -> None:
    data = make_photo(320, 240, seed=4)
    photo = tmp_path / "plate.jpg"
    photo.write_bytes(data)
    server = live_server(serve_models.onnx, ["--no-access-log"])
    at_26 = expected_nutrition(server, data, 26)
    at_40 = expected_nutrition(server, data, 40)
    assert at_26["classes"], "the tiny model found no food: nothing to show"
    assert at_40["total"]["kcal"]["value"] > at_26["total"]["kcal"]["value"]

    page, problems = open_page(browser, server.url)
    expect = sync_api.expect
    page.set_input_files("#file", str(photo))
    wait_for_result(page)
    expect(page.locator("#nutrition")).to_be_visible()
    rows = page.locator("#nutrition-table tbody tr")
    expect(rows).to_have_count(len(at_26["classes"]))
    first = at_26["classes"][0]
    cells = rows.nth(0).locator("td")
    assert cells.nth(0).inner_text().startswith(first["name"])
    grams = first["grams"]
    assert cells.nth(1).inner_text().split("\n") == [
        f"{js_number(grams['value'])} g",
        f"{js_number(grams['low'])}{DASH}{js_number(grams['high'])}",
    ]
    total = page.locator("#nutrition-table tfoot td")
    kcal = at_26["total"]["kcal"]
    expect(total.nth(2)).to_have_text(
        f"{js_number(kcal['value'])}{js_number(kcal['low'])}{DASH}{js_number(kcal['high'])}"
    )
    # The field starts empty: the server's default plate (26 cm) is used, and shown.
    expect(page.locator("#nutrition-assumptions")).to_contain_text("26 cm across (config)")
    expect(page.get_by_label("Plate diameter (cm)")).to_have_value("26")

    # A bigger plate: the page asks again and shows the 40 cm answer.
    page.get_by_label("Plate diameter (cm)").fill("40")
    page.get_by_label("Plate diameter (cm)").press("Enter")
    kcal = at_40["total"]["kcal"]
    expect(total.nth(2)).to_have_text(
        f"{js_number(kcal['value'])}{js_number(kcal['low'])}{DASH}{js_number(kcal['high'])}"
    )
    expect(page.locator("#nutrition-assumptions")).to_contain_text("40 cm across (request)")
    expect(page.locator("#status")).to_contain_text("40 cm plate")

    # Nonsense is refused on the page, without a request.
    page.get_by_label("Plate diameter (cm)").fill("500")
    page.get_by_label("Plate diameter (cm)").press("Enter")
    expect(page.locator("#status")).to_contain_text("between 5 and 100 cm")
    expect(total.nth(2)).to_contain_text(js_number(kcal["value"]))

    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert problems == []
    page.close()
