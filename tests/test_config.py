import re
from pathlib import Path

import pytest

from imgcls.config import ConfigError
from imgcls.configure import load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_are_valid():
    for path in Path("configs").glob("*.yaml"):
        cfg = load_config(path)
        assert cfg.train.epochs >= 1, path


def test_shipped_experiments_are_valid_down_to_their_models():
    from imgcls.experiment.spec import load_experiment
    from imgcls.models import build_model

    for path in sorted(Path("experiments").glob("*.yaml")):
        plan = load_experiment(path)  # every variant x seed validated as a full config
        for variant, _ in plan.variants:
            cfg = plan.config(variant, plan.seeds[0])
            if cfg.model.name.startswith("fastnet"):  # model.args reach the network
                build_model(cfg.model, 10, 32, 3)


def test_set_overrides_parse_yaml_values(tmp_path):
    cfg = load_config(write(tmp_path, "optim: {lr: 0.1}\n"),
                      ["optim.lr=0.05", "train.batch_size=64", "augment.flip=none",
                       "train.early_stopping.patience=3", "optim.betas=[0.8, 0.9]"])
    assert cfg.optim.lr == 0.05 and cfg.train.batch_size == 64
    assert cfg.augment.ops == []  # the foundation's shorthand, as ops
    assert cfg.train.early_stopping.patience == 3  # a section created by --set
    assert cfg.optim.betas == (0.8, 0.9)


def test_unknown_key_suggests_closest_spelling(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "optim:\n  lrr: 0.1\n"))
    text = str(err.value)
    assert "c.yaml" in text and "optim.lrr" in text and "did you mean 'lr'" in text


def test_unknown_top_level_section(tmp_path):
    with pytest.raises(ConfigError, match=r"'trian'.*did you mean 'train'"):
        load_config(write(tmp_path, "trian: {epochs: 3}\n"))


def test_bad_value_names_key_value_and_valid_range():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.batch_size=0", "augment.flip=sideways"])
    text = str(err.value)
    assert "train.batch_size = 0" in text and "greater than or equal to 1" in text
    assert "augment.flip = 'sideways'" in text and "'alternate'" in text


@pytest.mark.parametrize("key,value,hint", [
    ("model.name", "resnet18_cifr", "resnet18_cifar"),
    ("data.source", "cifar1O", "cifar10"),
    ("optim.name", "adamW", "adamw"),
    ("schedule.name", "cosin", "cosine"),
])
def test_registry_names_are_checked_with_suggestions(key, value, hint):
    with pytest.raises(ConfigError, match=rf"{key} = '{value}'.*did you mean '{hint}'"):
        load_config(None, [f"{key}={value}"])


def test_timm_models_are_checked():
    assert load_config(None, ["model.name=timm:resnet18"]).model.name == "timm:resnet18"
    with pytest.raises(ConfigError, match="unknown timm model 'not_a_net'"):
        load_config(None, ["model.name=timm:not_a_net"])


def test_set_syntax_errors(tmp_path):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["optim.lr"])
    with pytest.raises(ConfigError, match="seed is a value, not a section"):
        load_config(write(tmp_path, "seed: 3\n"), ["seed.x=1"])


def test_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(Path("configs/cifar10-fast.yaml"), ["seed=3"])
    again = load_config(write(tmp_path, cfg.to_yaml()))
    assert again == cfg


@pytest.mark.parametrize("sets,words", [
    (["data.source=folder"], "data.path: data.source 'folder' needs data.path"),
    (["model.pretrained=true"], "model.pretrained = true: downloads timm's weights, but "
                                "'fastnet94' is not a timm: model"),
    (["train.amp=fp16", "train.device=cpu"], "train.amp = 'fp16': needs CUDA"),
    (["optim.name=adamm"], "optim.name = 'adamm'"),
])
def test_combinations_that_cannot_run_are_refused_when_the_config_is_read(sets, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(None, sets)
