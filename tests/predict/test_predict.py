"""``cmi predict``: sources, outputs, the table, errors, resume, atomic writes, workers."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _predict_models import CLASS_NAMES, quadrant_photo, softmax_top
from PIL import Image
from typer.testing import CliRunner

from cmi_cli.cli.app import app

runner = CliRunner()


def _photo(path: Path, size: int = 32, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(quadrant_photo(size)).save(path, format=fmt)
    return path


def _run(model: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["predict", str(model), *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def _table(out: Path) -> list[dict[str, str]]:
    with (out / "classes.csv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _errors(out: Path) -> dict[str, str]:
    with (out / "errors.csv").open(encoding="utf-8") as fh:
        return {row["path"]: row["reason"] for row in csv.DictReader(fh)}


def _images(out: Path) -> list[str]:
    return list(dict.fromkeys(r["image"] for r in _table(out)))


def test_folder_with_a_broken_file_predicts_the_rest(colour_onnx: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    good = [_photo(photos / "a.png"), _photo(photos / "sub" / "b.jpg")]
    broken = photos / "c.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a JPEG")
    out = tmp_path / "out"
    code, output = _run(colour_onnx, str(photos), "--out", str(out))
    assert code == 0, output
    assert "predicted 2 photos" in output
    assert "1 failed" in output
    errors = _errors(out)
    assert list(errors) == [str(broken)]
    assert "not an image" in errors[str(broken)]
    assert _images(out) == [str(p) for p in good]
    assert len(list((out / "masks").glob("*.png"))) == 2
    assert len(list((out / "overlays").glob("*.jpg"))) == 2
    manifest = json.loads((out / "predict.json").read_text())
    assert manifest["photos"] == {"found": 3, "predicted": 2, "skipped_done": 0, "failed": 1}
    assert manifest["model"]["name"] == "colour"


def test_all_photos_broken_exits_1_with_one_line(colour_onnx: Path, tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "x.png").write_bytes(b"")
    code, output = _run(colour_onnx, str(tmp_path / "p"), "--out", str(tmp_path / "out"))
    assert code == 1
    assert "none of the 1 photos could be predicted" in output
    assert "Traceback" not in output
    assert list(_errors(tmp_path / "out")) == [str(tmp_path / "p" / "x.png")]


def test_missing_source_and_bad_options_are_usage_errors(colour_onnx: Path, tmp_path: Path) -> None:
    code, output = _run(colour_onnx, str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert code == 2
    assert "does not exist" in output
    _photo(tmp_path / "a.png")
    code, output = _run(colour_onnx, str(tmp_path / "a.png"), "--save", "mask,pdf")
    assert code == 2
    assert "pdf" in output
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output = _run(colour_onnx, str(empty), "--out", str(tmp_path / "o"))
    assert code == 2
    assert "no photos found" in output


def test_every_source_kind(colour_onnx: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    single = _photo(tmp_path / "single.png")
    folder = tmp_path / "folder"
    nested = [_photo(folder / "x" / "y" / "deep.jpg"), _photo(folder / "top.webp", fmt="WEBP")]
    (folder / "notes.md").write_text("not a photo")
    _photo(folder / ".hidden" / "skip.png")
    globbed = [_photo(tmp_path / "g" / f"{i}.png") for i in range(2)]
    listed = _photo(tmp_path / "listed" / "l.png")
    listing = tmp_path / "listed" / "files.txt"
    listing.write_text("# photos to predict\nl.png\n\nmissing.png\n")
    buf = io.BytesIO()
    Image.fromarray(quadrant_photo()).save(buf, format="PNG")
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = pa.array(
        [{"bytes": buf.getvalue(), "path": "0.png"}, {"bytes": b"", "path": ""}], struct
    )
    parquet = tmp_path / "validation-00000-of-00001.parquet"
    pq.write_table(pa.table({"image": images}), parquet)

    out = tmp_path / "out"
    sources = [str(single), str(folder), str(tmp_path / "g" / "*.png"), str(listing), str(parquet)]
    code, output = _run(colour_onnx, *sources, "--out", str(out), "--save", "mask,table")
    assert code == 0, output
    expected = [single, *sorted(nested), *globbed, listed]
    assert _images(out) == [str(p) for p in expected] + [f"{parquet}#0"]
    errors = _errors(out)
    assert "not found" in errors["missing.png"]
    assert f"{parquet}#1" in errors
    assert not (out / "overlays").exists()
    assert len(list((out / "masks").glob("*.png"))) == len(expected) + 1


def test_table_values_on_a_known_photo(colour_onnx: Path, tmp_path: Path) -> None:
    photo = _photo(tmp_path / "q.png", size=32)
    out = tmp_path / "out"
    code, output = _run(colour_onnx, str(photo), "--out", str(out))
    assert code == 0, output
    rows = {int(r["class_id"]): r for r in _table(out)}
    assert sorted(rows) == [0, 1, 2]
    assert [rows[i]["class_name"] for i in range(3)] == CLASS_NAMES
    assert [int(rows[i]["pixels"]) for i in range(3)] == [256, 512, 256]
    assert [float(rows[i]["share_of_image"]) for i in range(3)] == [0.25, 0.5, 0.25]
    assert rows[0]["share_of_plate"] == ""  # background is not on the plate
    plate = [float(rows[i]["share_of_plate"]) for i in (1, 2)]
    assert plate == pytest.approx([2 / 3, 1 / 3])
    assert sum(plate) == pytest.approx(1.0)
    assert float(rows[1]["mean_confidence"]) == pytest.approx(softmax_top([0, 4, -12]), rel=1e-5)
    assert float(rows[0]["mean_confidence"]) == pytest.approx(softmax_top([0, -4, -4]), rel=1e-5)
    import pyarrow.parquet as pq

    table = pq.read_table(out / "classes.parquet").to_pylist()
    assert [r["pixels"] for r in table] == [256, 512, 256]
    assert table[0]["share_of_plate"] is None
    # The mask is a palette PNG whose values are the class ids, in the class colours.
    (mask_file,) = (out / "masks").glob("*.png")
    with Image.open(mask_file) as img:
        assert img.mode == "P"
        ids = np.asarray(img)
        palette = img.getpalette()
    assert (
        ids == np.where(quadrant_photo(32)[..., 0] > 0, 1, 0) + (quadrant_photo(32)[..., 1] > 0) * 2
    ).all()
    from cmi_cli.classes import class_colors

    assert palette is not None
    assert tuple(palette[3:6]) == class_colors(3)[1]


def test_masks_are_at_photo_size_and_names_never_collide(colour_onnx: Path, tmp_path: Path) -> None:
    a = _photo(tmp_path / "a" / "x.jpg", size=32)
    b = tmp_path / "b" / "x.jpg"
    b.parent.mkdir()
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(b)
    c = _photo(tmp_path / "a" / "x.png", size=32)
    out = tmp_path / "out"
    code, output = _run(colour_onnx, str(a), str(b), str(c), "--out", str(out))
    assert code == 0, output
    masks = sorted((out / "masks").glob("*.png"))
    assert len(masks) == 3
    assert len({m.name for m in masks}) == 3
    sizes = {}
    for rec in map(json.loads, (out / "journal.jsonl").read_text().splitlines()):
        with Image.open(out / "masks" / f"{rec['name']}.png") as img:
            sizes[rec["image"]] = img.size
    assert sizes[str(b)] == (50, 30)
    assert {r["width"] for r in _table(out) if r["image"] == str(b)} == {"50"}


def test_resume_skips_done_photos_and_keeps_one_row_each(colour_onnx: Path, tmp_path: Path) -> None:
    photos = [_photo(tmp_path / "p" / f"{i}.png") for i in range(4)]
    out = tmp_path / "out"
    assert _run(colour_onnx, str(tmp_path / "p"), "--out", str(out))[0] == 0
    first = _table(out)
    masks = {m.name: m.stat().st_mtime_ns for m in (out / "masks").glob("*.png")}
    # One photo lost its overlay, and the journal's last line was torn by a crash.
    rec = json.loads((out / "journal.jsonl").read_text().splitlines()[2])
    (out / "overlays" / f"{rec['name']}.jpg").unlink()
    with (out / "journal.jsonl").open("a") as fh:
        fh.write('{"image": "torn')
    code, output = _run(colour_onnx, str(tmp_path / "p"), "--out", str(out), "--resume")
    assert code == 0, output
    assert "predicted 1 photos" in output
    assert "3 already done" in output
    assert _table(out) == first
    assert _images(out) == [str(p) for p in photos]
    after = {m.name: m.stat().st_mtime_ns for m in (out / "masks").glob("*.png")}
    changed = [name for name in masks if after[name] != masks[name]]
    assert changed == [f"{rec['name']}.png"]
    # Asking for more than was saved before redoes the photos that lack it.
    new = _photo(tmp_path / "p" / "9.png")
    code, output = _run(colour_onnx, str(tmp_path / "p"), "--out", str(out), "--resume")
    assert "predicted 1 photos" in output
    assert "4 already done" in output
    assert _images(out) == [str(p) for p in photos] + [str(new)]


def test_outputs_are_atomic_when_a_write_fails(
    colour_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _photo(tmp_path / "p" / "a.png")
    out = tmp_path / "out"
    real_save = Image.Image.save

    def failing_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        if str(fp).endswith(".jpg"):
            Path(str(fp)).write_bytes(b"\xff\xd8 half a JPEG")
            raise OSError(28, "No space left on device")
        real_save(self, fp, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "save", failing_save)
    code, output = _run(colour_onnx, str(tmp_path / "p"), "--out", str(out))
    assert code == 1
    assert "No space left on device" in output
    assert "Traceback" not in output
    assert not list((out / "overlays").iterdir())  # neither the half file nor a temporary
    assert not list(out.rglob(".*"))
    assert (out / "classes.csv").read_text().count("\n") == 1  # the table, with no photo yet
    monkeypatch.setattr(Image.Image, "save", real_save)
    code, output = _run(colour_onnx, str(tmp_path / "p"), "--out", str(out), "--resume")
    assert code == 0
    assert "predicted 1 photos" in output


def _predict_tables(model: Path, photos: Path, out: Path, *args: str) -> str:
    code, output = _run(model, str(photos), "--out", str(out), "--save", "mask,table", *args)
    assert code == 0, output
    return (out / "classes.csv").read_text()


def _varied_photos(root: Path, n: int = 7) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = rng.integers(20, 60, size=2)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / f"{i}.png")
    (root / "bad.png").write_bytes(b"garbage")
    return root


def test_batch_size_and_thread_workers_give_identical_tables(
    colour_onnx: Path, tmp_path: Path
) -> None:
    (tmp_path / "p").mkdir()
    photos = _varied_photos(tmp_path / "p")
    base = _predict_tables(colour_onnx, photos, tmp_path / "o1", "--batch-size", "1")
    assert base.count("\n") > 7
    assert _predict_tables(colour_onnx, photos, tmp_path / "o3", "--batch-size", "3") == base
    threaded = _predict_tables(
        colour_onnx,
        photos,
        tmp_path / "ot",
        "--batch-size",
        "2",
        "--workers",
        "3",
        "--pool",
        "thread",
    )
    assert threaded == base


@pytest.mark.slow
def test_worker_processes_give_identical_tables(colour_onnx: Path, tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    photos = _varied_photos(tmp_path / "p")
    base = _predict_tables(colour_onnx, photos, tmp_path / "o1")
    many = _predict_tables(
        colour_onnx,
        photos,
        tmp_path / "o2",
        "--batch-size",
        "2",
        "--workers",
        "2",
        "--pool",
        "process",
    )
    assert many == base
    assert _errors(tmp_path / "o2") == _errors(tmp_path / "o1")


NO_TORCH_SCRIPT = """
import json, sys
from typer.testing import CliRunner
from cmi_cli.cli.app import app
result = CliRunner().invoke(app, ["predict", *sys.argv[1:]])
heavy = ("lightning", "dvc", "wandb", "pandas")
print(json.dumps({"code": result.exit_code, "torch": "torch" in sys.modules,
                  "heavy": sorted(m for m in heavy if m in sys.modules),
                  "output": result.output}))
"""


def test_onnx_path_never_imports_torch(colour_onnx: Path, tmp_path: Path) -> None:
    photo = _photo(tmp_path / "a.png")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_TORCH_SCRIPT,
            str(colour_onnx),
            str(photo),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, report["output"]
    assert (report["torch"], report["heavy"]) == (False, [])
    assert (tmp_path / "o" / "classes.parquet").is_file()


def test_torch_backend_on_a_checkpoint_matches_its_onnx_export(tiny_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from cmi_cli.data.layout import open_dataset

    source = open_dataset(tiny_run.root / "data" / "foodseg103")
    photos = [item.image for item in source.items("test")[:3]]
    args = [str(p) for p in photos]
    code, output = _run(tiny_run.ckpt, *args, "--backend", "torch", "--out", str(tmp_path / "t"))
    assert code == 0, output
    code, output = _run(tiny_run.onnx, *args, "--out", str(tmp_path / "o"))
    assert code == 0, output
    torch_rows, onnx_rows = _table(tmp_path / "t"), _table(tmp_path / "o")
    assert [r["class_id"] for r in torch_rows] == [r["class_id"] for r in onnx_rows]
    for t, o in zip(torch_rows, onnx_rows, strict=True):
        assert abs(int(t["pixels"]) - int(o["pixels"])) <= 0.01 * int(t["width"]) * int(t["height"])
    code, output = _run(tiny_run.ckpt, *args, "--out", str(tmp_path / "x"))
    assert code != 0
    assert "--backend torch" in output


def test_progress_is_plain_lines_with_images_per_second_off_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cmi_cli.predict.runner import _Progress

    progress = _Progress(total=10, show=True, every_s=0)
    progress.advance(4)
    progress.advance(6)
    progress.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("predict: 4/10 photos, ")
    assert lines[1].startswith("predict: 10/10 photos, ")
    assert lines[1].endswith(" images/s")
    quiet = _Progress(total=10, show=False, every_s=0)
    quiet.advance(10)
    assert capsys.readouterr().err == ""


def test_a_static_one_photo_export_is_run_one_photo_at_a_time(tmp_path: Path) -> None:
    from _predict_models import colour_model

    model = colour_model(tmp_path / "static.onnx", batch=1)
    for i in range(3):
        _photo(tmp_path / "p" / f"{i}.png")
    code, output = _run(
        model, str(tmp_path / "p"), "--batch-size", "8", "--out", str(tmp_path / "o")
    )
    assert code == 0, output
    assert "static export for one photo" in output
    assert "predicted 3 photos" in output


def test_an_output_folder_inside_the_source_is_not_read_as_photos(
    colour_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _photo(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        code, output = _run(colour_onnx, ".", "--out", "out", "--resume")
        assert code == 0, output
    assert "1 already done" in output
    assert _images(tmp_path / "out") == [str(tmp_path / "a.png")]


def _diagonal_photo(width: int, height: int) -> np.ndarray:
    """Red below the diagonal from the top-left to the bottom-right corner, green above it."""
    ys, xs = np.mgrid[0:height, 0:width]
    green = xs * height > ys * width
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = np.where(green, 0, 255)
    rgb[..., 1] = np.where(green, 255, 0)
    return rgb


def test_masks_are_upsampled_from_logits_without_blocky_edges(
    colour_onnx: Path, tmp_path: Path
) -> None:
    # 203 x 197 is no multiple of the model's 32 px: each model pixel covers about 6 x 6.
    width, height = 203, 197
    photo = tmp_path / "diagonal.png"
    Image.fromarray(_diagonal_photo(width, height)).save(photo)
    out = tmp_path / "out"
    code, output = _run(colour_onnx, str(photo), "--out", str(out), "--save", "mask,table")
    assert code == 0, output
    (mask_file,) = (out / "masks").glob("*.png")
    with Image.open(mask_file) as img:
        mask = np.asarray(img)
    assert mask.shape == (height, width)
    # The colour model calls the mixed red-green pixels on the edge dark (background).
    assert {1, 2} <= set(np.unique(mask).tolist())
    # Where green starts in each row of the middle half (the borders clamp to the edge): the
    # diagonal moves about one photo pixel per row; a 32 px mask enlarged with nearest
    # neighbours would stay put for ~6 rows and then jump ~6 pixels.
    middle = mask[height // 4 : 3 * height // 4]
    starts = np.array([int(np.argmax(row == 2)) for row in middle])
    assert np.abs(np.diff(starts)).max() <= 2
    ideal = (np.arange(height // 4, 3 * height // 4) * width) // height
    # It follows the diagonal, a few pixels right of it (the dark band of mixed pixels).
    assert np.ptp(starts - ideal) <= 3
    assert np.abs(starts - ideal).max() <= 8
    rows = _table(out)
    assert sum(int(r["pixels"]) for r in rows) == width * height


NUTRITION_HEADER = (
    "class_id,class_name,energy_kcal,protein_g,carbohydrate_g,fibre_g,fat_g,alcohol_g,"
    "thickness_low_cm,thickness_high_cm,density_g_cm3,broad,source,source_food\n"
)


def _colour_table(path: Path, red_kcal: str = "165") -> Path:
    """A nutrition table for the colour model's classes (165 = 4*10 + 4*20 + 9*5 kcal)."""
    path.write_text(
        NUTRITION_HEADER
        + f"1,red,{red_kcal},10,20,0,5,0,1,2,0.8,0,test,red food\n"
        + "2,green,25,2,4,1,0.2,0,0.5,1,0.5,1,test,green food\n"
    )
    return path


def test_nutrition_columns_equal_the_nutrition_estimate(colour_onnx: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from cmi_cli.nutrition import estimate_nutrition, load_nutrition_table
    from cmi_cli.predict.nutrition import NUTRITION_COLUMNS, TOTALS_COLUMNS

    photo = _photo(tmp_path / "q.png", size=48)
    plain = tmp_path / "plain"
    assert _run(colour_onnx, str(photo), "--out", str(plain))[0] == 0
    assert not set(NUTRITION_COLUMNS) & set(_table(plain)[0])
    assert not (plain / "totals.csv").exists()
    assert "area_cm2" not in pq.read_table(plain / "classes.parquet").column_names

    table_path = _colour_table(tmp_path / "colour.csv")
    out = tmp_path / "out"
    args = ["--nutrition", "--nutrition-table", str(table_path), "--plate-diameter-cm", "24"]
    code, output = _run(colour_onnx, str(photo), "--out", str(out), *args)
    assert code == 0, output
    rows = {int(r["class_id"]): r for r in _table(out)}
    (mask_file,) = (out / "masks").glob("*.png")
    with Image.open(mask_file) as img:
        mask = np.asarray(img)
    expected = estimate_nutrition(
        mask,
        CLASS_NAMES,
        24.0,
        load_nutrition_table(table_path),
        confidence={i: float(r["mean_confidence"]) for i, r in rows.items()},
    )
    assert {c.class_id for c in expected.classes} == {1, 2}
    for record in expected.records():
        row = rows[record["class_id"]]
        for col in NUTRITION_COLUMNS[:-5]:  # the amounts; broad and assumptions below
            assert float(row[col]) == record[col], col
        assert row["broad"] == str(record["broad"])
        assert float(row["plate_diameter_cm"]) == 24.0
        assert row["plate_diameter_source"] == "option"
    assert float(rows[1]["kcal"]) > 0
    assert all(rows[0][col] == "" for col in NUTRITION_COLUMNS)  # background: no food
    parquet = {r["class_id"]: r for r in pq.read_table(out / "classes.parquet").to_pylist()}
    assert parquet[2]["grams_high"] == float(rows[2]["grams_high"])
    assert parquet[2]["broad"] is True
    assert parquet[0]["kcal"] is None
    with (out / "totals.csv").open(encoding="utf-8") as fh:
        (total,) = list(csv.DictReader(fh))
    assert list(total) == list(TOTALS_COLUMNS)
    assert total["image"] == str(photo)
    for key, value in expected.total_record().items():
        assert float(total[key]) == value, key
    assert pq.read_table(out / "totals.parquet").to_pylist()[0]["kcal"] == float(total["kcal"])
    manifest = json.loads((out / "predict.json").read_text())
    assert manifest["nutrition"]["plate_diameter_cm"] == 24.0
    assert manifest["nutrition"]["table"]["path"] == str(table_path)
    # Another plate size redoes the photo on --resume; the grams scale with the area.
    code, output = _run(colour_onnx, str(photo), "--out", str(out), "--resume", *args[:3],
                        "--plate-diameter-cm", "48")  # fmt: skip
    assert "predicted 1 photos" in output
    bigger = {int(r["class_id"]): r for r in _table(out)}
    assert float(bigger[1]["area_cm2"]) == pytest.approx(4 * float(rows[1]["area_cm2"]), rel=0.05)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("negative", "column energy_kcal: -165 is negative"),
        ("missing_class", "no row for class id 2 ('green')"),
        ("absent", "cannot read it"),
    ],
)
def test_a_bad_nutrition_table_fails_before_any_photo(
    colour_onnx: Path, tmp_path: Path, table: str, message: str
) -> None:
    photo = _photo(tmp_path / "q.png")
    path = tmp_path / "bad.csv"
    if table == "negative":
        _colour_table(path, red_kcal="-165")
    elif table == "missing_class":
        path.write_text(NUTRITION_HEADER + "1,red,165,10,20,0,5,0,1,2,0.8,0,test,red food\n")
    out = tmp_path / "out"
    code, output = _run(colour_onnx, str(photo), "--out", str(out), "--nutrition",
                        "--nutrition-table", str(path))  # fmt: skip
    assert code != 0
    assert message in output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) <= 2  # the error and its hint
    assert not list(out.rglob("*.png"))
    assert not (out / "journal.jsonl").exists() or not (out / "journal.jsonl").read_text()


def test_nutrition_options_need_nutrition(colour_onnx: Path, tmp_path: Path) -> None:
    photo = _photo(tmp_path / "q.png")
    code, output = _run(colour_onnx, str(photo), "--plate-diameter-cm", "30")
    assert code == 2
    assert "need --nutrition" in output
    code, output = _run(colour_onnx, str(photo), "--nutrition", "--plate-diameter-cm", "300")
    assert code == 2
    assert "300" in output
