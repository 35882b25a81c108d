"""``?nutrition=true`` on the real app with a real exported model (FastAPI's TestClient)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _serve_helpers import ServeModels, make_photo
from fastapi.testclient import TestClient

from cmi_cli.nutrition import NutritionTableError
from cmi_cli.serving.app import create_app
from cmi_cli.serving.settings import ServeSettings

PACKAGED_CSV = Path(__file__).parents[2] / "cmi_cli" / "resources" / "nutrition.csv"


def _client(settings: ServeSettings) -> TestClient:
    return TestClient(create_app(settings))


def _wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "never ready"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def client(
    serve_models: ServeModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    log_dir = tmp_path_factory.mktemp("nutrition_log")
    settings = ServeSettings(model=serve_models.onnx, log_dir=str(log_dir), plate_diameter_cm=24)
    with _client(settings) as c:
        _wait_ready(c)
        yield c


def segment(client: TestClient, data: bytes, path: str = "/v1/segment", **params: Any) -> Any:
    return client.post(path, params=params, files={"file": ("p.jpg", data, "image/jpeg")})


PHOTO = make_photo(160, 120, seed=5)


def test_nutrition_only_when_asked(client: TestClient) -> None:
    plain = segment(client, PHOTO)
    assert plain.status_code == 200, plain.text
    assert plain.json()["nutrition"] is None
    asked = segment(client, PHOTO, nutrition="true")
    assert asked.status_code == 200, asked.text
    body = asked.json()
    n = body["nutrition"]
    food = [c for c in body["classes"] if c["id"] != 0]
    assert food, "the tiny model found only background: the test photo tests nothing"
    assert sorted(c["id"] for c in n["classes"]) == sorted(c["id"] for c in food)
    for c in n["classes"]:
        for key in ("grams", "kcal", "protein_g", "carbohydrate_g", "fat_g"):
            assert c[key]["low"] <= c[key]["value"] <= c[key]["high"], (key, c)
        assert c["source_food"]
    assert n["total"]["grams"]["value"] > 0
    a = n["assumptions"]
    assert (a["plate_diameter_cm"], a["plate_diameter_source"]) == (24.0, "config")
    assert a["image_size"] == {"width": 160, "height": 120}
    assert a["table"]["path"] == "packaged"
    assert a["table"]["rows"] == 103
    assert "thickness" in a["method"]


def test_plate_diameter_from_the_request_scales_the_grams(client: TestClient) -> None:
    small = segment(client, PHOTO, nutrition="true", plate_diameter_cm=20).json()["nutrition"]
    large = segment(client, PHOTO, nutrition="true", plate_diameter_cm=40).json()["nutrition"]
    assert small["assumptions"]["plate_diameter_source"] == "request"
    assert large["assumptions"]["plate_diameter_cm"] == 40.0
    ratio = large["total"]["grams"]["value"] / small["total"]["grams"]["value"]
    assert ratio == pytest.approx(4.0, rel=0.1)  # area grows with the diameter squared


@pytest.mark.parametrize("bad", ["0", "-3", "4.9", "101", "1e9", "nan", "plate"])
def test_nonsense_plate_diameter_is_422(client: TestClient, bad: str) -> None:
    r = segment(client, PHOTO, nutrition="true", plate_diameter_cm=bad)
    assert r.status_code == 422, r.text
    body = r.json()["error"]
    assert body["code"] == "validation_error"
    assert "plate_diameter_cm" in body["message"]


def test_batch_route_adds_nutrition_per_image(client: TestClient) -> None:
    files = [("files", (f"p{i}.jpg", make_photo(90, 60, seed=i), "image/jpeg")) for i in range(2)]
    files.append(("files", ("bad.jpg", b"not an image", "image/jpeg")))
    r = client.post("/v1/segment/batch", params={"nutrition": "true"}, files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [200, 200, 415]
    for item in results[:2]:
        assert item["result"]["nutrition"]["assumptions"]["plate_diameter_cm"] == 24.0
    plain = client.post("/v1/segment/batch", files=files[:1]).json()
    assert plain["results"][0]["result"]["nutrition"] is None


def test_openapi_documents_the_nutrition_fields(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"]["/v1/segment"]["post"]["parameters"]}
    assert params["nutrition"]["schema"]["type"] == "boolean"
    plate = params["plate_diameter_cm"]["schema"]["anyOf"][0]
    assert (plate["minimum"], plate["maximum"]) == (5, 100)
    batch = {p["name"] for p in spec["paths"]["/v1/segment/batch"]["post"]["parameters"]}
    assert {"nutrition", "plate_diameter_cm"} <= batch
    schemas = spec["components"]["schemas"]
    assert {"NutritionEstimate", "ClassNutrition", "NutrientRange", "NutritionAssumptions"} <= set(
        schemas
    )
    assert set(schemas["ClassNutrition"]["required"]) >= {"grams", "kcal", "broad"}


def _custom_table(tmp_path: Path, old: str, new: str) -> Path:
    path = tmp_path / "custom.csv"
    text = PACKAGED_CSV.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def test_a_custom_table_is_used(
    client: TestClient, serve_models: ServeModels, tmp_path: Path
) -> None:
    # Every food twice as dense: twice the grams of the packaged table's answer.
    import csv
    import io

    lines = PACKAGED_CSV.read_text().splitlines(keepends=True)
    body = "".join(line for line in lines if not line.startswith("#"))
    rows = list(csv.DictReader(io.StringIO(body)))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        row["density_g_cm3"] = str(float(row["density_g_cm3"]) * 2)
        writer.writerow(row)
    path = tmp_path / "dense.csv"
    path.write_text(buf.getvalue())
    packaged = segment(client, PHOTO, nutrition="true").json()["nutrition"]
    settings = ServeSettings(
        model=serve_models.onnx, log_predictions=False, nutrition_table=path, plate_diameter_cm=24
    )
    with _client(settings) as c:
        _wait_ready(c)
        n = segment(c, PHOTO, nutrition="true").json()["nutrition"]
    assert n["assumptions"]["table"]["path"] == str(path)
    ratio = n["total"]["grams"]["value"] / packaged["total"]["grams"]["value"]
    assert ratio == pytest.approx(2.0, rel=0.1)


def test_a_bad_custom_table_stops_start_up(serve_models: ServeModels, tmp_path: Path) -> None:
    path = _custom_table(tmp_path, "\n5,biscuit,467,", "\n5,biscuit,-467,")
    settings = ServeSettings(model=serve_models.onnx, log_predictions=False, nutrition_table=path)
    with pytest.raises(NutritionTableError, match="column energy_kcal: -467 is negative"):
        create_app(settings)


def test_cmi_serve_names_a_bad_table_in_one_line(serve_models: ServeModels, tmp_path: Path) -> None:
    path = _custom_table(tmp_path, "\n7,pudding,142,", "\n7,pudding,lots,")
    out = subprocess.run(
        [sys.executable, "-m", "cmi_cli", "serve", str(serve_models.onnx),
         "--nutrition-table", str(path), "--workers", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0
    text = (out.stdout + out.stderr).strip()
    assert "Traceback" not in text
    assert f"{path}:" in text
    assert "column energy_kcal: 'lots' is not a number" in text


def test_a_table_for_other_classes_is_422(serve_models: ServeModels, tmp_path: Path) -> None:
    path = _custom_table(tmp_path, "\n3,french fries,", "\n3,chips,")
    settings = ServeSettings(model=serve_models.onnx, log_predictions=False, nutrition_table=path)
    with _client(settings) as c:
        _wait_ready(c)
        r = segment(c, PHOTO, nutrition="true")
        assert segment(c, PHOTO).status_code == 200  # without nutrition nothing changes
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "nutrition_unavailable"
    assert "'chips'" in r.json()["error"]["message"]
