"""Compose the ``cmi train`` config with Hydra: packaged < project ``configs/`` < --config < k=v.

The packaged tree (``configs/`` in the repository, ``cmi_cli.configs`` in the wheel) holds the
primary ``train.yaml`` and the groups ``data``, ``model``, ``trainer``, ``logger``,
``experiment`` and ``debug``. A project adds or shadows group options by putting files of the
same layout in its own ``configs/`` folder (``configs/model/my_model.yaml``), and changes
primary values with a ``configs/train.yaml``. The whole order, lowest to highest precedence:

1. the selected group options (``data/sample.yaml``, ``model/fast_unet.yaml``, ...), where a
   project file shadows a packaged file of the same name;
2. the values of the packaged ``train.yaml``;
3. the ``experiment`` preset, then the ``debug`` preset, if selected;
4. the values of the project's ``configs/train.yaml``;
5. the values of the ``--config FILE``;
6. the command-line overrides (``trainer.max_epochs=5``, ``~logger``).

Group selections follow the same order: a selection on the command line beats one in the
--config file, which beats one in the project ``train.yaml``, which beats the packaged default.

Group selections in a YAML file (project ``train.yaml`` or --config): a top-level key that
names a config group and whose value is a string selects that option (``model: mini_unet``);
``null`` drops the group (``logger: null``). A Hydra-style ``defaults`` list works the same
(``defaults: [{model: mini_unet}, {override /experiment: fast}, _self_]``). A mapping under a
group key sets values inside the group (``model: {params: {width: 32}}``). Every other key must
already exist in the composed config: a typo fails with a did-you-mean suggestion.

Composition uses Hydra's compose API inside a context manager: Hydra is not left initialised,
the working directory is not changed and no ``outputs/`` folder is made.
"""

from __future__ import annotations

import difflib
import importlib.resources
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from cmi_cli.errors import ConfigError

PACKAGED_CONFIG_MODULE = "cmi_cli.configs"
PRIMARY_CONFIG_FILE = "train.yaml"
# Groups selected in the primary defaults list, so `+group=option` means `group=option`.
PRIMARY_GROUPS = ("data", "model", "trainer", "logger", "experiment", "resolution", "debug")

# ConfigStore names: the primary is stored rather than read from disk so that a project's own
# train.yaml can be merged as a layer instead of replacing the packaged defaults list.
_PRIMARY_NODE = "cmi_train_primary"
_LAYERS_NODE = "cmi_train_layers"


def packaged_config_dir() -> Path:
    """Return the folder of the packaged config tree.

    Installed, the tree is the package ``cmi_cli.configs``; in a source checkout where that
    package is not importable, it is the top-level ``configs/`` next to the ``cmi_cli`` folder.
    """
    if importlib.util.find_spec(PACKAGED_CONFIG_MODULE) is not None:
        return Path(str(importlib.resources.files(PACKAGED_CONFIG_MODULE)))
    return Path(__file__).resolve().parent.parent / "configs"


def compose_train_config(
    overrides: list[str] | None = None,
    config_file: Path | None = None,
    project_root: Path | None = None,
) -> DictConfig:
    """Compose the training config from every layer (see the module docstring for the order).

    Args:
        overrides: Hydra overrides such as ``model=mini_unet``, ``trainer.max_epochs=5``,
            ``+experiment=baseline`` or ``~logger``.
        config_file: A YAML mapping merged above the project configs and below the overrides.
        project_root: The project whose ``configs/`` folder is layered over the packaged one;
            the current directory when None.

    Returns:
        The composed config in struct mode (unknown keys raise). Without a logger (``~logger``)
        it holds ``logger.name: none``.

    Raises:
        ConfigError: A file is missing or not a mapping, an override is malformed, or a key or
            group option is unknown; the message is one line with a did-you-mean suggestion.
    """
    from hydra.core.config_store import ConfigStore

    packaged = packaged_config_dir()
    project_dir = _project_config_dir(project_root, packaged)

    layers: list[tuple[str, DictConfig]] = []
    if project_dir is not None and (project_dir / PRIMARY_CONFIG_FILE).is_file():
        layers.append(_read_layer(project_dir / PRIMARY_CONFIG_FILE))
    if config_file is not None:
        layers.append(_read_layer(Path(config_file)))

    primary = OmegaConf.to_container(OmegaConf.create(_packaged_primary_text(packaged)))
    assert isinstance(primary, dict)
    primary["defaults"] = [*primary.get("defaults", []), _LAYERS_NODE]
    primary["hydra"] = {"searchpath": _search_path(project_dir, packaged)}
    store = ConfigStore.instance()
    store.store(name=_PRIMARY_NODE, node=primary)

    cli = _parse_overrides(list(overrides or []))
    with _hydra() as loader:
        groups = _groups(loader)
        selections: dict[str, str | None] = {}
        values: list[tuple[str, DictConfig]] = []
        for source, layer in layers:
            layer_selections, layer_values = _split_layer(layer, groups, source)
            selections.update(layer_selections)
            values.append((source, layer_values))
        cli_groups = {o.key_or_group for o in cli if o.key_or_group in groups}
        final = [_selection_override(g, o) for g, o in selections.items() if g not in cli_groups]
        final += [_normalise_override(o, groups) for o in cli]
        for override in final:
            _check_group_option(loader, override, groups)

        if values:
            # A key a file sets must exist without the file, else a typo would add a new key.
            store.store(name=_LAYERS_NODE, node={})
            reference = _compose(final, groups)
            for source, layer_values in values:
                _check_known_keys(layer_values, reference, source)
        merged: Any = OmegaConf.merge(*(v for _, v in values)) if values else {}
        store.store(name=_LAYERS_NODE, node=merged)
        cfg = _compose(final, groups)

    if "logger" not in cfg:
        with open_dict(cfg):
            cfg.logger = {"name": "none"}
    return cfg


def config_to_yaml(cfg: DictConfig) -> str:
    """Return ``cfg`` as YAML with every interpolation resolved.

    Raises:
        ConfigError: If an interpolation cannot be resolved.
    """
    try:
        return OmegaConf.to_yaml(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot resolve the config: {_first_line(exc)}") from None


def validate_train_config(cfg: DictConfig) -> None:
    """Check the types and ranges of the training keys the packaged YAML defines.

    The ``data`` and ``model`` groups are checked by the code that reads them.

    Raises:
        ConfigError: On the first key with a bad value, naming the key and what it accepts.
    """
    from cmi_cli.config_checks import check_train_values

    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot resolve the config: {_first_line(exc)}") from None
    assert isinstance(values, dict)
    check_train_values({str(k): v for k, v in values.items()})


@contextmanager
def _hydra() -> Iterator[Any]:
    from hydra import initialize
    from hydra.core.global_hydra import GlobalHydra

    # config_path=None: the stored primary's hydra.searchpath names every config folder.
    with initialize(version_base="1.3", config_path=None):
        yield GlobalHydra.instance().config_loader()


def _packaged_primary_text(packaged: Path) -> str:
    # Read through importlib.resources when installed: the package may live in a zip.
    if importlib.util.find_spec(PACKAGED_CONFIG_MODULE) is not None:
        resource = importlib.resources.files(PACKAGED_CONFIG_MODULE) / PRIMARY_CONFIG_FILE
        return resource.read_text(encoding="utf-8")
    return (packaged / PRIMARY_CONFIG_FILE).read_text(encoding="utf-8")


def _project_config_dir(project_root: Path | None, packaged: Path) -> Path | None:
    folder = (Path(project_root) if project_root is not None else Path.cwd()) / "configs"
    if not folder.is_dir():
        return None
    # Inside the source checkout the project folder is the packaged tree: layer it only once.
    if packaged.is_dir() and folder.resolve() == packaged.resolve():
        return None
    return folder.resolve()


def _search_path(project_dir: Path | None, packaged: Path) -> list[str]:
    # First match wins, so the project's files shadow packaged ones of the same name.
    paths = [f"file://{project_dir.as_posix()}"] if project_dir is not None else []
    if importlib.util.find_spec(PACKAGED_CONFIG_MODULE) is not None:
        paths.append(f"pkg://{PACKAGED_CONFIG_MODULE}")
    else:
        paths.append(f"file://{packaged.as_posix()}")
    return paths


def read_yaml_mapping(path: Path) -> DictConfig:
    """Read a YAML file that must hold a mapping of config keys.

    Raises:
        ConfigError: The file is missing, not valid YAML (naming its line and column), or
            not a mapping.
    """
    return _read_layer(Path(path))[1]


def yaml_error_message(path: Path, exc: BaseException) -> str:
    """Say where a YAML file is malformed: ``FILE:LINE:COLUMN: problem`` on one line."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if mark is not None:
        return f"{path}:{mark.line + 1}:{mark.column + 1}: {problem or _first_line(exc)}"
    return f"{path}: {_first_line(exc)}"


def _read_layer(path: Path) -> tuple[str, DictConfig]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", hint="Check the path given to --config")
    try:
        # PyYAML tells a mapping from a bare scalar; OmegaConf's loader reads 1e-3 as a float.
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        loaded = OmegaConf.load(path) if isinstance(raw, dict) else None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"cannot parse {yaml_error_message(path, exc)}", hint="Fix the YAML at that place"
        ) from None
    except (OmegaConfBaseException, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse {path}: {_first_line(exc)}") from None
    if raw is None:
        return str(path), OmegaConf.create()
    if not isinstance(loaded, DictConfig):
        raise ConfigError(
            f"{path} must hold a YAML mapping of config keys, not a {type(raw).__name__}",
            hint="Write it as 'key: value' lines, e.g. 'trainer: {max_epochs: 5}'",
        )
    return str(path), loaded


def _split_layer(
    layer: DictConfig, groups: set[str], source: str
) -> tuple[dict[str, str | None], DictConfig]:
    """Separate group selections from values in one YAML layer."""
    selections: dict[str, str | None] = {}
    values = layer.copy()
    defaults = values.pop("defaults", None)
    if defaults is not None:
        if not isinstance(defaults, ListConfig):
            raise ConfigError(f"'defaults' in {source} must be a list of 'group: option' entries")
        for entry in defaults:
            if entry == "_self_":
                continue
            if not isinstance(entry, DictConfig) or len(entry) != 1:
                raise ConfigError(
                    f"cannot read defaults entry {entry!r} in {source}",
                    hint="Write entries as 'group: option', e.g. '- model: mini_unet'",
                )
            key, option = next(iter(entry.items()))
            group = str(key).removeprefix("override ").removeprefix("optional ").strip()
            group = group.lstrip("/")
            if group not in groups:
                raise _unknown_group(group, groups, source)
            selections[group] = None if option is None else str(option)
    for key in [k for k in values if k in groups]:
        node = values._get_node(key)
        if node is None or isinstance(node, DictConfig):
            continue
        option = values[key]
        if option is None or isinstance(option, str):
            selections[str(key)] = option
            values.pop(key)
    return selections, values


def _selection_override(group: str, option: str | None) -> str:
    return f"~{group}" if option is None else f"{group}={option}"


def parse_overrides(overrides: list[str]) -> list[Any]:
    """Parse ``key=value`` / ``group=option`` / ``~key`` overrides with Hydra's grammar.

    Raises:
        ConfigError: An override is malformed.
    """
    return _parse_overrides(overrides)


def unknown_key_error(key: str, reference: DictConfig, source: str | None = None) -> ConfigError:
    """The one-line error for a key ``reference`` lacks, with a did-you-mean suggestion."""
    return _unknown_key(key, reference, source)


def _parse_overrides(overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except OverrideParseException as exc:
            raise ConfigError(
                f"malformed override '{text}': {_first_line(exc)}",
                hint="Write overrides as key=value, group=option, +key=value or ~key",
            ) from None
    return parsed


def _normalise_override(override: Any, groups: set[str]) -> str:
    text = str(override.input_line)
    # The primary lists every group (experiment and debug as null), so appending one with `+`
    # would clash with that entry; selecting it is what the user means.
    if override.key_or_group in groups and text.startswith("+") and not text.startswith("++"):
        return text[1:]
    return text


def _groups(loader: Any) -> set[str]:
    from hydra.core.object_type import ObjectType

    found = loader.get_group_options("", results_filter=ObjectType.GROUP, config_name=_PRIMARY_NODE)
    return {g for g in found if g != "hydra"} | set(PRIMARY_GROUPS)


def _group_options(loader: Any, group: str) -> list[str]:
    return sorted(loader.get_group_options(group, config_name=_PRIMARY_NODE))


def _check_group_option(loader: Any, override: str, groups: set[str]) -> None:
    if override.startswith("~") or "=" not in override:
        return
    key, option = override.lstrip("+").split("=", 1)
    if key not in groups or option in ("null", ""):
        return
    options = _group_options(loader, key)
    if option in options:
        return
    close = difflib.get_close_matches(option, options, n=1)
    suggestion = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(
        f"unknown option '{option}' for config group '{key}' "
        f"({suggestion}options: {', '.join(options) or 'none'})"
    )


def _unknown_group(group: str, groups: set[str], source: str) -> ConfigError:
    close = difflib.get_close_matches(group, sorted(groups), n=1)
    suggestion = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config group '{group}' in {source}{suggestion}")


def _compose(overrides: list[str], groups: set[str]) -> DictConfig:
    from hydra import compose
    from hydra.errors import HydraException

    try:
        return compose(config_name=_PRIMARY_NODE, overrides=overrides)
    except yaml.YAMLError as exc:
        # A group file (configs/model/x.yaml) that is not valid YAML: Hydra lets PyYAML's
        # multi-line error through, whose mark names the file.
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        path = Path(mark.name) if mark is not None else Path("config")
        raise ConfigError(
            f"cannot parse {yaml_error_message(path, exc)}", hint="Fix the YAML at that place"
        ) from None
    except (HydraException, OmegaConfBaseException) as exc:
        raise _diagnose(overrides, groups, exc) from None


def _diagnose(overrides: list[str], groups: set[str], exc: Exception) -> ConfigError:
    """Turn a failed composition into one line, naming the first unknown key if there is one."""
    from hydra import compose
    from hydra.errors import HydraException

    selections = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] in groups]
    try:
        reference = compose(config_name=_PRIMARY_NODE, overrides=selections)
    except (HydraException, OmegaConfBaseException):
        reference = None
    if reference is not None:
        for override in overrides:
            if override in selections or override.startswith("+"):
                continue
            key = override.lstrip("~").split("=", 1)[0]
            if not _has_key(reference, key):
                return _unknown_key(key, reference)
    message = _first_line(exc)
    cause = exc.__cause__
    if cause is not None and _first_line(cause) not in message:
        message = f"{message.rstrip('.')}: {_first_line(cause)}"
    return ConfigError(f"cannot compose the config: {message}")


def _check_known_keys(values: DictConfig, reference: DictConfig, source: str) -> None:
    for key in _unknown_keys(values, reference, ""):
        raise _unknown_key(key, reference, source)


def _unknown_keys(values: Any, reference: Any, prefix: str) -> Iterator[str]:
    """Yield the dotted keys of ``values`` that ``reference`` lacks."""
    for key in values:
        dotted = f"{prefix}{key!s}"
        if not isinstance(reference, DictConfig) or key not in reference:
            yield dotted
            continue
        child = values._get_node(key)
        ref_child = reference._get_node(key)
        if isinstance(child, DictConfig) and isinstance(ref_child, DictConfig):
            yield from _unknown_keys(child, ref_child, f"{dotted}.")


def _has_key(cfg: DictConfig, dotted: str) -> bool:
    node: Any = cfg
    for part in dotted.split("."):
        if isinstance(node, DictConfig) and part in node:
            node = node._get_node(part)
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
        else:
            return False
    return True


def _key_paths(cfg: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(cfg, DictConfig):
        for key in cfg:
            dotted = f"{prefix}{key!s}"
            yield dotted
            yield from _key_paths(cfg._get_node(key), f"{dotted}.")


def _unknown_key(key: str, reference: DictConfig, source: str | None = None) -> ConfigError:
    paths = list(_key_paths(reference))
    parent = key.rpartition(".")[0]
    siblings = [p for p in paths if p.rpartition(".")[0] == parent]
    close = difflib.get_close_matches(key, siblings, n=1) or difflib.get_close_matches(
        key, paths, n=1
    )
    where = f" in {source}" if source else ""
    suggestion = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{key}'{where}{suggestion}")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
