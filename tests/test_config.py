from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, compose, conf_dir, load, params_in_sync, repo_root

GROUPS = sorted(p.name for p in conf_dir().iterdir() if p.is_dir())


def test_committed_params_yaml_matches_conf():
    assert params_in_sync(repo_root(Path(__file__).parent) / "params.yaml"), (
        "params.yaml is out of sync with conf/: run `python -m pipeline.config write`"
    )


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
    assert cfg.seed == 42


def test_unknown_key_fails_naming_it(tmp_path):
    params = yaml.safe_load((repo_root(Path(__file__).parent) / "params.yaml").read_text())
    params["crop"]["sizee"] = 3
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="crop.sizee"):
        load(path)


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
    ],
)
def test_invalid_values_fail_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        compose([override])


def test_repo_root_sees_through_dvc_temp_experiments(tmp_path):
    temp_copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    temp_copy.mkdir(parents=True)
    assert repo_root(temp_copy) == tmp_path / "repo"


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))
)
def test_every_experiment_builds_its_models(experiment):
    from omegaconf import OmegaConf

    from pipeline.models import build_model

    cfg = compose([f"experiment={experiment}"])
    for name, section in cfg.models.items():
        assert build_model(OmegaConf.to_container(section, resolve=True)).config["name"] == name


def test_every_tuning_grid_names_real_keys_and_valid_values():
    from omegaconf import OmegaConf

    from pipeline.evaluate.tuning import apply_candidate, expand_grid
    from pipeline.models import build_model

    cfg = compose()
    grids = OmegaConf.to_container(cfg.tune.grids)
    assert grids
    for model, grid in grids.items():
        for candidate in expand_grid(grid, model):
            tuned = apply_candidate(cfg, candidate)
            build_model(OmegaConf.to_container(tuned.models[model], resolve=True))
