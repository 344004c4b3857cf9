"""Model names: building, parsing, families, and clear errors for names of no known form."""
import re

import pytest

from diffunlearn import naming
from diffunlearn.config import load_schema
from diffunlearn.naming import ModelName, NamingError


@pytest.mark.parametrize("name, parsed", [
    ("original.s0", ModelName("original", 0)),
    ("oracle.f0.s12", ModelName("oracle", 12, forget="f0")),
    ("oracle.class_3-x.s1", ModelName("oracle", 1, forget="class_3-x")),
    ("oracle.s3.s0", ModelName("oracle", 0, forget="s3")),  # a forget id that looks like a seed
    ("unlearn.ascent_descent.f0.s2", ModelName("unlearn", 2, method="ascent_descent", forget="f0")),
    ("pruned.s4", ModelName("pruned", 4)),
    ("attr.retrain.d17.s0", ModelName("attr", 0, method="retrain", subset="d17")),
    ("attr.sparsified.lds2.s5", ModelName("attr", 5, method="sparsified", subset="lds2")),
    ("init.s0", ModelName("init", 0)),
])
def test_parse_and_build_round_trip(name, parsed):
    assert naming.parse(name) == parsed
    assert str(parsed) == name
    fields = {k: v for k, v in parsed._asdict().items() if k != "kind" and v is not None}
    assert naming.model_name(parsed.kind, **fields) == name
    assert naming.seed(name) == parsed.seed
    assert naming.family(name) == name[: name.rindex(".s")]
    assert parsed.family == naming.family(name)


def test_builders():
    assert naming.original(3) == "original.s3"
    assert naming.oracle("f1", 0) == "oracle.f1.s0"
    assert naming.pruned(2) == "pruned.s2"
    assert naming.init(7) == "init.s7"
    assert naming.attributed("retrain", naming.subset("heldout", 4), 1) == "attr.retrain.lds4.s1"
    assert naming.subset("masks", 9) == "d9"
    assert naming.parse_subset("lds4") == ("heldout", 4)
    assert naming.parse_subset("d0") == ("masks", 0)


def test_unlearned_model_of_each_method():
    assert naming.unlearned("do_nothing", "f0", 1) == "original.s1"
    assert naming.unlearned("retrain", "f0", 1) == "oracle.f0.s1"
    assert naming.unlearned("prune_fine_tune", "f0", 1) == "pruned.s1"
    for m in naming.FINE_TUNING_METHODS:
        assert naming.unlearned(m, "f0", 1) == f"unlearn.{m}.f0.s1"
        assert naming.method(naming.unlearned(m, "f0", 1)) == m
    assert naming.method("pruned.s0") == "prune_fine_tune"
    assert naming.method("attr.sparsified.d0.s0") == "sparsified"
    assert naming.method("original.s0") is None and naming.method("oracle.f.s0") is None


def test_templates_are_wildcard_patterns():
    # the rules write outputs as f"{R}/models/{TEMPLATES[kind]}/..." with Snakemake wildcards of these names
    for template in naming.TEMPLATES.values():
        assert set(re.findall(r"\{(\w+)\}", template)) <= set(naming.FIELDS)
        assert re.fullmatch(naming.MODEL_WILDCARD, template.replace("{", "").replace("}", ""))


@pytest.mark.parametrize("name, message", [
    ("original", "bad model name 'original': expected original.s<seed>"),
    ("original.s", "bad model name 'original.s'"),
    ("original.sx", "bad model name 'original.sx'"),
    ("oracle.s0", "expected oracle.<forget>.s<seed>"),
    ("oracle.a.b.s0", "bad model name 'oracle.a.b.s0'"),
    ("unlearn.nope.f0.s0", "expected unlearn.<method>.<forget>.s<seed>"),
    ("unlearn.retrain.f0.s0", "'retrain' has no unlearn models of its own"),
    ("attr.ga.d0.s0", "attribution method 'ga' is not one of retrain, sparsified"),
    ("attr.retrain.x0.s0", "<subset> matching d\\d+|lds\\d+"),
    ("model.s0", "bad model name 'model.s0': it starts with none of original, oracle, unlearn, pruned, attr, init"),
    ("", "bad model name ''"),
])
def test_bad_names_name_the_name_and_the_form(name, message):
    with pytest.raises(NamingError) as exc:
        naming.parse(name)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_bad_fields():
    with pytest.raises(NamingError, match="unknown unlearning method 'npo_typo'"):
        naming.unlearned("npo_typo", "f0", 0)
    with pytest.raises(NamingError, match="bad model name 'oracle.a.b.s0'"):
        naming.oracle("a.b", 0)
    with pytest.raises(NamingError, match="unknown model kind 'x'"):
        naming.model_name("x", seed=0)
    with pytest.raises(NamingError, match="bad subset name 'e1'"):
        naming.parse_subset("e1")


def test_subset_models_keep_their_order():
    names = ["attr.retrain.d1.s0", "init.s0", "attr.sparsified.d0.s0", "attr.retrain.d0.s0",
             "attr.retrain.lds0.s0", "original.s0"]
    assert naming.subset_models(names, "retrain") == ["attr.retrain.d1.s0", "attr.retrain.d0.s0"]
    assert naming.subset_models(names, "retrain", "heldout") == ["attr.retrain.lds0.s0"]


def test_method_lists_agree_with_the_schema():
    props = load_schema()["properties"]
    assert set(props["unlearning"]["properties"]["methods"]["items"]["enum"]) == set(naming.METHODS), \
        "add the method to both naming.METHODS and the schema's unlearning.methods enum"
    assert set(props["attribution"]["properties"]["methods"]["items"]["enum"]) == set(naming.ATTRIBUTION_METHODS)
    assert set(naming.FINE_TUNING_METHODS) <= set(naming.METHODS)
    assert set(naming.ATTRIBUTION_METHODS) <= set(naming.METHODS)
    for m in naming.METHODS:
        assert re.fullmatch(naming.FIELDS["method"], m)
