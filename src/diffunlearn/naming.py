"""Model names: the one place that builds and parses them (rules, their outputs, scripts and the report).

A model name is a kind, its fields and the training seed, joined by dots; no field holds a dot:

==========  =====================================  ==================================================
kind        form                                   what it is
==========  =====================================  ==================================================
original    ``original.s<k>``                      trained on the whole training split
oracle      ``oracle.<forget>.s<k>``               retrained from scratch without a forget set
oracle2     ``oracle2.<forget>.s<k>``              a second, independent set of oracles (klom.reference: extra)
unlearn     ``unlearn.<method>.<forget>.s<k>``     the original, fine-tuned by an unlearning method
pruned      ``pruned.s<k>``                        the original, pruned and fine-tuned (once per seed)
attr        ``attr.<method>.<subset>.s<k>``        trained on an attribution subset (``d<i>``: draw i,
                                                   ``lds<i>``: held-out subset i of the LDS)
init        ``init.s<k>``                          the random initialisation (attribution's empty model)
speedup     ``speedup.<scheme>.s<k>``              an original trained with the timestep / loss-weighting scheme
                                                   speedup.schemes.<scheme> (the training speed-up study)
dpo         ``dpo.<name>.s<k>``                    the original, preference fine-tuned by run dpo.runs[name]
                                                   (Diffusion-DPO or SFT, diffunlearn.preference)
==========  =====================================  ==================================================

A family is a name without its seed (``oracle.f0``); the seeds of a family are its repeats.

Adding an unlearning method is one line here: its name in ``METHODS`` (and in ``FINE_TUNING_METHODS`` when it
runs an ``unlearn`` job of its own for each forget set, which then makes ``unlearn.<method>.<forget>.s<k>``),
plus the same name in the schema's ``unlearning.methods`` enum (tests/test_naming.py checks the two agree).
Adding a kind of model is one entry in ``TEMPLATES`` (and, for a new field, one in ``FIELDS``).
"""
from __future__ import annotations

import functools
import re
from typing import NamedTuple

# Every unlearning method the workflow knows, in the schema's order.
METHODS = ("do_nothing", "ga", "gd", "ascent_descent", "fine_tune_all", "prune_fine_tune", "sparsified", "lora", "iu",
           "npo", "dpo", "retrain")
# Methods that fine-tune in an ``unlearn`` job of their own for each forget set.
FINE_TUNING_METHODS = ("ga", "gd", "ascent_descent", "fine_tune_all", "sparsified", "lora", "iu", "npo", "dpo")
# Methods whose unlearned model is a model of another kind (no unlearn.<method>.<forget> model of their own).
_STANDS_FOR = {"do_nothing": "original", "retrain": "oracle", "prune_fine_tune": "pruned"}
# How attribution trains its subset models.
ATTRIBUTION_METHODS = ("retrain", "sparsified")

# The regular expression of each field (also the wildcard constraints of the rules).
FIELDS = {
    "seed": r"\d+",
    "forget": r"[A-Za-z0-9_-]+",
    "method": "|".join(METHODS),
    "subset": r"d\d+|lds\d+",
    "scheme": r"[A-Za-z0-9_-]+",
    "name": r"[A-Za-z0-9_-]+",
}
# The form of each kind of name: a str.format template that is also the rules' wildcard pattern.
TEMPLATES = {
    "original": "original.s{seed}",
    "oracle": "oracle.{forget}.s{seed}",
    "unlearn": "unlearn.{method}.{forget}.s{seed}",
    "pruned": "pruned.s{seed}",
    "attr": "attr.{method}.{subset}.s{seed}",
    "init": "init.s{seed}",
    "speedup": "speedup.{scheme}.s{seed}",
    "oracle2": "oracle2.{forget}.s{seed}",
    "dpo": "dpo.{name}.s{seed}",
}
# Any model name, as a wildcard constraint.
MODEL_WILDCARD = r"[A-Za-z0-9_.-]+"
# The draws of attribution subsets and the prefix of their subset names.
SUBSET_PREFIX = {"masks": "d", "heldout": "lds"}


class NamingError(ValueError):
    """A model name (or field) that matches none of the forms."""


class ModelName(NamedTuple):
    kind: str
    seed: int
    method: str | None = None
    forget: str | None = None
    subset: str | None = None
    scheme: str | None = None
    name: str | None = None

    @property
    def family(self) -> str:
        """The name without its seed."""
        return family(str(self))

    def __str__(self) -> str:
        return TEMPLATES[self.kind].format(**self._asdict())


def _forms() -> str:
    return ", ".join(t.replace("{", "<").replace("}", ">") for t in TEMPLATES.values())


@functools.cache
def _regex(kind: str) -> re.Pattern:
    pattern = re.escape(TEMPLATES[kind]).replace(r"\{", "{").replace(r"\}", "}")
    return re.compile(re.sub(r"\{(\w+)\}", lambda m: f"(?P<{m[1]}>{FIELDS[m[1]]})", pattern))


def model_name(kind: str, **fields) -> str:
    """The name of a model of ``kind`` with these fields (seed, forget, method, subset); checked by parsing."""
    if kind not in TEMPLATES:
        raise NamingError(f"unknown model kind {kind!r} (known: {', '.join(TEMPLATES)})")
    name = TEMPLATES[kind].format(**fields)
    parse(name)
    return name


@functools.lru_cache(maxsize=65536)
def parse(name: str) -> ModelName:
    """The kind and fields of a model name; :class:`NamingError` naming the name and the forms otherwise."""
    kind = name.split(".", 1)[0]
    if kind not in TEMPLATES:
        raise NamingError(f"bad model name {name!r}: it starts with none of {', '.join(TEMPLATES)} (forms: {_forms()})")
    m = _regex(kind).fullmatch(name)
    if m is None:
        form = TEMPLATES[kind].replace("{", "<").replace("}", ">")
        raise NamingError(f"bad model name {name!r}: expected {form} with "
                          + "; ".join(f"<{k}> matching {FIELDS[k]}" for k in re.findall(r"\{(\w+)\}", TEMPLATES[kind])))
    fields = m.groupdict()
    if kind == "attr" and fields["method"] not in ATTRIBUTION_METHODS:
        raise NamingError(f"bad model name {name!r}: attribution method {fields['method']!r} is not one of "
                          f"{', '.join(ATTRIBUTION_METHODS)}")
    if kind == "unlearn" and fields["method"] not in FINE_TUNING_METHODS:
        raise NamingError(f"bad model name {name!r}: {fields['method']!r} has no unlearn models of its own "
                          f"(those that do: {', '.join(FINE_TUNING_METHODS)})")
    fields["seed"] = int(fields["seed"])
    return ModelName(kind=kind, **fields)


def builder(kind: str):
    """The function that names a model of ``kind`` from its fields in the template's order, seed last:
    ``builder("oracle")("f0", 1) == "oracle.f0.s1"`` (keywords work too)."""
    order = re.findall(r"\{(\w+)\}", TEMPLATES[kind])

    def build(*values, **fields) -> str:
        return model_name(kind, **dict(zip(order, values)), **fields)

    build.__name__ = build.__qualname__ = kind
    build.__doc__ = f"The name {TEMPLATES[kind]} of these fields (checked)."
    return build


# One builder per kind: original(seed), oracle(forget, seed), oracle2(forget, seed) (the second, independent
# oracle set: the floor of klom.reference extra), pruned(seed), init(seed), speedup(scheme, seed) (an original
# of the speed-up study), attributed(method, subset, seed).
original, oracle, oracle2, pruned, init, speedup = (builder(k) for k in
                                                    ("original", "oracle", "oracle2", "pruned", "init", "speedup"))
attributed = builder("attr")
dpo = builder("dpo")  # a preference fine-tuned original: run dpo.runs[name] from original.s<seed>


def unlearned(method: str, forget: str, seed) -> str:
    """The model that plays 'unlearned' for a method: do_nothing the original, retrain the oracle,
    prune_fine_tune the pruned model, a fine-tuning method its own ``unlearn.<method>.<forget>.s<k>``."""
    if method not in METHODS:
        raise NamingError(f"unknown unlearning method {method!r} (known: {', '.join(METHODS)})")
    kind = _STANDS_FOR.get(method, "unlearn")
    fields = {"oracle": {"forget": forget}, "unlearn": {"method": method, "forget": forget}}.get(kind, {})
    return model_name(kind, seed=seed, **fields)


def family(name: str) -> str:
    """The name without its seed: 'original', 'oracle.<forget>', 'unlearn.<method>.<forget>', ..."""
    parse(name)
    return name.rsplit(".s", 1)[0]


def seed(name: str) -> int:
    return parse(name).seed


def method(name: str) -> str | None:
    """The method that made a model: unlearn / attr models their method, pruned ones prune_fine_tune; else None."""
    n = parse(name)
    return "prune_fine_tune" if n.kind == "pruned" else n.method


def subset(draws: str, index: int) -> str:
    """The name of attribution subset ``index`` of ``draws`` ('masks': d<i>, 'heldout': lds<i>)."""
    return f"{SUBSET_PREFIX[draws]}{int(index)}"


def parse_subset(name: str) -> tuple[str, int]:
    """(draws, index) of a subset name: 'd3' -> ('masks', 3), 'lds1' -> ('heldout', 1)."""
    m = re.fullmatch(r"(d|lds)(\d+)", name)
    if m is None:
        raise NamingError(f"bad subset name {name!r}: expected d<i> (a draw) or lds<i> (a held-out subset)")
    return {v: k for k, v in SUBSET_PREFIX.items()}[m[1]], int(m[2])


def subset_models(names, method: str, draws: str = "masks") -> list[str]:
    """The attribution models among ``names`` trained with ``method`` on subsets of ``draws``, in their order."""
    out = []
    for name in names:
        n = parse(name)
        if n.kind == "attr" and n.method == method and parse_subset(n.subset)[0] == draws:
            out.append(name)
    return out
