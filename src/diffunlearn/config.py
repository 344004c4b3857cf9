"""Config validation against ``workflow/schemas/config.schema.yaml``, with defaults filled in.

Errors are one line that names the key's path (``train.lr``), so a typo is found before any job runs.
"""
from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value that the schema or a semantic check rejects."""


def load_schema(path: str | os.PathLike | None = None) -> dict:
    with open(path or SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _key_path(path) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else ("." if parts else "") + str(p))
    return "".join(parts) or "<top level>"


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if name not in instance and "default" in sub:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    import jsonschema

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _format_error(err) -> str:
    path = list(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        where = _key_path(path + [extra[0]]) if extra else _key_path(path)
        return f"config error at {where}: unknown key (allowed here: {', '.join(allowed)})"
    if err.validator == "type":
        return f"config error at {_key_path(path)}: {err.instance!r} is not of type {err.validator_value}"
    if err.validator == "enum":
        return f"config error at {_key_path(path)}: {err.instance!r} is not one of {err.validator_value}"
    if err.validator == "required":
        return f"config error at {_key_path(path)}: {err.message}"
    return f"config error at {_key_path(path)}: {err.message}"


_NOT_PARSED = object()
_SCALAR_PARSERS = {  # a string's value as the schema's type, where it parses cleanly (YAML 1.2 core spellings)
    "null": lambda s: None if s.strip() in ("null", "Null", "NULL", "~", "") else _NOT_PARSED,
    "boolean": lambda s: {"true": True, "false": False}.get(s.strip().lower(), _NOT_PARSED),
    "integer": lambda s: int(s) if re.fullmatch(r"\s*[-+]?[0-9]+\s*", s) else _NOT_PARSED,
    "number": lambda s: _finite_float(s),
}


def _finite_float(s: str):
    try:
        v = float(s)
    except ValueError:
        return _NOT_PARSED
    return v if math.isfinite(v) else _NOT_PARSED


def _types(schema: dict) -> list:
    t = schema.get("type")
    return [t] if isinstance(t, str) else list(t or [])


def _in_enum(value, schema: dict) -> bool:
    return "enum" not in schema or any(value == e and type(value) is type(e) for e in schema["enum"])


def _coerce_string(value: str, schema: dict):
    """As a YAML file would read it, where the schema allows that type; else the string (e.g. 'auto', '12' for a
    string key)."""
    branches = schema.get("oneOf") or schema.get("anyOf") or [schema]
    for b in branches:
        for t in ("null", "boolean", "integer", "number"):
            if t in _types(b):
                v = _SCALAR_PARSERS[t](value)
                if v is not _NOT_PARSED and _in_enum(v, b):
                    return v
    return value


def coerce_strings(instance, schema: dict):
    """``instance`` with string scalars turned into the schema's type (integer, number, boolean, null) where they
    parse cleanly, through objects (properties / additionalProperties), arrays (items) and oneOf / anyOf;
    dicts and lists are changed in place. Snakemake parses lists and mappings given with ``--config`` with
    YAML's BaseLoader, so ``--config seeds=[0,1]`` arrives as ``['0', '1']``. A string that does not parse
    is left as it is, for the schema to reject by name."""
    if isinstance(instance, str):
        return _coerce_string(instance, schema)
    branches = schema.get("oneOf") or schema.get("anyOf") or [schema]
    if isinstance(instance, dict):
        for b in (b for b in branches if "properties" in b or isinstance(b.get("additionalProperties"), dict)):
            props, extra = b.get("properties", {}), b.get("additionalProperties")
            for key, value in instance.items():
                sub = props.get(key, extra if isinstance(extra, dict) else None)
                if sub is not None:
                    instance[key] = coerce_strings(value, sub)
            break
    elif isinstance(instance, list):
        for b in (b for b in branches if isinstance(b.get("items"), dict)):
            instance[:] = [coerce_strings(v, b["items"]) for v in instance]
            break
    return instance


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Validate ``config`` in place, filling defaults; raise :class:`ConfigError` naming the key.
    Strings where the schema wants a number, boolean or null are converted first when they parse
    (:func:`coerce_strings`: values given with ``snakemake --config``)."""
    import jsonschema

    schema = schema or load_schema()
    coerce_strings(config, schema)
    base = jsonschema.validators.validator_for(schema)
    validator = _with_defaults(base)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(list(e.absolute_path)), str(e.message)))
    if errors:
        # The deepest error is the most specific one (a wrong type inside a forget set, not "invalid item").
        err = max(errors, key=lambda e: len(list(e.absolute_path)))
        raise ConfigError(_format_error(err))
    check_semantics(config)
    return config


KNOWN_SIZES = {"digits": 1797, "mnist": 60000, "cifar10": 50000}


def num_train_examples(config: dict) -> int | None:
    """Training-split size when it is known without reading the data (None for image folders)."""
    data = config["data"]
    n = KNOWN_SIZES.get(data["source"])
    if n is None:
        return None
    if data["max_examples"] is not None:
        n = min(n, data["max_examples"])
    return n - validation_count(n, data["validation_fraction"])


def validation_count(n: int, fraction: float) -> int:
    return int(round(n * fraction))


def check_semantics(config: dict) -> None:
    train = config.get("train") or {}
    if train.get("batch_size", 1) % train.get("num_processes", 1):
        raise ConfigError(f"config error at train.num_processes: train.batch_size {train['batch_size']} is not "
                          f"divisible by {train['num_processes']} processes")
    seen = set()
    n_train = num_train_examples(config)
    for i, fs in enumerate(config["forget_sets"]):
        where = f"forget_sets[{i}]"
        if fs["id"] in seen:
            raise ConfigError(f"config error at {where}.id: duplicate forget-set id {fs['id']!r}")
        seen.add(fs["id"])
        needed = {"random": "size", "class": "label", "index_file": "path"}[fs["kind"]]
        if needed not in fs:
            raise ConfigError(f"config error at {where}.{needed}: required for kind {fs['kind']!r}")
        if fs["kind"] == "random" and n_train is not None and fs["size"] >= n_train:
            raise ConfigError(
                f"config error at {where}.size: forget set of {fs['size']} examples is not smaller than "
                f"the training set ({n_train} examples)"
            )
        if fs["kind"] == "index_file" and not os.path.exists(fs["path"]):
            raise ConfigError(f"config error at {where}.path: file not found: {fs['path']}")
    u = config["unlearning"]
    for i, fid in enumerate(u["forget_sets"] or []):
        if fid not in seen:
            raise ConfigError(f"config error at unlearning.forget_sets[{i}]: unknown forget set {fid!r} (defined: {', '.join(sorted(seen)) or 'none'})")
    if u["methods"] and not config["forget_sets"]:
        raise ConfigError("config error at unlearning.methods: unlearning needs at least one entry in forget_sets")
    from diffunlearn.attribution.removal import check_pairing

    try:
        check_pairing(config["attribution"]["estimators"], config["attribution"]["removal"])
    except ValueError as exc:
        raise ConfigError(f"config error at {exc}") from None
    if config["data"]["source"] == "imagefolder":
        if not config["data"]["root"]:
            raise ConfigError("config error at data.root: required for source 'imagefolder'")
        if config["data"]["image_size"] is None:
            raise ConfigError("config error at data.image_size: required for source 'imagefolder'")
    sampling = config.get("sampling") or {}
    for i, seed in enumerate(sampling.get("evaluate_seeds") or []):
        if seed not in config["seeds"]:
            raise ConfigError(f"config error at sampling.evaluate_seeds[{i}]: seed {seed} is not in seeds {config['seeds']}")
    t = config["train"]
    if t["checkpoint_every"] > t["steps"]:
        raise ConfigError(
            f"config error at train.checkpoint_every: {t['checkpoint_every']} is larger than train.steps ({t['steps']})"
        )
    from diffunlearn.weighting import resolve

    study = config.get("speedup") or {}
    blocks = [("train", t)] + [(f"speedup.schemes.{n}", b) for n, b in (study.get("schemes") or {}).items()]
    for where, block in blocks:
        for key in ("timesteps", "loss_weighting"):
            try:
                resolve(block.get(key), key)
            except ValueError as exc:
                raise ConfigError(str(exc).replace("at train.", f"at {where}.")) from None
    from diffunlearn.choice import check_dpo_config

    try:
        check_dpo_config(config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    ext = study.get("feature_extractor")
    if ext is not None and ext not in config["metrics"]["feature_extractors"]:
        raise ConfigError(f"config error at speedup.feature_extractor: {ext!r} is not in metrics.feature_extractors")
    m = config["model"]
    for c in m["block_out_channels"]:
        if c % m["norm_num_groups"]:
            raise ConfigError(
                f"config error at model.block_out_channels: {c} is not divisible by model.norm_num_groups ({m['norm_num_groups']})"
            )


def load_config(path: str | os.PathLike) -> dict:
    with open(path) as fh:
        config = yaml.safe_load(fh) or {}
    return validate_config(config)


def checkpoint_steps(train_cfg: dict) -> list[int]:
    """Steps at which a training run writes a checkpoint (always including the last step)."""
    every, total = train_cfg["checkpoint_every"], train_cfg["steps"]
    steps = list(range(every, total + 1, every))
    if not steps or steps[-1] != total:
        steps.append(total)
    return steps


def resolve_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def export_pythonpath(src: str) -> None:
    """Make ``src`` importable in every job Snakemake starts (also inside conda environments)."""
    current = os.environ.get("PYTHONPATH", "")
    if src not in current.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, current) if p)


def config_reference(schema: dict | None = None) -> list[tuple[str, str, str, str]]:
    """(key path, type, default, meaning) of every config key, for the reference table in docs/config.md."""
    schema = schema or load_schema()
    rows = []

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            p = f"{path}.{key}" if path else key
            if sub.get("type") == "object" and "properties" in sub:
                if path in ("resources", "unlearning"):  # one row per block of same-shaped keys
                    keys = ", ".join(f"{k}={v.get('default')}" for k, v in sub["properties"].items())
                    rows.append((p, "object", "", f"{sub.get('description', '')} Keys: {keys}.".strip()))
                else:
                    walk(sub, p)
                continue
            t = sub.get("type", "")
            t = " or ".join(t) if isinstance(t, list) else t
            desc = sub.get("description", "")
            if "enum" in sub:
                desc = f"{desc} One of: {', '.join(str(e) for e in sub['enum'] if e is not None)}.".strip()
            rows.append((p, t, json_default(sub.get("default", "")), desc))

    walk(schema, "")
    return rows


def json_default(value) -> str:
    import json

    return "" if value == "" else json.dumps(value)


def config_reference_markdown(schema: dict | None = None) -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | `{d}` | {m} |" if d else f"| `{k}` | {t} | | {m} |" for k, t, d, m in config_reference(schema)]
    return "\n".join(lines) + "\n"
