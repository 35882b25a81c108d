"""The deployment files (Dockerfile, Cloud Run, Cloud Build, Vertex AI, GitHub Actions) parse,
agree with each other, with the Dockerfile and with `cmi serve`'s settings, and every `cmi`
command they call exists with the options they pass."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

REPO = Path(__file__).resolve().parents[2]
# The repository's own workflows, and the one `cmi init` writes into every project.
PROJECT_WORKFLOW = REPO / "cmi_cli" / "resources" / "project" / "github" / "data-change.yml"
WORKFLOWS = [*sorted((REPO / ".github" / "workflows").glob("*.yml")), PROJECT_WORKFLOW]
GCP = REPO / "deploy" / "gcp"


def tool(name: str) -> str | None:
    """A command on PATH or in this interpreter's environment (an unactivated venv)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    return found


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_toml(path: Path) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pytest's own dependency on 3.10
        import tomli as tomllib
    return tomllib.loads(path.read_text(encoding="utf-8"))


# ---- the Dockerfile ---------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined)."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n\s*", " ", text)
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match[2] or match[1], [])
        current.append(line)
    return stages


def stage_env(stage: str) -> dict[str, str]:
    """ENV values a stage sets (including those of the stages it is built FROM)."""
    stages = dockerfile_stages()
    env: dict[str, str] = {}
    lines = stages[stage]
    parent = lines[0].split()[1]
    if parent in stages:
        env.update(stage_env(parent))
    for line in lines:
        if line.upper().startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line[4:])))
    return env


def stage_user(stage: str) -> str | None:
    stages = dockerfile_stages()
    users = [line.split()[1] for line in stages[stage] if line.upper().startswith("USER ")]
    if users:
        return users[-1]
    parent = stages[stage][0].split()[1]
    return stage_user(parent) if parent in stages else None


def serve_settings_env() -> set[str]:
    from cmi_cli.serving.settings import ServeSettings

    return {f"CMI_{name.upper()}" for name in ServeSettings.model_fields}


def serve_default(name: str) -> Any:
    from cmi_cli.serving.settings import ServeSettings

    return ServeSettings.model_fields[name].default


def app_paths() -> set[str]:
    """Every path the service answers on, from its routers (no model needed)."""
    import importlib
    import pkgutil

    import cmi_cli.serving.routes as routes

    paths: set[str] = set()
    for info in pkgutil.iter_modules(routes.__path__):
        router = getattr(importlib.import_module(f"{routes.__name__}.{info.name}"), "router", None)
        paths |= {r.path for r in getattr(router, "routes", [])}
    return paths


def test_dockerfile_targets_and_base() -> None:
    stages = dockerfile_stages()
    assert {"serve", "train", "serve-model"} <= set(stages)
    bases = {lines[0].split()[1] for lines in stages.values()} - set(stages)
    for base in bases:
        # pinned by version: python:3.X.Y-slim-..., never a floating tag
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim(-\w+)?", base), base


@pytest.mark.parametrize("stage", ["serve", "train"])
def test_images_run_as_non_root_from_a_venv(stage: str) -> None:
    user = stage_user(stage)
    assert user is not None
    assert user.split(":")[0] not in {"0", "root"}
    env = stage_env(stage)
    assert env["VIRTUAL_ENV"] == "/opt/venv"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_serve_image_has_no_torch_and_a_healthcheck_on_readyz() -> None:
    stages = dockerfile_stages()
    serve = " ".join(stages["serve"] + stages["serve-venv"] + stages["serve-deps"])
    assert "torch" not in serve
    assert "--no-deps" in serve
    assert "serve.txt" in serve
    health = [x for x in dockerfile_stages()["serve"] if x.upper().startswith("HEALTHCHECK")]
    assert health
    assert "/readyz" in health[0]
    assert "/readyz" in app_paths()


def test_serve_image_env_is_serve_settings() -> None:
    env = stage_env("serve")
    cmi_vars = {k for k in env if k.startswith("CMI_")}
    assert cmi_vars <= serve_settings_env(), cmi_vars - serve_settings_env()
    assert env["CMI_HOST"] == "0.0.0.0"
    exposed = [x.split()[1] for x in dockerfile_stages()["serve"] if x.upper().startswith("EXPOSE")]
    assert exposed == [env["CMI_PORT"]]
    model = Path(env["CMI_MODEL"])
    assert model.suffix == ".onnx"
    baked = [x for x in dockerfile_stages()["serve-model"] if x.upper().startswith("COPY")]
    assert baked
    assert baked[0].split()[-1] == env["CMI_MODEL"]


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied: set[str] = set()
    for lines in dockerfile_stages().values():
        for line in lines:
            parts = line.split()
            if parts[0].upper() == "COPY" and not any(p.startswith("--from") for p in parts):
                copied |= {p.rstrip("/") for p in parts[1:-1] if not p.startswith("--")}
    copied.discard("${MODEL}")
    for path in copied:
        assert any(path == k or path.startswith(k + "/") for k in kept), path
        assert (REPO / path).exists(), path


@pytest.mark.parametrize("image", ["serve", "train"])
def test_dependencies_are_installed_before_the_code_with_a_cache(image: str) -> None:
    """A code change rebuilds the wheel and one layer, never the dependency layer."""
    stages = dockerfile_stages()
    deps = stages[f"{image}-deps"]
    assert deps[0].split()[1] == "base", "the dependency stage must not start from the code"
    assert not any("--from=wheel" in line or "cmi_cli" in line for line in deps)
    installs = [line for line in deps if line.upper().startswith("RUN") and "pip install" in line]
    assert installs
    assert all("--mount=type=cache,target=/root/.cache/pip" in line for line in installs)
    lock = f"requirements/{image}.txt"
    assert any(line.startswith("COPY") and lock in line for line in deps)
    assert stages[f"{image}-venv"][0].split()[1] == f"{image}-deps"
    # the project goes in without resolving anything: all of it is in the lock
    assert any("--no-deps /wheels/" in line for line in stages[f"{image}-venv"])


def test_train_lock_pins_every_dependency_with_a_cpu_torch() -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pyproject = load_toml(REPO / "pyproject.toml")
    lines = (REPO / "requirements" / "train.txt").read_text(encoding="utf-8").splitlines()
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            exact = [spec.version for spec in req.specifier if spec.operator == "=="]
            assert exact, f"{line} is not pinned"
            pins[canonicalize_name(req.name)] = exact[0]
    assert pins["torch"].endswith("+cpu")
    for dep in [
        *pyproject["project"]["dependencies"],
        *pyproject["project"]["optional-dependencies"]["gcp"],
    ]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pins, (
            f"{req.name} is missing from requirements/train.txt: run requirements/lock"
        )
        assert req.specifier.contains(pins[name].split("+")[0]), f"{name}=={pins[name]} vs {req}"
    assert not [name for name in pins if name.startswith("nvidia-")], "CUDA libraries in the lock"


@pytest.mark.skipif(tool("hadolint") is None, reason="hadolint is not installed")
def test_hadolint_passes() -> None:
    hadolint = str(tool("hadolint"))
    run = subprocess.run([hadolint, "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


# ---- Cloud Run, Cloud Build, Vertex AI -------------------------------------------------------


def cloud_run() -> dict[str, Any]:
    return load(GCP / "cloud-run-service.yaml")


def test_cloud_run_manifest_matches_image_and_settings() -> None:
    service = cloud_run()
    assert service["apiVersion"] == "serving.knative.dev/v1"
    assert service["kind"] == "Service"
    template = service["spec"]["template"]
    (container,) = template["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    image_env = stage_env("serve")
    port = int(container["ports"][0]["containerPort"])
    assert port == int(env["CMI_PORT"]) == int(image_env["CMI_PORT"])
    assert env["CMI_HOST"] == "0.0.0.0"
    # every CMI_ variable is a serve setting, or the key variable CMI_API_KEY_ENV names
    key_var = env.get("CMI_API_KEY_ENV")
    assert {k for k in env if k.startswith("CMI_")} - {key_var} <= serve_settings_env()
    if key_var:
        assert any(e["name"] == key_var and "valueFrom" in e for e in container["env"])
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert Path(env["CMI_MODEL"]).parent == Path(mount["models"])
    assert Path(image_env["CMI_MODEL"]).parent == Path(mount["models"])
    paths = app_paths()
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == port
        assert container[probe]["httpGet"]["path"] in paths
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    annotations = template["metadata"]["annotations"]
    assert int(annotations["autoscaling.knative.dev/minScale"]) >= 1
    assert int(annotations["autoscaling.knative.dev/minScale"]) <= int(
        annotations["autoscaling.knative.dev/maxScale"]
    )
    assert template["spec"]["containerConcurrency"] >= 1
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Z_]+)\}", text))


def test_manifest_placeholders_are_filled_by_every_deployer() -> None:
    needed = placeholders((GCP / "cloud-run-service.yaml").read_text(encoding="utf-8"))
    build = load(GCP / "cloudbuild.yaml")
    script = next(s for s in build["steps"] if s["id"] == "deploy")["args"][-1]
    assert set(re.findall(r"s\|\\\$\$\{([A-Z_]+)\}\|", script)) == needed
    registry = load(REPO / ".github" / "workflows" / "model-registry.yml")
    deploy = registry["jobs"]["deploy-staging"]
    run = next(s["run"] for s in deploy["steps"] if "envsubst" in s.get("run", ""))
    listed = re.search(r"envsubst '([^']+)'", run)
    assert listed
    assert placeholders(listed[1]) == needed
    assert needed <= set(deploy["env"])


def test_cloudbuild_builds_dockerfile_targets_into_the_manifest_repository() -> None:
    build = load(GCP / "cloudbuild.yaml")
    stages = dockerfile_stages()
    repo = build["substitutions"]["_REPOSITORY"]
    targets = set()
    for step in build["steps"]:
        args = step.get("args", [])
        if args[:1] == ["build"]:
            target = next(a.split("=", 1)[1] for a in args if a.startswith("--target="))
            assert target in stages
            targets.add(target)
            for tag in (a.split("=", 1)[1] for a in args if a.startswith("--tag=")):
                prefix = "${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_REPOSITORY}/"
                assert tag.startswith(f"{prefix}{target}:")
    assert targets == {"serve", "train"}
    image = cloud_run()["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"${{REGION}}-docker.pkg.dev/${{PROJECT_ID}}/{repo}/serve:${{TAG}}"
    vertex = load(GCP / "vertex-train-job.yaml")
    for pool in vertex["workerPoolSpecs"]:
        assert pool["containerSpec"]["imageUri"].endswith(f"/{repo}/train:${{TAG}}")


def _cloud_build_substitute(text: str, values: dict[str, str]) -> str:
    """What Cloud Build does to a value: $X and ${X} from `values`, $$ a literal $."""
    return re.sub(
        r"\$\$|\$\{(\w+)\}|\$(\w+)",
        lambda m: "$" if m[0] == "$$" else values.get(m[1] or m[2], ""),
        text,
    )


@pytest.mark.parametrize(
    "builtins",
    [
        {"PROJECT_ID": "p", "BUILD_ID": "0d1c2b3a-4e5f"},  # `gcloud builds submit` by hand
        {"PROJECT_ID": "p", "BUILD_ID": "0d1c2b3a-4e5f", "SHORT_SHA": "abc1234"},  # a trigger
    ],
    ids=["manual", "triggered"],
)
def test_cloudbuild_image_tags_are_never_empty(builtins: dict[str, str]) -> None:
    build = load(GCP / "cloudbuild.yaml")
    # dynamicSubstitutions: user substitutions may use the built-in ones.
    values = dict(builtins)
    values.update(
        {k: _cloud_build_substitute(v, builtins) for k, v in build["substitutions"].items()}
    )
    tags = [
        _cloud_build_substitute(a.split("=", 1)[1], values)
        for step in build["steps"]
        for a in step.get("args", [])
        if a.startswith("--tag=")
    ] + [_cloud_build_substitute(image, values) for image in build.get("images", [])]
    assert tags
    for tag in tags:
        # Docker's tag grammar: 1-128 of [A-Za-z0-9_.-], not starting with . or -
        assert re.fullmatch(r".+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag), tag


def test_docker_workflow_pushes_dockerfile_targets_with_wif() -> None:
    flow = load(REPO / ".github" / "workflows" / "docker.yml")
    job = flow["jobs"]["image"]
    assert set(job["strategy"]["matrix"]["target"]) == {"serve", "train"}
    assert job["env"]["IMAGE"].endswith("/cmi/${{ matrix.target }}")
    text = (REPO / ".github" / "workflows" / "docker.yml").read_text(encoding="utf-8")
    assert "workload_identity_provider" in text
    assert "credentials_json" not in text
    assert flow["permissions"]["id-token"] == "write"


def test_vertex_job_runs_the_train_entry_with_valid_overrides(tmp_path: Path) -> None:
    from cmi_cli.config import compose_train_config

    vertex = load(GCP / "vertex-train-job.yaml")
    pools = vertex["workerPoolSpecs"]
    assert pools[0]["replicaCount"] == 1
    specs = [p["containerSpec"] for p in pools]
    assert all(s == specs[0] for s in specs)
    spec = specs[0]
    copied = [x for x in dockerfile_stages()["train"] if "vertex-train.sh" in x]
    assert copied
    assert copied[0].split()[-1] == spec["command"][0]
    env = {e["name"] for e in spec["env"]}
    script = (GCP / "vertex-train.sh").read_text(encoding="utf-8")
    assert "CMI_PROJECT_GIT" in env
    assert env <= set(re.findall(r"\b([A-Z][A-Z0-9_]+)\b", script)) | {"WANDB_PROJECT"}
    # the overrides the job passes, plus those the script adds, compose into a valid config
    overrides = [*spec["args"], "run.name=x", "trainer.num_nodes=2"]
    cfg = compose_train_config(overrides, project_root=tmp_path)
    assert cfg.trainer.devices == pools[0]["machineSpec"]["acceleratorCount"]
    assert cfg.trainer.num_nodes == 2


@pytest.mark.skipif(tool("shellcheck") is None, reason="shellcheck is not installed")
def test_deploy_scripts_pass_shellcheck() -> None:
    scripts = [
        GCP / "vertex-train.sh",
        *sorted((REPO / "deploy").glob("*.sh")),
        REPO / "requirements" / "lock",
    ]
    run = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout


# ---- GitHub Actions ---------------------------------------------------------------------------


def test_workflows_exist_and_parse() -> None:
    names = {p.stem for p in WORKFLOWS}
    assert {"ci", "docker", "data-change", "model-registry", "docs", "release"} <= names
    for path in WORKFLOWS:
        flow = load(path)
        assert flow["jobs"], path.name
        # PyYAML reads the `on:` key as True
        assert flow.get("on", flow.get(True)), path.name


def test_ci_matrix_and_concurrency() -> None:
    flow = load(REPO / ".github" / "workflows" / "ci.yml")
    assert flow["concurrency"]["cancel-in-progress"] is True
    matrix = flow["jobs"]["tests"]["strategy"]["matrix"]
    assert set(matrix["os"]) == {"ubuntu-latest", "macos-latest", "windows-latest"}
    assert matrix["python"] == ["3.11", "3.12", "3.13"]
    assert len(matrix["torch"]) == 2
    text = (REPO / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    for needed in ("cache: pip", "--cov", "ruff format --check", "mypy", "pre-commit run"):
        assert needed in text, needed


def test_triggers() -> None:
    def on(name: str) -> Any:
        path = next(p for p in WORKFLOWS if p.stem == name)
        flow = load(path)
        return flow.get("on", flow.get(True))

    assert {"data/**.dvc", "dvc.lock", "params.yaml"} <= set(on("data-change")["push"]["paths"])
    assert on("model-registry")["repository_dispatch"]["types"] == ["model-registry"]
    assert "workflow_dispatch" in on("model-registry")
    assert on("release")["push"]["tags"] == ["v*"]
    release = (REPO / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8")
    assert "pypa/gh-action-pypi-publish" in release
    assert "password" not in release


@pytest.mark.skipif(tool("actionlint") is None, reason="actionlint is not installed")
def test_actionlint_passes() -> None:
    run = subprocess.run(
        [str(tool("actionlint")), *map(str, WORKFLOWS)], cwd=REPO, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


# ---- every `cmi` call in these files is a real command with real options -----------------------

STOP = {">", ">>", "2>&1", "&", "|", "&&", "||", ";", "<"}


def logical_lines(text: str) -> Iterator[str]:
    yield from re.sub(r"\\\n\s*", " ", text).splitlines()


def cmi_calls(text: str) -> Iterator[list[str]]:
    for line in logical_lines(text):
        for match in re.finditer(r"(?:^|&&|;|\|\||\(|\bthen|\bdo)\s*cmi\s+([^;&|)]*)", line):
            try:
                tokens = shlex.split(match[1], comments=True)
            except ValueError:
                continue
            cut = next((i for i, t in enumerate(tokens) if t in STOP or t.startswith(">")), None)
            yield tokens[:cut]


def run_scripts() -> Iterator[tuple[str, str]]:
    for path in WORKFLOWS:
        for job_id, job in load(path)["jobs"].items():
            for step in job.get("steps", []):
                if "run" in step:
                    yield f"{path.name}:{job_id}", step["run"]
    yield "vertex-train.sh", (GCP / "vertex-train.sh").read_text(encoding="utf-8")
    for script in sorted((REPO / "deploy").glob("*.sh")):
        yield script.name, script.read_text(encoding="utf-8")
    for page in sorted((REPO / "docs").rglob("*.md")):
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            yield str(page.relative_to(REPO)), block


CALLS = [(where, call) for where, script in run_scripts() for call in cmi_calls(script)]


def test_calls_were_found() -> None:
    places = {where.split(":")[0] for where, _ in CALLS}
    assert {
        "model-registry.yml",
        "data-change.yml",
        "vertex-train.sh",
        "validate-model.sh",
    } <= places


@pytest.mark.parametrize(
    ("where", "args"), CALLS, ids=[f"{w}: cmi {' '.join(a)}" for w, a in CALLS]
)
def test_cmi_call_exists_with_its_options(where: str, args: list[str]) -> None:
    from cmi_cli.cli.app import app

    command: Any = typer.main.get_command(app)
    ctx = typer.Context(command, info_name="cmi")
    # A shell expansion's value is known only when the script runs: any literal stands in.
    rest = ["1" if arg.startswith("$") or arg.startswith('"$') else arg for arg in args]
    while rest and hasattr(command, "get_command") and not rest[0].startswith("-"):
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, f"{where}: no command `{rest[0]}` in `cmi {' '.join(args)}`"
        command, ctx, rest = sub, typer.Context(sub, info_name=rest[0], parent=ctx), rest[1:]
    if "(not available yet)" in (command.help or ""):
        pytest.skip(f"`{ctx.command_path}` is not available yet")
    if "--help" in rest or "-h" in rest:
        return
    # Parsing checks option names, values' types where literal, and argument counts.
    try:
        command.make_context(ctx.info_name, rest, parent=ctx.parent, resilient_parsing=False)
    except Exception as exc:
        format_message = getattr(exc, "format_message", None)
        message = format_message() if callable(format_message) else str(exc)
        if "does not exist" in message or "is not a valid" in message:
            return  # a placeholder path or value ($CKPT, model/model.onnx) in a template
        raise AssertionError(f"{where}: `cmi {' '.join(args)}`: {message}") from None
