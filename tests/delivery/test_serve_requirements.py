"""The serve image installs cmi-cli with --no-deps plus requirements/serve.txt: check that this
list is enough for `cmi serve` (a live server's imports), holds no training library, and agrees
with pyproject.toml."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest's own dependency on 3.10
    import tomli as tomllib

# Training libraries: never in the serve image, so it stays without torch and starts fast.
TRAINING_ONLY = {
    "torch",
    "lightning",
    "pytorch_lightning",
    "torchmetrics",
    "torch_pruning",
    "hydra",
    "omegaconf",
    "dvc",
    "wandb",
    "matplotlib",
    "optuna",
    "onnx",
}
# Drift monitoring's libraries: in the image (GET /v1/drift runs Evidently there), but imported
# only when a drift report is computed, never to start serving.
DRIFT_ONLY = {"pandas", "pyarrow", "evidently", "scipy", "sklearn"}
# What `cmi serve` must not import to answer /v1/segment.
FORBIDDEN = TRAINING_ONLY | DRIFT_ONLY

# Imported by our dependencies only when installed (fastapi.responses tries ujson and orjson;
# sniffio is looked up by async libraries when present): absent from the serve image, harmless.
# The container check (`container-check --target serve --run`) runs the image without them.
OPTIONAL_PROBES = {"orjson", "ujson", "sniffio"}

# Run `cmi` exactly as the console script does, and on exit write the top-level modules the
# process imported (successfully) to the file given in the environment.
WRAPPER = """
import atexit, os, sys
def _dump():
    names = sorted({m.split('.')[0] for m in list(sys.modules)})
    with open(os.environ['CMI_TEST_MODULES_OUT'], 'w') as f:
        f.write('\\n'.join(names))
atexit.register(_dump)
sys.argv = ['cmi', *sys.argv[1:]]
from cmi_cli.__main__ import main
main()
"""


def _requirements(path: Path) -> list[Requirement]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Requirement(x.split("#")[0].strip()) for x in lines if x.split("#")[0].strip()]


def serve_requirements(repo: Path) -> list[Requirement]:
    """The pinned closure the serve image installs (requirements/serve.txt)."""
    return _requirements(repo / "requirements" / "serve.txt")


def serve_inputs(repo: Path) -> list[Requirement]:
    """The top-level requirements serve.txt is compiled from (requirements/serve.in)."""
    return _requirements(repo / "requirements" / "serve.in")


def closure(reqs: list[Requirement]) -> set[str]:
    """Distributions pip installs for ``reqs`` (with their extras), by canonical name."""
    seen: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in reqs]
    while todo:
        req, extras = todo.pop()
        key = canonicalize_name(req.name)
        if req.marker is not None and not any(
            req.marker.evaluate({"extra": e}) for e in (extras or {""})
        ):
            continue
        if key in seen and not extras:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        for sub in dist.requires or []:
            sub_req = Requirement(sub)
            marker = sub_req.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in (extras or {""})):
                sub_req.marker = None
                todo.append((sub_req, frozenset(sub_req.extras)))
    return seen


def module_owners() -> dict[str, set[str]]:
    return {
        mod: {canonicalize_name(d) for d in dists}
        for mod, dists in metadata.packages_distributions().items()
    }


def test_serve_requirements_pinned_and_within_pyproject(repo_root: Path) -> None:
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text(encoding="utf-8"))
    declared = {
        canonicalize_name(r.name): r for r in map(Requirement, pyproject["project"]["dependencies"])
    }
    pins: dict[str, str] = {}
    for req in serve_requirements(repo_root):
        exact = [s.version for s in req.specifier if s.operator == "=="]
        assert exact, f"{req.name} is not pinned in requirements/serve.txt"
        pins[canonicalize_name(req.name)] = exact[0]
    for req in serve_inputs(repo_root):
        name = canonicalize_name(req.name)
        assert name in declared, f"{req.name} is not a dependency in pyproject.toml"
        assert name in pins, f"{req.name} of serve.in has no pin in serve.txt: compile it again"
        assert req.specifier.contains(pins[name]), f"serve.txt pins {req.name}=={pins[name]}"
        assert declared[name].specifier.contains(pins[name]), (
            f"{req.name}=={pins[name]} is outside pyproject.toml's {declared[name]}"
        )


def test_serve_requirements_are_a_closed_lock(repo_root: Path) -> None:
    """Every distribution the pins need is pinned too (what pip installs is what is listed).

    Requirements are read from the metadata installed here, so a distribution is followed
    only where the installed version is the pinned one.
    """
    pins = {
        canonicalize_name(r.name): next(iter(r.specifier)).version
        for r in serve_requirements(repo_root)
    }
    missing: set[str] = set()
    todo = [canonicalize_name(r.name) for r in serve_inputs(repo_root)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in pins:
            missing.add(name)
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version != pins[name]:
            continue
        for sub in map(Requirement, dist.requires or []):
            if sub.marker is None or sub.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(sub.name))
    assert not missing, f"serve.txt lacks {sorted(missing)}: compile it again (see serve.in)"


def test_serve_requirements_hold_no_training_library(repo_root: Path) -> None:
    dists = closure(serve_requirements(repo_root))
    owners = module_owners()
    heavy = {d for mod in TRAINING_ONLY for d in owners.get(mod, set())}
    assert not dists & heavy, f"serve requirements pull in {sorted(dists & heavy)}"
    drift = {d for mod in ("evidently", "pandas") for d in owners.get(mod, set())}
    assert drift <= dists, "the serve image needs Evidently and pandas for /v1/drift"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _multipart(path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    )
    tail = f"\r\n--{boundary}--\r\n"
    return (
        head.encode() + path.read_bytes() + tail.encode(),
        f"multipart/form-data; boundary={boundary}",
    )


@pytest.mark.slow
def test_cmi_serve_imports_only_serve_requirements(
    repo_root: Path, delivery_onnx: Path, tiny_sample_master: Path, tmp_path: Path
) -> None:
    port = _free_port()
    out = tmp_path / "modules.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMI_")}
    env.update(CMI_TEST_MODULES_OUT=str(out), CMI_LOG_DIR=str(tmp_path / "log"))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, "serve", str(delivery_onnx), "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                    assert r.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.communicate()[0].decode()
                assert time.monotonic() < deadline, "no /readyz answer within 60 s"
                time.sleep(0.3)
        photo = sorted((tiny_sample_master / "Images" / "img_dir" / "test").glob("*.jpg"))[0]
        body, ctype = _multipart(photo)
        request = urllib.request.Request(
            f"{base}/v1/segment", data=body, headers={"Content-Type": ctype}
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 200
            assert b'"classes"' in r.read()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            log = proc.communicate(timeout=30)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            log = proc.communicate()[0].decode(errors="replace")
    assert out.is_file(), f"the server wrote no module list; its log:\n{log}"
    imported = set(out.read_text().split())

    forbidden = imported & FORBIDDEN
    assert not forbidden, f"`cmi serve` imported {sorted(forbidden)}"

    allowed = closure(serve_requirements(repo_root))
    owners = module_owners()
    stdlib = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
    outside = {
        mod
        for mod in imported - stdlib - OPTIONAL_PROBES - {"cmi_cli", "__main__", "_distutils_hack"}
        if mod in owners and not owners[mod] & allowed and not re.match(r"^_?__editable__", mod)
    }
    assert not outside, (
        f"`cmi serve` imported {sorted(outside)}, which requirements/serve.txt does not install"
    )
