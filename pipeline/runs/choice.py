"""Choose an upstream setting (crop rule, segmentation) or a model inside each CV fold from
published runs, with no training (`python -m pipeline.stages.choose_upstream`).

The `cv` stage's nested CV can only vary what acts inside a fold (`tune.grids`); the crop and
the segmentation are upstream stages, fixed for a whole run. So run the same CV once per
setting (`dvc exp run -S cv.folds=5 -S crop.rule=fraction cv@<model>`, then `snapshot`), and
this command makes the nested choice from the published runs: in every fold it keeps the
setting whose predictions score best on that fold's validation part (the in-stage nested CV's
rule, `crossval.rank_by_validation`), and only the kept setting's predictions score the test
fold. The choice is `ensemble_cv` with one member kept per fold (`top_k` = 1), so its folds
must be identical across settings (checked).

Each snapshot must prove what it holds: its `dvc.lock` records the md5 of the `cv@<model>`
predictions folder the snapshot copied. Every figure is computed from those predictions with
today's metrics code, the settings' own rows as the choice's. The settings must
share every param of the `cv` stage and may differ only in the upstream stages' params
(`ingest`, `segment`, `crop`), which name each setting in the outputs. They are read from the
crop run whose output the CV's lock names as its input (by md5), in any of the setting's
snapshots: a snapshot of `cv@<model>` alone needs the one of its crop run beside it.
`ensemble` among the models averages its members' chosen predictions as `ensemble_cv` does
(`ensemble.*` of the first setting's params; `--ensemble key=value ...` replaces `members`,
`weights` or `top_k`, e.g. `top_k=3`: in every fold the 3 members best on its validation
part; a key added to conf/ since that run takes today's default, listed in the ensemble's
`params_filled_from_conf`). `best` is the model chosen per fold: in every fold, of the other
models named (each with its own chosen setting), the one whose predictions score best on the
fold's validation part scores the test fold (`ensemble_cv`, `top_k` = 1). With one setting
only `best` and `ensemble` choose: among its models (e.g. two estimators' CVs on the same
folds).
Writes `reports/upstream/<dataset>/<name>.{json,md}` and, per model,
`reports/upstream/<dataset>/<name>/<model>/` (the cv stage's three files). Not a DVC stage: it
combines published runs, like `protocol`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pipeline import config, paths
from pipeline.config import ConfigError
from pipeline.evaluate import crossval
from pipeline.evaluate.metrics import headline
from pipeline.io import atomic_write_json, atomic_write_text, dvc_dir_md5, locked_outs, read_yaml
from pipeline.report.table import format_ci
from pipeline.tracking import code_and_machine

EXPERIMENTS = paths.REPORTS / "experiments"
UPSTREAM_STAGES = ("ingest", "segment", "crop")
ENSEMBLE = "ensemble"
BEST = "best"
ENSEMBLE_KEYS = ("members", "weights", "top_k")  # what --ensemble may set
NESTED = "nested choice"
KEPT = ("folds", "repeats", "n", "accuracy_mean", "accuracy_std", "val_accuracy_mean")


@dataclass(frozen=True)
class SettingRun:
    """One setting's CV of one model, as a snapshot published it."""

    label: str
    snapshot: Path
    params: DictConfig
    cv_params: dict[str, Any]
    upstream: dict[str, Any]
    predictions: pd.DataFrame


@dataclass(frozen=True)
class Snapshot:
    """A published run's folder and the stages its `dvc.lock` records (read once)."""

    path: Path
    stages: dict[str, Any]


def parse_setting(text: str) -> tuple[str, list[Snapshot]]:
    """'bbox:cnmc_grouped_cv,cnmc_grouped_cv_cnns' -> ('bbox', [snapshots])."""
    label, sep, folders = text.partition(":")
    if not sep or not label or not folders:
        raise ConfigError(f"setting {text!r}: expected <label>:<snapshot>[,<snapshot>...]")
    snapshots = []
    for folder in folders.split(","):
        if not folder.strip():
            raise ConfigError(f"setting {text!r}: an empty snapshot name (a stray comma?)")
        path = Path(folder) if Path(folder).is_dir() else EXPERIMENTS / folder
        if not path.is_dir():
            raise FileNotFoundError(f"setting {label!r}: no snapshot folder {folder!r} ({path})")
        lock = read_yaml(path / "dvc.lock")
        snapshots.append(Snapshot(path, lock.get("stages") or {}))
    return label, snapshots


def _flat(section: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in section.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def upstream_params(label: str, snapshots: Sequence[Snapshot], cropped: str, md5: str) -> dict:
    """The ingest, segment and crop params of the run that wrote `cropped` with this `md5`,
    from whichever of the setting's snapshots recorded it (a snapshot of `cv@*` alone has
    none)."""
    for snapshot in snapshots:
        stages = snapshot.stages
        if locked_outs([stages.get("crop", {})]).get(cropped) == md5:
            return {
                key: value
                for name in UPSTREAM_STAGES
                for key, value in _flat(
                    stages.get(name, {}).get("params", {}).get("params.yaml", {})
                ).items()
            }
    names = ", ".join(s.path.name for s in snapshots)
    raise FileNotFoundError(
        f"setting {label!r}: none of {names} records the crop stage that wrote its CV's input "
        f"{cropped} (md5 {md5}); add the snapshot of that run to the setting"
    )


def load_setting_run(label: str, snapshots: Sequence[Snapshot], model: str) -> SettingRun:
    """The first of `snapshots` whose lock has `cv@<model>`, checked against that lock; its
    upstream params are those of the crop run its lock names as the CV's input."""
    stage = f"cv@{model}"
    found = next((s for s in snapshots if stage in s.stages), None)
    if found is None:
        names = ", ".join(s.path.name for s in snapshots)
        raise FileNotFoundError(f"setting {label!r}: no {stage} in the lock of {names}")
    snapshot, entry = found.path, found.stages[stage]
    params = OmegaConf.create(read_yaml(snapshot / "params.yaml"))
    folder = snapshot / "cv" / model
    published = paths.cv_dir(params.dataset.name, model).as_posix()
    recorded = locked_outs([entry]).get(published)
    if not folder.is_dir() or dvc_dir_md5(folder) != recorded:
        raise ValueError(
            f"setting {label!r}: {folder} is not the {published} that {snapshot}/dvc.lock "
            f"records for {stage} (md5 {recorded})"
        )
    cropped = paths.cropped(params.dataset.name).as_posix()
    inputs = {dep["path"]: dep.get("md5") for dep in entry.get("deps", [])}
    if cropped not in inputs:
        raise ValueError(f"setting {label!r}: {snapshot}/dvc.lock: {stage} names no {cropped}")
    return SettingRun(
        label=label,
        snapshot=snapshot,
        params=params,
        cv_params=entry.get("params", {}).get("params.yaml", {}),
        upstream=upstream_params(label, snapshots, cropped, inputs[cropped]),
        predictions=pd.read_csv(folder / "predictions.csv", dtype={"id": str, "group": str}),
    )


def differing_upstream(runs: Sequence[SettingRun]) -> dict[str, dict[str, Any]]:
    """{label: {upstream key: value}} of the keys whose values differ between the settings;
    an error if a `cv` stage param differs or no upstream param does. One setting alone has
    nothing upstream to choose (`best` and `ensemble` choose among its models)."""
    first = runs[0]
    if len(runs) == 1:
        return {first.label: {}}
    for run in runs[1:]:
        for key in sorted(set(first.cv_params) | set(run.cv_params)):
            if first.cv_params.get(key) != run.cv_params.get(key):
                raise ConfigError(
                    f"choose_upstream: settings {first.label!r} and {run.label!r} ran "
                    f"{first.snapshot.name}'s and {run.snapshot.name}'s cv stage with different "
                    f"{key!r}; only upstream stages ({', '.join(UPSTREAM_STAGES)}) may differ"
                )
    keys = sorted({k for run in runs for k in run.upstream})
    varied = [k for k in keys if len({json.dumps(r.upstream.get(k)) for r in runs}) > 1]
    if not varied:
        labels = ", ".join(r.label for r in runs)
        raise ConfigError(f"choose_upstream: {labels} share every upstream param: no choice")
    return {run.label: {k: run.upstream.get(k) for k in varied} for run in runs}


def plain_cv(run: SettingRun) -> dict[str, Any]:
    """The setting's own CV summary, recomputed from its predictions as the choice's is (the
    test figures equal the cv stage's; its validation figures came from training history)."""
    return crossval.ensemble_cv({run.label: run.predictions}, None, None, run.params)[0]


def choose(
    runs: Sequence[SettingRun],
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Nested choice among `runs` (one model's CV under each setting): summary, the kept
    predictions of every fold, and the record of which setting each fold kept."""
    labels = [run.label for run in runs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"choose_upstream: setting labels repeat: {labels}")
    settings = differing_upstream(runs)
    members = {run.label: run.predictions for run in runs}
    summary, predictions, record = crossval.ensemble_cv(members, None, 1, runs[0].params)
    record = {
        "selection": "nested",
        "rule": "per fold, the best validation accuracy, then the lower validation loss",
        "settings": {
            run.label: {"snapshot": run.snapshot.as_posix(), **settings[run.label]} for run in runs
        },
        "chosen": [
            {"repeat": row["repeat"], "fold": row["fold"], "setting": row["members"][0]}
            for row in record["chosen"]
        ],
    }
    return summary, predictions, record


def table(models: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Per model, a row per setting (its own CV) and the row of the nested choice."""
    rows = []
    for model, result in models.items():
        chosen = pd.Series([c["setting"] for c in result.get("chosen", [])]).value_counts()
        picked = pd.Series(  # `best`'s model per fold, or a top_k ensemble's members
            [c["model"] for c in result.get("models_chosen", [])]
            + [m for c in result.get("members_chosen", []) for m in c["members"]]
        ).value_counts()
        nested_kept = (
            ", ".join(f"{setting} {n}" for setting, n in chosen.items())
            or ", ".join(f"{name} {n}" for name, n in picked.items())
            or "each member's own"  # the ensemble averages its members' chosen predictions
        )
        for label, summary in [*result["settings"].items(), (NESTED, result["nested"])]:
            rows.append(
                {
                    "model": model,
                    "setting": label,
                    "folds kept": nested_kept if label == NESTED else str(chosen.get(label, 0)),
                    "Ac mean ± std": f"{summary['accuracy_mean'] * 100:.1f} ± "
                    f"{(summary['accuracy_std'] or 0.0) * 100:.1f}",
                    "Ac pooled": format_ci(summary, "accuracy"),
                    "F1w pooled": format_ci(summary, "f1_weighted"),
                    "Bal. acc. pooled": format_ci(summary, "balanced_accuracy"),
                    "ROC-AUC pooled": format_ci(summary, "roc_auc", 1),
                    "validation parts (Ac)": (
                        f"{summary['val_accuracy_mean']:.3f}"
                        if summary.get("val_accuracy_mean") is not None
                        else "—"
                    ),
                }
            )
    return pd.DataFrame(rows)


def pooled_params(runs_by_model: Mapping[str, Sequence[SettingRun]]) -> DictConfig:
    """The first model's params with every model's own `models.<name>` section: a model opted
    into its own runs only (`+model@models.cell_features_rf=...`) is absent from the others'
    params, and an ensemble may still name it."""
    params = next(iter(runs_by_model.values()))[0].params.copy()
    for model, runs in runs_by_model.items():
        if model in (runs[0].params.models or {}):
            params.models[model] = runs[0].params.models[model]
    return params


def ensemble_config(
    params: DictConfig, overrides: Sequence[str]
) -> tuple[DictConfig, dict[str, Any]]:
    """The first setting's params with `ensemble.<key>=<value>` overrides, validated, and the
    keys added to conf/ since that run that were filled with today's defaults."""
    unknown = [o for o in overrides if "=" in o and o.split("=", 1)[0] not in ENSEMBLE_KEYS]
    if unknown:
        raise ConfigError(
            f"choose_upstream: --ensemble {unknown}: only {list(ENSEMBLE_KEYS)} can be set"
        )
    cfg = config.apply_overrides(params.copy(), [f"ensemble.{o}" for o in overrides])
    cfg, filled = config.fill_added_keys(cfg)
    config.validate(cfg)
    return cfg, filled


def ensemble_result(
    runs_by_model: Mapping[str, Sequence[SettingRun]],
    chosen: Mapping[str, pd.DataFrame],
    overrides: Sequence[str] = (),
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """The ensemble (the first setting's `ensemble.*`, with `overrides`) under each setting
    alone and over its members' chosen predictions: (result as in the JSON, chosen
    predictions, record)."""
    first, filled = ensemble_config(pooled_params(runs_by_model), overrides)
    members = list(first.ensemble.members)
    missing = [m for m in members if m not in chosen]
    if missing:
        raise ConfigError(
            f"choose_upstream: the ensemble's members {missing} are not among the models chosen "
            f"here; name them too (ensemble.members: {members})"
        )
    weights = None if first.ensemble.weights is None else list(first.ensemble.weights)
    vote = {"weights": weights, "top_k": first.ensemble.top_k, "cfg": first}
    per_setting = {}
    for index, run in enumerate(runs_by_model[members[0]]):
        tables = {m: runs_by_model[m][index].predictions for m in members}
        per_setting[run.label] = headline(crossval.ensemble_cv(tables, **vote)[0], KEPT)
    summary, predictions, record = crossval.ensemble_cv({m: chosen[m] for m in members}, **vote)
    result = {
        "settings": per_setting,
        "nested": headline(summary, KEPT),
        "members": members,
        "weights": weights,
        "top_k": vote["top_k"],
    }
    if vote["top_k"] is not None:
        result["members_chosen"] = record["chosen"]
    if filled:  # the snapshot predates these keys; they were not the run's to choose
        result["params_filled_from_conf"] = filled
    return result, predictions, {**record, "members_chosen_by": "choose_upstream"}


def best_result(
    chosen: Mapping[str, pd.DataFrame], cfg: DictConfig
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """The model chosen per fold among `chosen` (each model's chosen predictions) by the
    fold's validation part: (result as in the JSON, its predictions, record)."""
    if len(chosen) < 2:
        raise ConfigError("choose_upstream: `best` needs at least two models to choose from")
    summary, predictions, record = crossval.ensemble_cv(dict(chosen), None, 1, cfg)
    models_chosen = [
        {"repeat": row["repeat"], "fold": row["fold"], "model": row["members"][0]}
        for row in record["chosen"]
    ]
    result = {"settings": {}, "nested": headline(summary, KEPT), "models_chosen": models_chosen}
    rule = "per fold, the model (with its own chosen setting) with the best validation accuracy"
    return result, predictions, {**record, "rule": f"{rule}, then the lower validation loss"}


def choose_and_write(
    name: str, settings: Sequence[str], models: Sequence[str], ensemble: Sequence[str] = ()
) -> Path:
    """Choose among `settings` ('<label>:<snapshot>,...') for each of `models` (`ensemble`:
    `ensemble.*` overrides); returns the JSON written. Every model is checked before anything
    is written."""
    config.plain_name(name, "output name")
    if ensemble and ENSEMBLE not in models:
        raise ConfigError(f"--ensemble {list(ensemble)} given, but `ensemble` is not in --models")
    parsed = [parse_setting(text) for text in settings]
    if len(parsed) < 2 and not {ENSEMBLE, BEST} & set(models):
        raise ConfigError(
            "name at least two settings to choose from, or `best` / "
            "`ensemble` to choose among the models of one"
        )
    trained = [m for m in models if m not in (ENSEMBLE, BEST)]
    if not trained:
        raise ConfigError("name at least one model besides the ensemble")
    runs_by_model = {
        model: [load_setting_run(label, snapshots, model) for label, snapshots in parsed]
        for model in trained
    }
    results: dict[str, dict[str, Any]] = {}
    outputs: dict[str, tuple[pd.DataFrame, dict[str, Any]]] = {}
    for model, runs in runs_by_model.items():
        summary, predictions, record = choose(runs)
        results[model] = {
            "settings": {run.label: headline(plain_cv(run), KEPT) for run in runs},
            "nested": headline(summary, KEPT),
            "chosen": record["chosen"],
        }
        outputs[model] = (predictions, record)
    chosen = {m: outputs[m][0] for m in trained}  # each model's kept predictions
    if ENSEMBLE in models:
        result, predictions, record = ensemble_result(runs_by_model, chosen, ensemble)
        results[ENSEMBLE], outputs[ENSEMBLE] = result, (predictions, record)
    if BEST in models:
        result, predictions, record = best_result(chosen, runs_by_model[trained[0]][0].params)
        results[BEST], outputs[BEST] = result, (predictions, record)
    first = runs_by_model[trained[0]]
    out = paths.REPORTS / "upstream" / first[0].params.dataset.name / name
    for model, (predictions, record) in outputs.items():
        crossval.write_cv_folder(
            out / model, predictions, crossval.subject_table(predictions), record
        )
    payload = {
        "dataset": first[0].params.dataset.name,
        "name": name,
        "settings": {  # what tells the settings apart; each model's snapshot: selection.json
            label: {
                "snapshots": [snapshot.path.as_posix() for snapshot in snapshots],
                **differing_upstream(first)[label],
            }
            for label, snapshots in parsed
        },
        "models": results,
        "provenance": code_and_machine(),
    }
    atomic_write_json(out.with_suffix(".json"), payload)
    atomic_write_text(out.with_suffix(".md"), table(results).to_markdown(index=False) + "\n")
    return out.with_suffix(".json")
