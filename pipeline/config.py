"""Config: compose `conf/` with Hydra, write/read `params.yaml`, validate, anchor paths.

`params.yaml` is what DVC tracks and what every stage reads. DVC regenerates it from `conf/`
on `dvc exp run` (Hydra composition); `python -m pipeline.config write` does the same for
`dvc repro`, and a test fails when the committed file is out of sync with `conf/`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from pipeline.errors import PipelineError
from pipeline.schema import Config

PARAMS_FILE = "params.yaml"
ADAPTERS = ("cnmc", "all_idb2", "folder", "csv", "synthetic")
CSV_COLUMNS = ("path", "label", "subject")  # dataset.columns keys; subject is optional
SEGMENT_METHODS = ("none", "otsu", "otsu_active_contour")
SEGMENT_CHANNELS = ("gray", "lab_b", "saturation")
MONITORS = {"val_accuracy": max, "val_loss": min}  # train.monitor: how its best epoch is picked
# tracking.register_metric: a validation score every run logs, ranked as MONITORS says
REGISTER_METRICS = tuple(sorted(name.removeprefix("val_") for name in MONITORS))
DEVICE_RULE = "expected auto, cpu, mps, cuda, cuda:N or GPU ids like '0,1'"
# A name that becomes a folder (dataset.name, a snapshot, a choose_upstream output): one plain
# path component, so it can neither escape its parent folder nor stand for the parent itself.
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
PLAIN_NAME_RULE = "use letters, digits, '_', '.' or '-' (no '/', no spaces, no leading '.')"
# The regions a ground-truth mask may draw (`dataset.mask_code`); a mask without a nucleus
# colour draws the whole cell in its cytoplasm colour, and its nuclei go unscored.
MASK_REGIONS = ("background", "cytoplasm", "nucleus")
# ALL-IDB2's ground-truth colours, RGB: white background, blue cytoplasm, cyan nucleus; what
# `dataset.mask_code: null` means.
ALL_IDB2_MASK_CODE = {
    "background": (255, 255, 255),
    "cytoplasm": (0, 0, 255),
    "nucleus": (0, 255, 255),
}
MASK_COLOUR_RULE = "[R, G, B] or one grey level (a label map's 0, 1, 2), each 0..255"
CROP_RULES = ("bbox", "fraction")
AUGMENT_OPS = ("hflip", "vflip", "rot90", "rot180", "rot270")
SPLITS = ("train", "val", "test")
STRATEGIES = ("auto", "ddp")
GROUP_BY = ("subject", "none")  # split.group_by: subjects kept apart, or the paper's image level
ON_MISSING = ("error", "skip")  # cross.on_missing: a target whose root does not exist
# OmegaConf refusing a number or boolean where the schema wants text (a folder name, a label)
UNQUOTED_TEXT = re.compile(r"\((int|float|bool)\) is incompatible with type hint .str.")


class ConfigError(PipelineError, ValueError):
    """A config key is unknown, missing or has an invalid value; the message names the key."""


def plain_name(name: str, what: str) -> str:
    """`name` when it is one plain path component (`PLAIN_NAME`), else a ConfigError."""
    if not PLAIN_NAME.fullmatch(name):
        raise ConfigError(f"{what} {name!r} names a folder; {PLAIN_NAME_RULE}")
    return name


EXPERIMENT_COPIES = (".dvc", "tmp", "exps")


WORKSPACE_MARKERS = ("dvc.yaml", PARAMS_FILE, ".git")


def workspace_root(start: Path | None = None) -> Path:
    """The folder DVC runs the stage in: its `params.yaml`, relative data roots and outputs.

    That is the repository for `dvc repro` and `dvc exp run`, but the experiment's own copy
    under `<repo>/.dvc/tmp/exps/` for `dvc exp run --temp/--queue`, which holds that
    experiment's params, and a folder with its own `params.yaml` (a scratch workspace). Found
    from the working directory (DVC's stage `wdir`), never from `DVC_ROOT`, which DVC points
    at the parent repository for queued runs.
    """
    here = Path(start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if any((candidate / marker).exists() for marker in WORKSPACE_MARKERS):
            return candidate
    return here


def tracking_home(start: Path | None = None) -> Path:
    """The real repository, also from inside a `dvc exp run --temp/--queue` copy.

    Only the local MLflow store is anchored here: runs logged inside a temporary copy would
    vanish with it. DVC exports the parent repository as `DVC_ROOT` to every stage it runs.
    """
    if start is None and os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    workspace = workspace_root(start)
    parts = workspace.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == EXPERIMENT_COPIES:
            return Path(*parts[:i])
    return workspace


def conf_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "conf"


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose `conf/config.yaml` with Hydra overrides (as `dvc exp run -S` does)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            cfg = hydra_compose("config", overrides=list(overrides))
    except HydraException as exc:
        raise ConfigError(f"cannot compose conf/ with overrides {list(overrides)}: {exc}") from exc
    except yaml.YAMLError as exc:  # its message names the file, line and column
        raise ConfigError(f"a conf/ file is not valid YAML: {' '.join(str(exc).split())}") from None
    validate(cfg)
    return cfg


def conf_mappings(group: str) -> dict[Path, dict]:
    """The conf/<group> files that hold a YAML mapping, parsed (a file that is not valid YAML
    is left to Hydra, which names it when it is composed)."""
    return {
        path: declared
        for path in sorted((conf_dir() / group).glob("*.yaml"))
        if (declared := _yaml_mapping(path)) is not None
    }


def _yaml_mapping(path: Path) -> dict | None:
    try:
        declared = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return declared if isinstance(declared, dict) else None


def datasets_named(name: str) -> list[Path]:
    """The conf/dataset files that declare dataset `name`."""
    return [
        path
        for path, declared in conf_mappings("dataset").items()
        if str(declared.get("name")) == str(name)
    ]


def to_yaml(cfg: DictConfig) -> str:
    header = (
        "# GENERATED from conf/ by `python -m pipeline.config write` (or `dvc exp run`).\n"
        "# Edit conf/, not this file; tests fail when the two disagree.\n"
    )
    return header + yaml.safe_dump(OmegaConf.to_container(cfg, resolve=True), sort_keys=False)


def write_params(path: Path | str = PARAMS_FILE, overrides: Sequence[str] = ()) -> Path:
    from pipeline.io import atomic_write_text

    return atomic_write_text(Path(path), to_yaml(compose(overrides)))


def load(params: Path | str | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Read `params.yaml` (what DVC tracks), apply `key=value` overrides, validate."""
    path = Path(params) if params else workspace_root() / PARAMS_FILE
    if not path.exists():
        raise ConfigError(f"{path} not found: run `python -m pipeline.config write` first")
    from pipeline.io import MalformedFileError, read_yaml

    try:
        cfg = OmegaConf.create(read_yaml(path))
    except MalformedFileError as exc:
        raise ConfigError(str(exc)) from None
    validate(apply_overrides(cfg, overrides))
    return cfg


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Set each `key=value` (the value read as YAML) in `cfg`, in place; returns `cfg`."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        if "@" in key or key.startswith("~"):
            raise ConfigError(
                f"override {item!r} changes the composition (a group or package): "
                f"`python -m pipeline.config write {item}` (or `dvc exp run -S {item}`), "
                "then run the stage"
            )
        key = key.lstrip("+")  # Hydra's "add a key": params.yaml takes any key the schema knows
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(
                f"override {item!r}: {value!r} is not a YAML value (quote text, close lists)"
            ) from None
        if isinstance(cfg.get(key), DictConfig) and not isinstance(parsed, dict):
            raise ConfigError(
                f"{item!r}: '{key}' is a config group, chosen when params.yaml is composed: "
                f"`python -m pipeline.config write {item}` (or `dvc exp run -S {item}`), "
                f"then run the stage; set one key with {key}.<key>=<value>"
            )
        OmegaConf.update(cfg, key, parsed, merge=False, force_add=True)
    return cfg


def _typed(cfg: DictConfig) -> DictConfig:
    """`cfg` merged onto the schema: an unknown key or a wrongly typed value is refused."""
    try:
        return OmegaConf.merge(OmegaConf.structured(Config), cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or _failing_key(cfg) or "?"
        message = str(exc.msg).splitlines()[0]  # the rest repeats the key and names a dataclass
        if isinstance(exc, ConfigKeyError):  # a misspelt key: say what is there instead
            section = key.rpartition(".")[0]
            schema = OmegaConf.structured(Config)
            known = OmegaConf.select(schema, section) if section else schema
            if isinstance(known, DictConfig):
                message += f"; the keys of {section or 'the top level'}: {', '.join(sorted(known))}"
        elif UNQUOTED_TEXT.search(message):  # `all: [1]` for folder 1/, labels yes/no
            message += (
                "; YAML reads an unquoted number or yes/no, on/off, true/false as a number or "
                'a boolean, not as text: write it in quotes (e.g. "1", "yes")'
            )
        raise ConfigError(f"invalid config key '{key}': {message}") from None


def _failing_key(cfg: DictConfig, prefix: str = "") -> str | None:
    """The deepest key of `cfg` whose value alone fails to merge onto the schema: OmegaConf
    names no key when a section gets a list or a number (`dataset.mask_code: [0, 1, 2]`)."""
    for name in cfg:
        key = f"{prefix}.{name}" if prefix else str(name)
        alone = OmegaConf.create()
        OmegaConf.update(alone, key, cfg[name], merge=False, force_add=True)
        try:
            OmegaConf.merge(OmegaConf.structured(Config), alone)
        except OmegaConfBaseException:
            value = cfg[name]
            deeper = _failing_key(value, key) if isinstance(value, DictConfig) else None
            return deeper or key
    return None


_ABSENT = object()


def fill_added_keys(
    cfg: DictConfig, defaults: DictConfig | None = None
) -> tuple[DictConfig, dict[str, Any]]:
    """A copy of `cfg` with every schema key it has no value for taken from `defaults` (today's
    `conf/` when None), and {key: value filled}.

    Params archived before a key was added to the schema (a snapshot's `params.yaml`) then still
    validate, with the new key at the default the archived run could not have had a say in;
    the caller records what was filled. A key today's defaults lack stays unset, so `validate`
    still names it.
    """
    typed = _typed(cfg)
    defaults = compose() if defaults is None else defaults
    filled_cfg, filled = copy.deepcopy(cfg), {}
    for key in sorted(OmegaConf.missing_keys(typed)):
        value = OmegaConf.select(defaults, key, default=_ABSENT, throw_on_missing=False)
        if value is _ABSENT:
            continue
        OmegaConf.update(filled_cfg, key, value, merge=False, force_add=True)
        is_node = isinstance(value, DictConfig | ListConfig)
        filled[key] = OmegaConf.to_container(value, resolve=True) if is_node else value
    return filled_cfg, filled


def validate(cfg: DictConfig) -> DictConfig:
    """Check keys against the schema and values against their allowed ranges."""
    typed = _typed(cfg)
    unset = sorted(OmegaConf.missing_keys(typed))
    if unset:
        raise ConfigError(
            f"config keys without a value: {unset}; a config file of your own (e.g. "
            "conf/dataset/<name>.yaml) must set every key of its section, as the shipped ones do"
        )
    problems = _quoted_values(
        OmegaConf.to_container(cfg, resolve=True), OmegaConf.to_container(typed, resolve=True)
    )
    problems = problems or _value_problems(typed)
    if len(problems) == 1:
        raise ConfigError(f"invalid config value: {problems[0]}")
    if problems:
        raise ConfigError("invalid config values:\n  " + "\n  ".join(problems))
    return typed


def _quoted_values(raw: Any, typed: Any, key: str = "") -> list[str]:
    """Keys whose value is text where the schema wants a boolean or a number ("false", "48"):
    the stages read the text as written, and `bool("false")` is True."""
    if isinstance(raw, dict) and isinstance(typed, dict):
        return [
            problem
            for name, value in raw.items()
            for problem in _quoted_values(value, typed.get(name), f"{key}.{name}".lstrip("."))
        ]
    if isinstance(raw, list) and isinstance(typed, list):
        return [
            problem
            for i, (value, typed_value) in enumerate(zip(raw, typed, strict=False))
            for problem in _quoted_values(value, typed_value, f"{key}[{i}]")
        ]
    if isinstance(raw, str) and isinstance(typed, bool | int | float):
        return [f"{key}: {raw!r} is text; write it without quotes ({json.dumps(typed)})"]
    return []


def _dataset_problems(ds: DictConfig) -> list[str]:
    """The keys an adapter reads: classes for folder/csv, the table for csv, a valid pattern."""
    problems = []
    if not PLAIN_NAME.fullmatch(str(ds.name)):
        problems.append(f"dataset.name: {ds.name!r} names output folders; {PLAIN_NAME_RULE}")
    declared_by = datasets_named(ds.name)
    if len(declared_by) > 1:  # a copied YAML that kept the original's name
        files = " and ".join(f"conf/dataset/{path.name}" for path in declared_by)
        problems.append(
            f"dataset.name: {files} both declare {ds.name!r}; datasets sharing a name share "
            "models/, artifacts/, reports/ and an MLflow experiment, each overwriting the "
            "other's: give each its own name"
        )
    if not str(ds.root).strip():
        problems.append(
            "dataset.root: empty; name the dataset's folder (relative to the repository)"
        )
    tabular = ds.adapter in ("folder", "csv")
    what = "folder names" if ds.adapter == "folder" else "label values"
    if tabular and set(ds.classes or {}) != {"all", "hem"}:
        problems.append(
            f"dataset.classes: must map exactly 'all' and 'hem' to {what}, "
            f"got {sorted(ds.classes or {})}"
        )
    elif tabular:
        problems += [
            f"dataset.classes.{label}: maps to no {what}, got {list(names)}"
            for label, names in ds.classes.items()
            if not [name for name in names if str(name).strip()]
        ]
        shared = set(ds.classes.all) & set(ds.classes.hem)
        if shared:
            problems.append(f"dataset.classes: {sorted(shared)} mapped to both 'all' and 'hem'")
    readers = {
        "group_pattern": ("folder", "csv"),
        "labels_file": ("csv",),
        "image_dir": ("csv",),
        "columns": ("csv",),
    }
    problems += [
        f"dataset.{key}: read by the {'/'.join(adapters)} adapter only, not {ds.adapter}"
        for key, adapters in readers.items()
        if ds[key] is not None and ds.adapter not in adapters
    ]
    if ds.adapter == "csv":
        if not ds.labels_file:
            problems.append("dataset.labels_file: the csv adapter needs its labels table")
        columns = set(ds.columns or {})
        if not {"path", "label"} <= columns <= set(CSV_COLUMNS):
            problems.append(
                "dataset.columns: must name the table's 'path' and 'label' columns "
                f"(and optionally 'subject'), got {sorted(columns)}"
            )
    try:
        mask_colours(ds.mask_code)
    except ConfigError as exc:
        problems.append(str(exc))
    if ds.group_pattern is not None:
        try:
            pattern = re.compile(ds.group_pattern)
        except re.error as exc:
            problems.append(f"dataset.group_pattern: not a regular expression ({exc})")
        else:
            if "subject" not in pattern.groupindex:
                problems.append(
                    "dataset.group_pattern: needs a named group (?P<subject>...), "
                    f"got {ds.group_pattern!r}"
                )
    return problems


def mask_colours(spec: Any) -> dict[str, tuple[int, int, int] | None]:
    """`dataset.mask_code` as an RGB colour per region of `MASK_REGIONS` (nucleus None where the
    masks draw no nucleus); null is ALL-IDB2's code. Raises ConfigError naming the key."""
    if spec is None:
        return dict(ALL_IDB2_MASK_CODE)
    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    if not isinstance(spec, dict):
        raise ConfigError(f"dataset.mask_code: maps {list(MASK_REGIONS)} to colours, got {spec!r}")
    unknown = sorted(set(map(str, spec)) - set(MASK_REGIONS))
    if unknown:
        raise ConfigError(
            f"dataset.mask_code: unknown regions {unknown}; known: {list(MASK_REGIONS)}"
        )
    colours: dict[str, tuple[int, int, int] | None] = {}
    for region in MASK_REGIONS:
        value = spec.get(region)
        if value is None and region == "nucleus":
            colours[region] = None
            continue
        if value is None:
            raise ConfigError(f"dataset.mask_code.{region}: missing; a colour, {MASK_COLOUR_RULE}")
        channels = [value] * 3 if not isinstance(value, list | tuple) else list(value)
        if len(channels) != 3 or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in channels
        ):
            raise ConfigError(
                f"dataset.mask_code.{region}: {value!r} is not a colour; {MASK_COLOUR_RULE}"
            )
        colours[region] = (channels[0], channels[1], channels[2])
    drawn = [region for region, colour in colours.items() if colour is not None]
    shared = [
        (a, b) for i, a in enumerate(drawn) for b in drawn[i + 1 :] if colours[a] == colours[b]
    ]
    if shared:
        raise ConfigError(f"dataset.mask_code: {shared[0][0]} and {shared[0][1]} share one colour")
    return colours


def parse_device(spec: str | int) -> tuple[str, tuple[int, ...]]:
    """`train.device` as (auto | cpu | mps | cuda, CUDA ids): its grammar, checked before any
    stage runs; `train.device.resolve_device` then checks that the machine has it."""
    text = str(spec).strip().lower()
    if text in ("auto", "cpu", "mps"):
        return text, ()
    if text == "cuda":
        return "cuda", (0,)
    if match := re.fullmatch(r"cuda:(\d+)", text):
        return "cuda", (int(match.group(1)),)
    if re.fullmatch(r"\d+(\s*,\s*\d+)*", text):
        ids = tuple(int(part) for part in text.split(","))
        if len(set(ids)) != len(ids):
            raise ConfigError(f"train.device={spec!r}: repeated GPU id")
        return "cuda", ids
    raise ConfigError(f"train.device={spec!r}: {DEVICE_RULE}")


def _value_problems(cfg: DictConfig) -> list[str]:
    problems = []

    def check(ok: bool, key: str, message: str) -> None:
        if not ok:
            problems.append(f"{key}: {message}")

    ds = cfg.dataset
    check(ds.adapter in ADAPTERS, "dataset.adapter", f"{ds.adapter!r} not in {ADAPTERS}")
    check(ds.on_bad_file in ("error", "skip"), "dataset.on_bad_file", "must be error or skip")
    problems += _dataset_problems(ds)
    check(
        cfg.segment.method in SEGMENT_METHODS,
        "segment.method",
        f"{cfg.segment.method!r} not in {SEGMENT_METHODS}",
    )
    seg = cfg.segment
    check(
        seg.channel in SEGMENT_CHANNELS,
        "segment.channel",
        f"{seg.channel!r} not in {SEGMENT_CHANNELS}",
    )
    check(seg.otsu_classes >= 2, "segment.otsu_classes", "must be >= 2 (2 = plain Otsu)")
    check(seg.min_area_px >= 0, "segment.min_area_px", "must be >= 0")
    check(seg.reference_side > 0, "segment.reference_side", "must be > 0")
    check(seg.opening_radius_px >= 0, "segment.opening_radius_px", "must be >= 0")
    check(cfg.crop.rule in CROP_RULES, "crop.rule", f"{cfg.crop.rule!r} not in {CROP_RULES}")
    check(cfg.crop.size >= 16, "crop.size", "must be >= 16")
    check(0 <= cfg.crop.threshold <= 255, "crop.threshold", "must be a grey level in 0..255")
    check(cfg.crop.margin >= 0, "crop.margin", "must be >= 0")
    fraction = list(cfg.crop.fraction)
    check(
        len(fraction) == 2 and 0 <= fraction[0] < fraction[-1] <= 1,
        "crop.fraction",
        f"must be [low, high] with 0 <= low < high <= 1, got {fraction}",
    )
    check(0 <= cfg.seed < 2**32, "seed", "must be in 0..2**32-1 (numpy's seed range)")
    check(
        cfg.split.group_by in GROUP_BY,
        "split.group_by",
        f"{cfg.split.group_by!r} not in {GROUP_BY}",
    )
    targets = list(cfg.cross.targets)
    repeated = sorted({name for name in targets if targets.count(name) > 1})
    check(not repeated, "cross.targets", f"{repeated} listed twice (each has one output folder)")
    check(
        cfg.cross.on_missing in ON_MISSING,
        "cross.on_missing",
        f"{cfg.cross.on_missing!r} not in {ON_MISSING}",
    )
    check(
        cfg.tracking.register_metric in REGISTER_METRICS,
        "tracking.register_metric",
        f"{cfg.tracking.register_metric!r} not in {list(REGISTER_METRICS)} "
        "(validation metrics of every run)",
    )
    demo = cfg.demo
    check(demo.n_per_class >= 1, "demo.n_per_class", "must be >= 1")
    check(min(demo.smear_side, demo.cnmc_side) >= 16, "demo", "smear_side, cnmc_side: >= 16")
    check(demo.cnmc_subjects >= 1, "demo.cnmc_subjects", "must be >= 1")
    fractions = [cfg.split.train, cfg.split.val, cfg.split.test]
    check(
        all(f > 0 for f in fractions),
        "split",
        "train, val and test must each be > 0 (validation picks the checkpoint, test scores it)",
    )
    check(cfg.split.tolerance >= 0, "split.tolerance", "must be >= 0")
    check(
        abs(sum(fractions) - 1) < 1e-6,
        "split",
        f"train + val + test must sum to 1, got {sum(fractions):g}",
    )
    bad_ops = sorted(set(cfg.augment.ops) - set(AUGMENT_OPS))
    check(not bad_ops, "augment.ops", f"unknown ops {bad_ops}; allowed {AUGMENT_OPS}")
    check(cfg.augment.multiplier >= 1, "augment.multiplier", "must be >= 1")
    distinct = 1 + len(set(cfg.augment.ops))  # the original and one copy per op
    check(
        cfg.augment.multiplier <= distinct,
        "augment.multiplier",
        f"at most {distinct} (the original and one copy per op in augment.ops); "
        "more would repeat byte-identical copies",
    )
    bad_splits = sorted(set(cfg.augment.splits) - set(SPLITS))
    check(not bad_splits, "augment.splits", f"unknown splits {bad_splits}")
    check(0 < cfg.evaluate.confidence < 1, "evaluate.confidence", "must be in (0, 1)")
    check(cfg.evaluate.bootstrap_samples >= 1, "evaluate.bootstrap_samples", "must be >= 1")
    check(cfg.evaluate.explain_samples >= 0, "evaluate.explain_samples", "must be >= 0")
    check(0 <= cfg.evaluate.collapse_share < 0.5, "evaluate.collapse_share", "must be in [0, 0.5)")
    threads = cfg.train.threads
    check(threads is None or threads >= 1, "train.threads", "must be null or >= 1")
    train = cfg.train
    check(train.num_workers >= 0, "train.num_workers", "must be >= 0 (0 = load in the process)")
    check(train.early_stopping_patience >= 0, "train.early_stopping_patience", "must be >= 0")
    check(train.strategy in STRATEGIES, "train.strategy", f"{train.strategy!r} not in {STRATEGIES}")
    check(train.processes >= 1, "train.processes", "must be >= 1")
    probe = cfg.probe
    check(probe.folds >= 2, "probe.folds", "must be >= 2")
    check(probe.repeats >= 1, "probe.repeats", "must be >= 1")
    check(probe.bins >= 1, "probe.bins", "must be >= 1")
    try:
        parse_device(cfg.train.device)
    except ConfigError as exc:
        problems.append(str(exc))
    check(
        cfg.train.monitor in MONITORS,
        "train.monitor",
        f"{cfg.train.monitor!r} not in {sorted(MONITORS)}",
    )
    members = list(cfg.ensemble.members)
    unknown = sorted(set(members) - set(cfg.models or {}))
    check(not unknown, "ensemble.members", f"{unknown} not in models {sorted(cfg.models or {})}")
    check(
        len(members) >= 2 and len(set(members)) == len(members),
        "ensemble.members",
        "need at least two distinct model names",
    )
    weights, top_k = cfg.ensemble.weights, cfg.ensemble.top_k
    check(
        weights is None or (len(weights) == len(members) and all(w > 0 for w in weights)),
        "ensemble.weights",
        "null or one positive number per member",
    )
    check(
        top_k is None or 1 <= top_k <= len(members),
        "ensemble.top_k",
        f"null or 1..{len(members)} (the number of members)",
    )
    check(top_k is None or weights is None, "ensemble.weights", "must be null with top_k")
    folds = cfg.cv.folds
    check(folds == 0 or folds >= 2, "cv.folds", "must be 0 (off) or >= 2")
    check(cfg.cv.repeats >= 1, "cv.repeats", "must be >= 1")
    known_by_kind = model_keys_by_kind() if cfg.models else {}  # each file read once
    for name, section in (cfg.models or {}).items():
        problems += _unknown_model_keys(name, section, known_by_kind)
        for key in ("lr", "epochs", "batch_size"):
            if key in section:
                value = section[key]  # model sections are free-form: no schema types them
                counted = key != "lr"  # epochs and images are whole numbers
                kinds = int if counted else int | float
                number = isinstance(value, kinds) and not isinstance(value, bool)
                check(
                    number and value > 0,
                    f"models.{name}.{key}",
                    f"must be {'an integer' if counted else 'a number'} > 0, got {value!r}",
                )
    return problems


def _model_file_keys(path: Path, declared: dict) -> dict | None:
    """A conf/model file's keys (`declared`: its content) as a tree (None at an open leaf: a
    null, empty or non-mapping default takes any keys its model checks itself), its
    `X@_here_` defaults merged in; None when one of those cannot be read (Hydra names a broken
    file when it composes it)."""
    tree: dict = {}
    for entry in declared.get("defaults") or []:
        if isinstance(entry, str) and entry.endswith("@_here_"):
            base_path = path.parent / f"{entry.removesuffix('@_here_')}.yaml"
            base = _yaml_mapping(base_path)
            base_tree = None if base is None else _model_file_keys(base_path, base)
            if base_tree is None:
                return None
            tree.update(base_tree)

    def keys(value: Any) -> dict | None:
        if isinstance(value, dict) and value:
            return {str(k): keys(v) for k, v in value.items()}
        return None

    tree.update({str(k): keys(v) for k, v in declared.items() if k != "defaults"})
    return tree


def _merge_keys(trees: Sequence[dict | None]) -> dict | None:
    """The union of key trees; open (None) as soon as one of them is."""
    if any(tree is None for tree in trees):
        return None
    merged: dict = {}
    for tree in trees:
        for key, sub in tree.items():
            merged[key] = _merge_keys([merged[key], sub]) if key in merged else sub
    return merged


def model_keys_by_kind() -> dict[str, dict | None]:
    """The keys a `models.<name>` section may hold, by its `kind`: those of every conf/model
    file of that kind (a key tree, see `_model_file_keys`)."""
    trees: dict[str, list[dict | None]] = {}
    for path, declared in conf_mappings("model").items():
        if "kind" in declared:
            trees.setdefault(str(declared["kind"]), []).append(_model_file_keys(path, declared))
    return {kind: _merge_keys(found) for kind, found in trees.items()}


def _unknown_model_keys(name: str, section: Any, known_by_kind: Mapping[str, Any]) -> list[str]:
    """Keys of `models.<name>` that no conf/model file of its kind has (`known_by_kind`, from
    `model_keys_by_kind`): the schema leaves model sections open, so
    `+models.resnet50.learning_rate=...` (Hydra's own advice for a key it does not know) would
    be logged to MLflow and ignored by training."""
    if not isinstance(section, Mapping):
        return []
    known = known_by_kind.get(str(section.get("kind")))
    problems = []

    def walk(values: Mapping, tree: dict, key: str) -> None:
        for sub, value in values.items():
            where = f"{key}.{sub}"
            if sub not in tree:
                problems.append(
                    f"{where}: unknown key; the keys of {key}: {', '.join(sorted(tree))}"
                )
            elif tree[sub] is not None and isinstance(value, Mapping):
                walk(value, tree[sub], where)

    if known is not None:
        walk(section, known, f"models.{name}")
    return problems


def params_in_sync(path: Path, overrides: Sequence[str] = ()) -> bool:
    """Compare content, not bytes: DVC writes the same config with its own YAML layout."""
    return path.exists() and not params_differences(path, overrides)


def params_differences(path: Path, overrides: Sequence[str] = ()) -> list[str]:
    """Each key whose value in `path` differs from `conf/` composed, as
    `key: params.yaml <value>, conf/ <value>` (`absent` for a missing key)."""
    expected = OmegaConf.to_container(compose(overrides), resolve=True)
    found = yaml.safe_load(path.read_text()) if path.exists() else {}
    lines: list[str] = []

    def walk(have: Any, want: Any, where: str) -> None:
        if isinstance(have, Mapping) and isinstance(want, Mapping):
            for key in sorted({*have, *want}, key=str):
                missing = "absent"
                walk(have.get(key, missing), want.get(key, missing), f"{where}{key}.")
        elif have != want:
            lines.append(f"{where.rstrip('.')}: params.yaml {have!r}, conf/ {want!r}")

    walk(found if isinstance(found, Mapping) else {}, expected, "")
    return lines


def missing_folders(cfg: DictConfig) -> list[str]:
    """The dataset folders `show` cannot find here: the schema cannot check them (the demo's
    are made by a stage), and DVC would name a missing root only as a missing dependency."""
    folders = {"dataset.root": cfg.dataset.root, "dataset.masks": cfg.dataset.get("masks")}
    paths = {key: workspace_root() / str(f) for key, f in folders.items() if f is not None}
    return [
        f"{key}: {path} does not exist (yet)" for key, path in paths.items() if not path.exists()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.config", description=__doc__)
    parser.add_argument("command", choices=["write", "check", "show"])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. dataset=all_idb2")
    args = parser.parse_args(argv)
    try:
        if args.command == "write":
            print(f"wrote {write_params(overrides=args.overrides)}")
        elif args.command == "show":
            cfg = compose(args.overrides)
            print(to_yaml(cfg))
            for note in missing_folders(cfg):
                print(f"note: {note}", file=sys.stderr)
        else:
            differences = params_differences(workspace_root() / PARAMS_FILE, args.overrides)
            if differences:
                # `dvc exp apply` restores an experiment's params.yaml, not the conf/ its -S
                # overrides came from: `write` would silently undo the applied experiment.
                print(
                    "params.yaml is out of sync with conf/:\n  "
                    + "\n  ".join(differences)
                    + "\nTo keep these values (e.g. after `dvc exp apply`), set them in conf/, "
                    "then run `python -m pipeline.config write`; `write` alone resets them "
                    "to conf/'s (so does the next `dvc exp run`)."
                )
                return 1
            print("params.yaml is in sync with conf/")
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
