from pathlib import Path

import pytest
import yaml
from omegaconf import open_dict

from pipeline.config import (
    ALL_IDB2_MASK_CODE,
    ConfigError,
    compose,
    conf_dir,
    load,
    mask_colours,
    params_in_sync,
    tracking_home,
    validate,
    workspace_root,
)

GROUPS = sorted(p.name for p in conf_dir().iterdir() if p.is_dir())


def test_committed_params_yaml_matches_conf():
    assert params_in_sync(workspace_root(Path(__file__).parent) / "params.yaml"), (
        "params.yaml is out of sync with conf/: run `python -m pipeline.config write`"
    )


def test_check_names_each_key_an_applied_experiment_changed(tmp_path, monkeypatch, capsys):
    """`dvc exp apply` sets params.yaml but not conf/; `check` must say which values differ
    and that `write` would reset them, not only advise `write` (which undoes the apply)."""
    from omegaconf import OmegaConf

    from pipeline.config import main

    params = OmegaConf.to_container(compose(), resolve=True)
    params["models"]["svm_hog"]["C"] = 0.1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert "models.svm_hog.C: params.yaml 0.1, conf/ 1.0" in out
    assert "set them in conf/" in out


@pytest.mark.parametrize(
    "group,option",
    [
        (group, p.stem)
        for group in GROUPS
        for p in sorted((conf_dir() / group).glob("*.yaml"))
        if group not in ("model",)
    ],
)
def test_every_config_option_composes(group, option):
    cfg = compose([f"{group}={option}"])
    own = yaml.safe_load((conf_dir() / group / f"{option}.yaml").read_text()) or {}
    assert cfg.seed == own.get("seed", 42)  # the default unless the option sets its own


def test_unknown_key_fails_naming_it(tmp_path):
    params = yaml.safe_load((workspace_root(Path(__file__).parent) / "params.yaml").read_text())
    params["crop"]["sizee"] = 3
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="crop.sizee") as raised:
        load(path)
    message = str(raised.value)
    assert "the keys of crop: fraction, margin, pad_to_square, rule, size, threshold" in message
    assert "reference_type" not in message  # OmegaConf's dataclass detail, not the user's


@pytest.mark.parametrize(
    "key,value",
    [
        ("dataset.mask_code", [0, 1, 2]),  # a list where a mapping of regions is wanted
        ("segment.active_contour", 3),  # a number where a section is wanted
        ("dataset", ["a"]),  # a dataset YAML that is a list
    ],
)
def test_a_section_of_the_wrong_type_is_named(tmp_path, key, value):
    """OmegaConf names no key when a section gets a list or a number: the error said
    "invalid config key '?'"; it names the key now."""
    params = yaml.safe_load((workspace_root(Path(__file__).parent) / "params.yaml").read_text())
    *parents, last = key.split(".")
    section = params
    for parent in parents:
        section = section[parent]
    section[last] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=rf"invalid config key '{key}'"):
        load(path)


@pytest.mark.parametrize("empty", ["val", "test"])
def test_an_empty_validation_or_test_split_is_refused(empty):
    other = "test" if empty == "val" else "val"
    with pytest.raises(ConfigError, match="train, val and test must each be > 0"):
        compose([f"split.{empty}=0", f"split.{other}=0.2", "split.train=0.8"])


@pytest.mark.parametrize("device", ["auto", "cpu", "mps", "cuda", "cuda:1", "0,1", " CPU "])
def test_every_documented_device_spelling_is_accepted(device):
    assert compose([f"train.device='{device}'"]).train.device == device


def test_a_conf_file_that_is_not_yaml_is_named_with_its_line(tmp_path, monkeypatch):
    import shutil

    import pipeline.config

    conf = shutil.copytree(conf_dir(), tmp_path / "conf")
    (conf / "dataset" / "broken.yaml").write_text("name: broken\nroot: [unclosed\nadapter: x\n")
    monkeypatch.setattr(pipeline.config, "conf_dir", lambda: conf)
    with pytest.raises(ConfigError, match=r"not valid YAML.*broken\.yaml\", line 2"):
        compose(["dataset=broken"])


def test_a_broken_params_file_or_override_value_is_named(tmp_path):
    from pipeline.config import load, write_params

    params = write_params(tmp_path / "params.yaml")
    with pytest.raises(ConfigError, match=r"override 'cv.folds=\[': '\[' is not a YAML value"):
        load(params, ["cv.folds=["])
    params.write_text("<<<<<<< HEAD\nseed: 1\n=======\nseed: [2\n")  # a merge conflict
    with pytest.raises(ConfigError, match=r"params.yaml: not valid YAML"):
        load(params)


def test_a_stage_takes_hydras_plus_syntax_and_names_a_composition_change(tmp_path):
    from pipeline.config import load, write_params

    params = write_params(tmp_path / "params.yaml")
    assert load(params, ["+split.tolerance=0.3"]).split.tolerance == 0.3
    with pytest.raises(ConfigError, match="changes the composition .*pipeline.config write"):
        load(params, ["+model@models.cell_features_rf=cell_features_rf"])


@pytest.mark.parametrize(
    "override,named",
    [
        # Hydra refuses these without `+`, and its message advises adding one
        ("+models.resnet50.learning_rate=0.1", "models.resnet50.learning_rate: unknown key"),
        ("+models.svm_hog.hog.colour=rgb", "models.svm_hog.hog.colour: unknown key"),
    ],
)
def test_an_unknown_model_key_added_with_plus_is_named(tmp_path, override, named):
    """Model sections are open in the schema: a misspelt key added with `+` was logged to
    MLflow as a param and silently ignored by training."""
    from pipeline.config import write_params

    params = write_params(tmp_path / "params.yaml")
    with pytest.raises(ConfigError, match=named):
        load(params, [override])
    with pytest.raises(ConfigError, match=named):
        compose([override])  # `dvc exp run -S` composes params.yaml with it


def test_open_model_keys_still_take_any_subkey_their_model_checks(tmp_path):
    from pipeline.config import write_params

    params = write_params(tmp_path / "params.yaml")
    cfg = load(
        params,
        ["models.resnet50.color_jitter={brightness: 0.2}", "+models.yolov8.train_args.hsv_s=0.0"],
    )
    assert cfg.models.yolov8.train_args.hsv_s == 0.0


def test_unknown_override_fails_in_hydra():
    with pytest.raises(ConfigError, match="nonexistent"):
        compose(["crop.nonexistent=1"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("split.train=0.5", "sum to 1"),
        ("models.resnet50.lr=-0.1", "models.resnet50.lr"),
        ("segment.method=magic", "segment.method"),
        ("dataset.adapter=nope", "dataset.adapter"),
        ("augment.ops=[hflip,shear]", "shear"),
        ("crop.size=abc", "crop.size"),
        ("crop.margin=-5", "crop.margin: must be >= 0"),
        ("crop.threshold=999", "crop.threshold: must be a grey level"),
        ("segment.otsu_classes=1", "segment.otsu_classes: must be >= 2"),
        ("segment.channel=bogus", "segment.channel: 'bogus' not in"),
        ("split.tolerance=-1", "split.tolerance: must be >= 0"),
        ("train.device=tpu", "train.device='tpu': expected auto"),
        ("train.device='0,0'", "train.device='0,0': repeated GPU id"),
        ("dataset.segment='false'", "dataset.segment: 'false' is text; write it without quotes"),
        ("crop.size='48'", "crop.size: '48' is text"),
        ("crop.fraction=[0.2]", r"crop.fraction: must be \[low, high\]"),
        ("seed=-1", "seed: must be in 0"),
        ("split.group_by=patient", "split.group_by: 'patient' not in"),
        ("cross.on_missing=foo", "cross.on_missing: 'foo' not in"),
        ("cross.targets=[all_idb2,all_idb2]", r"cross.targets: \['all_idb2'\] listed twice"),
        ("tracking.register_metric=auc", "tracking.register_metric: 'auc' not in"),
        ("demo.n_per_class=0", "demo.n_per_class: must be >= 1"),
        ("models.resnet50.batch_size=2.5", "models.resnet50.batch_size: must be an integer > 0"),
        ("train.monitor=val_bogus", "train.monitor: 'val_bogus' not in"),
        ("dataset.name=../escaped", "dataset.name: '../escaped' names output folders"),
        ("dataset.name=a/b", "dataset.name"),
        ("models.resnet50.epochs=abc", "models.resnet50.epochs: must be an integer > 0, got 'abc'"),
        ("models.resnet50.lr=true", "models.resnet50.lr: must be a number"),
        ("cv.folds=1", "cv.folds: must be 0"),
        ("cv.repeats=0", "cv.repeats: must be >= 1"),
        ("evaluate.bootstrap_samples=0", "evaluate.bootstrap_samples: must be >= 1"),
        ("train.num_workers=-1", "train.num_workers: must be >= 0"),
        ("train.early_stopping_patience=-1", "train.early_stopping_patience: must be >= 0"),
        ("train.strategy=foo", "train.strategy: 'foo' not in"),
        ("train.processes=0", "train.processes: must be >= 1"),
        ("probe.folds=1", "probe.folds: must be >= 2"),
        ("probe.bins=0", "probe.bins: must be >= 1"),
        ("augment.multiplier=8", "augment.multiplier: at most 6"),
        ("dataset.name='my data'", "dataset.name"),
    ],
)
def test_invalid_values_fail_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        compose([override])


@pytest.mark.parametrize(
    "dataset,changes,message",
    [
        ("folder_example", {"group_pattern": "^(?P<patient>.+)/"}, "(?P<subject>"),
        ("folder_example", {"group_pattern": "(unclosed"}, "not a regular expression"),
        ("cnmc", {"group_pattern": "(?P<subject>.)"}, "folder/csv adapter only, not cnmc"),
        ("folder_example", {"labels_file": "x.csv"}, "dataset.labels_file: read by the csv"),
        ("csv_example", {"labels_file": None}, "dataset.labels_file: the csv adapter needs"),
        ("csv_example", {"columns": {"path": "f"}}, "dataset.columns: must name"),
        (
            "csv_example",
            {"columns": {"path": "f", "label": "l", "x": "y"}},
            "got ['label', 'path', 'x']",
        ),
        ("csv_example", {"classes": {"all": ["1"]}}, "dataset.classes: must map"),
        ("folder_example", {"classes": {"all": [], "hem": ["b"]}}, "dataset.classes.all: maps to"),
        ("csv_example", {"classes": {"all": ["1"], "hem": [""]}}, "dataset.classes.hem: maps to"),
        ("csv_example", {"classes": {"all": ["1", "0"], "hem": ["0"]}}, "['0'] mapped to both"),
        ("folder_example", {"root": ""}, "dataset.root: empty"),
        ("all_idb2", {"mask_code": {"background": 0}}, "dataset.mask_code.cytoplasm: missing"),
        (
            "all_idb2",
            {"mask_code": {"background": 0, "cytoplasm": 1, "nuclei": 2}},
            "dataset.mask_code: unknown regions ['nuclei']",
        ),
        (
            "all_idb2",
            {"mask_code": {"background": 0, "cytoplasm": [0, 0, 256]}},
            "dataset.mask_code.cytoplasm: [0, 0, 256] is not a colour",
        ),
        (
            "all_idb2",
            {"mask_code": {"background": [0, 0, 0], "cytoplasm": 0}},
            "background and cytoplasm share one colour",
        ),
    ],
)
def test_adapter_keys_are_checked_naming_the_key(dataset, changes, message):
    cfg = compose([f"dataset={dataset}"])
    with open_dict(cfg):
        for key, value in changes.items():
            cfg.dataset[key] = value
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert message in str(info.value)


def test_a_mask_code_reads_as_rgb_per_region_and_null_is_all_idb2s():
    assert mask_colours(None) == ALL_IDB2_MASK_CODE
    label_map = mask_colours({"background": 0, "cytoplasm": 1, "nucleus": 2})
    assert label_map == {"background": (0, 0, 0), "cytoplasm": (1, 1, 1), "nucleus": (2, 2, 2)}
    binary = mask_colours({"background": 0, "cytoplasm": [255, 255, 255]})
    assert binary["nucleus"] is None
    cfg = compose(["dataset=all_idb2", "dataset.mask_code={background:0,cytoplasm:255}"])
    assert mask_colours(cfg.dataset.mask_code)["cytoplasm"] == (255, 255, 255)


def test_tracking_home_sees_through_dvc_temp_experiments_but_the_workspace_does_not(
    tmp_path, monkeypatch
):
    repo = tmp_path / "repo"
    temp_copy = repo / ".dvc" / "tmp" / "exps" / "tmp" / "abc123"
    temp_copy.mkdir(parents=True)
    (temp_copy / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking_home(temp_copy) == repo
    # the experiment's own params.yaml, data roots and outputs live in the copy
    assert workspace_root(temp_copy) == temp_copy
    # DVC points DVC_ROOT at the parent repository for queued runs: only tracking follows it
    monkeypatch.setenv("DVC_ROOT", str(repo))
    monkeypatch.chdir(temp_copy)
    assert tracking_home() == repo and workspace_root() == temp_copy


def test_stages_read_the_params_of_the_folder_they_run_in(tmp_path, monkeypatch):
    from pipeline.config import write_params

    repo, copy = tmp_path / "repo", tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmp" / "x"
    copy.mkdir(parents=True)
    write_params(repo / "params.yaml", ["segment=otsu_active_contour"])
    write_params(copy / "params.yaml", ["segment=otsu"])
    (copy / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("DVC_ROOT", str(repo))  # as DVC sets it for a queued experiment
    monkeypatch.chdir(copy)
    assert load().segment.method == "otsu"


EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_builds_its_models(experiment):
    from omegaconf import OmegaConf

    from pipeline.models import build_model

    cfg = compose([f"experiment={experiment}"])
    for name, section in cfg.models.items():
        assert build_model(OmegaConf.to_container(section, resolve=True)).config["name"] == name


@pytest.mark.parametrize("option", sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml")))
def test_every_model_option_can_be_added_to_a_run(option):
    """`-S '+model@models.<name>=<name>'` (how an opt-in model such as cell_features_rf runs)
    adds a model that validates and builds beside the default five."""
    from omegaconf import OmegaConf

    from pipeline.models import build_model

    cfg = compose([f"+model@models.extra_{option}={option}", "experiment=cnmc_scratch"])
    section = OmegaConf.to_container(cfg.models[f"extra_{option}"], resolve=True)
    assert build_model(section).kind == section["kind"]
    assert len(cfg.models) == len(compose(["experiment=cnmc_scratch"]).models) + 1


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
def test_every_tuning_grid_names_real_keys_and_valid_values(experiment):
    from omegaconf import OmegaConf

    from pipeline.evaluate.tuning import apply_candidate, expand_grid
    from pipeline.models import build_model

    cfg = compose([f"experiment={experiment}"] if experiment else [])
    grids = OmegaConf.to_container(cfg.tune.grids)
    assert grids
    for model, grid in grids.items():
        for candidate in expand_grid(grid, model):
            tuned = apply_candidate(cfg, candidate)
            build_model(OmegaConf.to_container(tuned.models[model], resolve=True))


def test_a_key_that_params_yaml_lacks_is_named(tmp_path):
    params = yaml.safe_load((workspace_root(Path(__file__).parent) / "params.yaml").read_text())
    del params["split"]["tolerance"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"split\.tolerance"):
        load(tmp_path / "params.yaml")


def test_the_schema_states_no_default_value():
    """Defaults live in conf/ alone: a schema default could silently disagree with the YAML."""
    from dataclasses import MISSING as NO_DEFAULT
    from dataclasses import fields, is_dataclass

    from omegaconf import MISSING

    from pipeline import schema

    for cls in vars(schema).values():
        if not (is_dataclass(cls) and cls.__module__ == schema.__name__):
            continue
        for f in fields(cls):
            if f.default_factory is not NO_DEFAULT:  # a nested section (its fields are checked)
                assert is_dataclass(f.default_factory), f"{cls.__name__}.{f.name}"
            elif cls is schema.DatasetConfig and f.name in schema.OPTIONAL_DATASET_KEYS:
                assert f.default is None, f"{cls.__name__}.{f.name} = {f.default!r}"
            else:
                assert f.default == MISSING, f"{cls.__name__}.{f.name} = {f.default!r}"


def test_an_experiments_grids_replace_the_default_ones_whole():
    """conf/tune/grids is a config group: an experiment's grid is searched as written, with no
    default candidate merged in (a merged key would silently multiply the nested CV's cost)."""
    from omegaconf import OmegaConf

    default = OmegaConf.to_container(compose([]).tune.grids)
    nested = OmegaConf.to_container(compose(["experiment=cnmc_nested"]).tune.grids)
    assert set(default["svm_hog"]) - set(nested["svm_hog"])  # default keys it leaves out
    assert nested == OmegaConf.to_container(
        OmegaConf.load(conf_dir() / "tune" / "grids" / "cnmc_input_side.yaml")
    )
    assert compose(["tune/grids=cnmc_input_side"]).tune.grids == nested  # `-S tune/grids=...`


def test_a_dataset_file_missing_keys_names_them_and_what_to_do(tmp_path, monkeypatch):
    import shutil

    import pipeline.config as config

    conf = tmp_path / "conf"
    shutil.copytree(conf_dir(), conf)
    (conf / "dataset" / "mine.yaml").write_text("name: mine\nadapter: folder\nroot: data/x\n")
    monkeypatch.setattr(config, "conf_dir", lambda: conf)
    with pytest.raises(ConfigError, match=r"without a value: \['dataset\.classes'.*conf/dataset/"):
        compose(["dataset=mine"])


def test_an_ensemble_member_that_is_no_model_is_refused():
    with pytest.raises(ConfigError, match=r"ensemble.members: \['nope'\] not in models"):
        compose(["ensemble.members=[svm_hog,nope]"])


def test_a_copied_dataset_yaml_that_keeps_the_original_name_is_refused(tmp_path, monkeypatch):
    """Two datasets with one name would overwrite each other's models, reports and runs."""
    import shutil

    import pipeline.config
    from pipeline.config import load, write_params

    conf = shutil.copytree(conf_dir(), tmp_path / "conf")
    monkeypatch.setattr(pipeline.config, "conf_dir", lambda: conf)
    params = write_params(tmp_path / "params.yaml", ["dataset=folder_example"])
    original = (conf / "dataset" / "folder_example.yaml").read_text()
    (conf / "dataset" / "my_cells.yaml").write_text(original)
    # `dvc exp run -S dataset=...` composes params.yaml with DVC's own Hydra: every stage's
    # reading of it must refuse the clash, not only our compose
    with pytest.raises(ConfigError, match=r"folder_example\.yaml and conf/dataset/my_cells\.yaml"):
        load(params)
    for chosen in ("my_cells", "folder_example"):  # the clash is there whichever is run
        with pytest.raises(
            ConfigError, match=r"folder_example\.yaml and conf/dataset/my_cells\.yaml both"
        ):
            compose([f"dataset={chosen}"])
    renamed = original.replace("name: folder_example", "name: my_cells")
    assert renamed != original
    (conf / "dataset" / "my_cells.yaml").write_text(renamed)
    assert compose(["dataset=my_cells"]).dataset.name == "my_cells"


@pytest.mark.parametrize("written", ["yes", "1"])
def test_an_unquoted_label_yaml_reads_as_a_bool_or_number_says_to_quote_it(tmp_path, written):
    """Folders `1/` and `0/`, or labels yes/no, written unquoted in a dataset YAML, reach the
    config as 1 or True: the error said "Value True (bool) is incompatible with type hint
    'str'" for what the user wrote as `yes`, and not what to do."""
    from omegaconf import OmegaConf

    params = yaml.safe_load((workspace_root(Path(__file__).parent) / "params.yaml").read_text())
    dataset = compose(["dataset=folder_example"]).dataset
    params["dataset"] = OmegaConf.to_container(dataset, resolve=True)
    params["dataset"]["classes"]["all"] = ["PLACEHOLDER"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params).replace("PLACEHOLDER", written))
    with pytest.raises(ConfigError) as raised:
        load(path)
    message = str(raised.value)
    assert "dataset.classes.all" in message and "write it in quotes" in message


def test_show_notes_a_dataset_folder_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt root is shown with the rest and named, before DVC calls it a missing dep."""
    from pipeline.config import main

    present = tmp_path / "cells"
    present.mkdir()
    assert main(["show", f"dataset.root={present}", "dataset.masks=null"]) == 0
    assert "note:" not in capsys.readouterr().err
    assert main(["show", f"dataset.root={tmp_path / 'cels'}", f"dataset.masks={present}"]) == 0
    err = capsys.readouterr().err
    assert f"note: dataset.root: {tmp_path / 'cels'} does not exist (yet)" in err
    assert "dataset.masks" not in err
