import copy

import pytest

from conftest import ROOT, run_snakemake, tiny_config, write_config
from diffunlearn.config import ConfigError, checkpoint_steps, load_config, validate_config


def test_default_config_validates_and_fills_defaults():
    cfg = load_config(ROOT / "config" / "config.yaml")
    assert cfg["diffusion"]["num_train_timesteps"] == 1000
    assert cfg["diffusion"]["beta_start"] == pytest.approx(1e-4)
    assert cfg["sampling"]["scheduler"] == "ddpm"
    assert cfg["resources"]["train"]["mem_mb"] > 0


@pytest.mark.parametrize("preset", ["config.yaml", "cifar10.yaml", "imagefolder.yaml"])
def test_presets_validate(preset, tmp_path):
    import yaml

    cfg = yaml.safe_load(open(ROOT / "config" / preset))
    if cfg["data"]["source"] == "imagefolder":
        cfg["data"]["root"] = str(tmp_path)
    validate_config(cfg)


def test_misspelled_key_names_its_path():
    cfg = tiny_config("r")
    cfg["train"]["stpes"] = 10
    with pytest.raises(ConfigError, match=r"train\.stpes: unknown key"):
        validate_config(cfg)


def test_wrong_type_names_its_path():
    cfg = tiny_config("r")
    cfg["train"]["lr"] = "fast"
    with pytest.raises(ConfigError, match=r"train\.lr: 'fast' is not of type"):
        validate_config(cfg)


def test_wrong_type_inside_a_list_names_the_item():
    cfg = tiny_config("r")
    cfg["forget_sets"][0]["size"] = "ten"
    with pytest.raises(ConfigError, match=r"forget_sets\[0\]\.size"):
        validate_config(cfg)


def test_forget_set_larger_than_training_set_is_rejected():
    cfg = tiny_config("r")
    cfg["forget_sets"][0]["size"] = 5000
    with pytest.raises(ConfigError, match=r"forget_sets\[0\]\.size: .*not smaller than the training set \(320"):
        validate_config(cfg)


def test_missing_kind_field_is_rejected():
    cfg = tiny_config("r")
    del cfg["forget_sets"][1]["label"]
    with pytest.raises(ConfigError, match=r"forget_sets\[1\]\.label: required for kind 'class'"):
        validate_config(cfg)


def test_checkpoint_steps_include_the_last_step():
    assert checkpoint_steps({"steps": 300, "checkpoint_every": 100}) == [100, 200, 300]
    assert checkpoint_steps({"steps": 250, "checkpoint_every": 100}) == [100, 200, 250]


@pytest.mark.parametrize("key,value,expected", [
    ("train.stpes", 10, "config error at train.stpes: unknown key"),
    ("sampling.num_samples", "many", "config error at sampling.num_samples: 'many' is not of type"),
])
def test_snakemake_rejects_bad_config_before_any_job(tmp_path, key, value, expected):
    cfg = tiny_config(tmp_path / "results")
    section, name = key.split(".")
    cfg[section][name] = value
    proc = run_snakemake(tmp_path, write_config(tmp_path / "c.yaml", cfg), check=False)
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_config_doc_lists_every_config_key():
    from diffunlearn.config import config_reference

    doc = (ROOT / "docs" / "config.md").read_text()
    missing = [key for key, *_ in config_reference() if f"`{key}`" not in doc]
    assert not missing, f"docs/config.md is stale (regenerate it as it says, python -m diffunlearn config-doc): {missing}"


def test_evaluate_seeds_must_be_training_seeds():
    cfg = tiny_config("r")
    cfg["sampling"]["evaluate_seeds"] = [0, 7]
    with pytest.raises(ConfigError, match=r"sampling\.evaluate_seeds\[1\]: seed 7 is not in seeds \[0\]"):
        validate_config(cfg)
