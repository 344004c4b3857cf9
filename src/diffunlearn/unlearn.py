"""Unlearning methods as training objectives.

Methods (docs/design.md, docs/methods.md): do_nothing (the original), ga (gradient ascent on the forget set),
gd (fine-tuning on the retain set), ascent_descent (alternating), prune_fine_tune (prune the original with
torch-pruning, diffunlearn.prune, and fine-tune the smaller model on all data; once per seed), sparsified (gd on
the retain set from the pruned-and-fine-tuned model), retrain (the oracle: training from scratch on the retain
set), lora (a LoRA adapter fine-tuned on the retain set and merged, diffunlearn.lora), iu (influence unlearning:
one WoodFisher step, diffunlearn.influence), npo (negative preference optimisation: the forget examples as losers
against the frozen original, diffunlearn.preference), dpo (Diffusion-DPO with retain examples as winners and forget
examples as losers, against the frozen original).
"""
from __future__ import annotations

# The method names, and which of them fine-tune in a job of their own: diffunlearn.naming (METHODS,
# FINE_TUNING_METHODS); the objective and the data each one reads: below.


def objective(method: str, hp: dict):
    """The (source, sign) pairs of each step: sources are 'forget', 'retain' or 'train'."""
    if method == "ga":
        return lambda step: [("forget", -1.0)]
    if method in ("gd", "sparsified", "lora"):
        return lambda step: [("retain", 1.0)]
    if method == "ascent_descent":
        a, d = hp["ascent_steps"], hp["descent_steps"]
        return lambda step: [("forget", -1.0)] if step % (a + d) < a else [("retain", 1.0)]
    if method in ("prune_fine_tune", "fine_tune_all"):  # fine_tune_all: gd's fine-tuning on all data, a control
        return lambda step: [("train", 1.0)]
    if method == "npo":  # descends the NPO loss (preference_loss), which pushes the forget loss up, boundedly
        return lambda step: [("forget", 1.0)]
    if method == "dpo":  # winners: retain examples; their paired losers (forget examples) are read by the loss
        return lambda step: [("winners", 1.0)]
    raise ValueError(f"method {method!r} has no fine-tuning objective")


def sources_of(method: str) -> tuple[str, ...]:
    """The data a method's objective reads."""
    return {"ga": ("forget",), "gd": ("retain",), "sparsified": ("retain",), "ascent_descent": ("forget", "retain"),
            "prune_fine_tune": ("train",), "fine_tune_all": ("train",), "lora": ("retain",),
            "iu": ("forget", "retain"), "npo": ("forget",), "dpo": ("winners", "losers")}[method]


def preference_loss(method: str, hp: dict):
    """The engine loss of npo / dpo (against the frozen original: TrainRun.reference "init"); None for the others."""
    if method not in ("npo", "dpo"):
        return None
    from diffunlearn.preference import PreferenceLoss

    return PreferenceLoss(method, beta=hp["beta"], loser_source="losers")


def preference_pairs(retain, forget, seed: int):
    """dpo unlearning's pairs: every retain example once as a winner (in a seeded random order), each against a
    forget example as the loser (the forget set repeated, in its own seeded order, to the retain set's length)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    losers = forget[rng.permutation(len(forget))[np.arange(len(retain)) % len(forget)]]
    return {"winners": retain[rng.permutation(len(retain))], "losers": losers}

