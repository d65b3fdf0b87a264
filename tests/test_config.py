import pytest

from squigglray.config import ConfigError, apply_overrides, build_config, config_hash, load_config
from squigglray.training import BaseTrainConfig


def test_dotted_overrides_are_typed():
    out = apply_overrides({"train": {"steps": 5}}, ["train.steps=7", "train.lr=1e-3", "data.families=[a, b]", "name=x"])
    assert out == {"train": {"steps": 7, "lr": 1e-3}, "data": {"families": ["a", "b"]}, "name": "x"}


def test_hash_is_stable_and_sensitive():
    a = build_config(BaseTrainConfig, {"seed": 1, "train": {"steps": 5}})
    b = build_config(BaseTrainConfig, {"train": {"steps": 5}, "seed": 1})
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(build_config(BaseTrainConfig, {"seed": 2, "train": {"steps": 5}}))
    assert len(config_hash(a)) == 64


def test_yaml_file_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 3\nmodel: {preset: nano}\n")
    cfg = load_config(BaseTrainConfig, p, ["train.steps=11"])
    assert (cfg.seed, cfg.model.preset, cfg.train.steps) == (3, "nano", 11)


@pytest.mark.parametrize(
    "overrides, field, reason",
    [
        (["train.steps=-3"], "train.steps", "greater than or equal to 1"),
        (["train.stepz=3"], "train.stepz", "Extra inputs"),
        (["model.preset=giant"], "model.preset", "unknown preset 'giant'"),
        (["data.families=[mod_power, nope]"], "data.families", "unknown families ['nope']"),
        (["train.lr=fast"], "train.lr", "valid number"),
        (["eval.levels=[easy, brutal]"], "eval.levels", "unknown difficulty levels"),
    ],
)
def test_bad_config_names_field_and_reason(overrides, field, reason):
    with pytest.raises(ConfigError) as e:
        build_config(BaseTrainConfig, {}, overrides)
    assert field in str(e.value) and reason in str(e.value)


def test_bad_curriculum_and_files(tmp_path):
    with pytest.raises(ConfigError, match="fractions must sum to 1"):
        build_config(BaseTrainConfig, {"curriculum": [{"name": "a", "fraction": 0.5}]})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(BaseTrainConfig, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(BaseTrainConfig, bad)
    with pytest.raises(ConfigError, match="key.path=value"):
        build_config(BaseTrainConfig, {}, ["seed"])


def test_bad_config_cli_does_nothing_else(tmp_path):
    from typer.testing import CliRunner

    from squigglray.cli import app

    r = CliRunner().invoke(app, ["train-base", "--set", "train.steps=0", "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 2
    assert "train.steps" in r.output
    assert not (tmp_path / "d").exists()  # failed before any work started
