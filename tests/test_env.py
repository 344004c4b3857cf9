"""envs/diffunlearn.yaml is a lock: every dependency of pyproject.toml pinned exactly, within its specifier."""
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT


def _pins() -> dict:
    env = yaml.safe_load((ROOT / "envs" / "diffunlearn.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pins = {}
    for line in pip + [c.replace("=", "==", 1) for c in conda if "=" in c and not c.startswith("python=")]:
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"envs/diffunlearn.yaml: {line!r} is not an exact pin"
        pins[canonicalize_name(req.name)] = spec[0].version
    return pins


def test_every_dependency_is_pinned_within_its_specifier():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins()
    for line in project["dependencies"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"envs/diffunlearn.yaml does not pin {req.name} (pyproject.toml: {line!r})"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"envs/diffunlearn.yaml pins {req.name}=={pins[name]}, outside pyproject.toml's {line!r}"


def test_python_is_pinned_within_requires_python():
    from packaging.specifiers import SpecifierSet

    env = yaml.safe_load((ROOT / "envs" / "diffunlearn.yaml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    version = python.split("=", 1)[1]
    assert version.count(".") == 2, f"envs/diffunlearn.yaml: {python!r} is not an exact pin"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(version)
