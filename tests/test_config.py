import subprocess
import sys

import pytest

from diffunlearn.config import ConfigError, checkpoint_steps, load_config, validate_config

from conftest import ROOT, run_snakemake, tiny_config, write_config


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


def _user_dry_run(checkout, *args):
    """``snakemake -n ARGS`` typed in a checkout of the repository (a tmp folder linking to its parts)."""
    for part in ("Snakefile", "workflow", "config", "profiles", "src", "envs"):
        if not (checkout / part).exists():
            (checkout / part).symlink_to(ROOT / part)
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", *args], cwd=checkout, capture_output=True, text=True)


def _dry_run_counts(checkout, *args):
    from conftest import planned_jobs_of

    proc = _user_dry_run(checkout, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return planned_jobs_of(proc.stdout + proc.stderr)


def test_config_seeds_list_on_the_command_line_plans_two_seeds(tmp_path):
    three = _dry_run_counts(tmp_path)  # the embedded default: seeds [0, 1, 2]
    two = _dry_run_counts(tmp_path, "--config", "seeds=[0,1]")
    assert (three["train_original"], two["train_original"]) == (3, 2)
    for rule in ("train_oracle", "margins", "sample", "evaluate", "unlearn", "prune_fine_tune"):
        assert two[rule] * 3 == three[rule] * 2 > 0, rule
    for rule in ("prepare_data", "make_forget_sets", "klom", "report"):
        assert two[rule] == three[rule], rule


def test_config_string_that_does_not_parse_names_its_key(tmp_path):
    proc = _user_dry_run(tmp_path, "--config", "seeds=[0,x]")
    assert proc.returncode != 0
    assert "config error at seeds[1]: 'x' is not of type integer" in proc.stdout + proc.stderr


def test_coerce_strings_follows_the_schema():
    from diffunlearn.config import coerce_strings, load_schema

    schema = load_schema()
    cfg = {"seeds": ["0", "1"], "device": "cpu", "experiment": "12",
           "train": {"lr": "1e-4", "steps": "+20", "grad_clip": "null", "compile": "true", "channels_last": "auto",
                     "mixed_precision": "no"},
           "data": {"max_examples": "~", "validation_fraction": "0.5"},
           "margins": {"timesteps": ["0", "10"]},
           "sampling": {"evaluate_seeds": ["1"]},
           "forget_sets": [{"id": "7", "kind": "class", "label": "7"}],
           "resources": {"train": {"gpu": "1", "gpu_model": "null"}}}
    coerce_strings(cfg, schema)
    assert cfg["seeds"] == [0, 1] and all(type(s) is int for s in cfg["seeds"])
    assert cfg["experiment"] == "12" and cfg["device"] == "cpu"  # strings where the schema wants strings
    assert cfg["train"] == {"lr": 1e-4, "steps": 20, "grad_clip": None, "compile": True, "channels_last": "auto",
                            "mixed_precision": "no"}
    assert cfg["data"] == {"max_examples": None, "validation_fraction": 0.5}
    assert cfg["margins"]["timesteps"] == [0, 10] and cfg["sampling"]["evaluate_seeds"] == [1]
    assert cfg["forget_sets"] == [{"id": "7", "kind": "class", "label": 7}]
    assert cfg["resources"]["train"] == {"gpu": 1, "gpu_model": None}


@pytest.mark.parametrize("value", ["x", "1.5", "nan", "1e999", "0x10", "yes"])
def test_coerce_strings_leaves_what_does_not_parse_for_the_schema(value):
    from diffunlearn.config import coerce_strings

    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "b": {"type": "boolean"}}}
    assert coerce_strings({"n": value}, schema) == {"n": value}
    assert coerce_strings({"b": value}, schema) == {"b": value}
    cfg = tiny_config("r")
    cfg["train"]["steps"] = value
    with pytest.raises(ConfigError, match=rf"^config error at train\.steps: '{value}' is not of type integer$"):
        validate_config(cfg)
