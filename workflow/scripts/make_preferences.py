"""make_preferences: pairs of samples of the reference model judged by the choice model (or a user pairs file);
ties and gaps below dpo.min_gap dropped; pairs, scores and the choice model's identity written once."""
from diffunlearn.warm_start import run_warm

run_warm()  # where a warm process is available, a fork of it runs this job (diffunlearn.warm_start)

import json

import numpy as np

from diffunlearn.choice import load_choice_model, make_pairs, read_pairs_file, sample_pairs
from diffunlearn.data import load_dataset
from diffunlearn.io import save_npz_atomic, sha256_file, write_json_atomic
from diffunlearn.snakemake_io import JobLog, job_device

log = JobLog(snakemake)
p, inp = snakemake.params, snakemake.input
device = job_device(p.device)
shape = load_dataset(inp.data)["train_images"].shape[1:]
if p.choice["kind"] == "pairs":
    winners, losers = read_pairs_file(inp.pairs_file, shape)
    identity = {"kind": "pairs", "name": str(inp.pairs_file), "sha256": sha256_file(inp.pairs_file)}
    sw = sl = np.full(len(winners), np.nan)
    n_sampled = len(winners)
else:
    score, identity = load_choice_model(p.choice, inp.get("classifier"), device)
    log.ready()
    first, second = sample_pairs(inp.reference, p.pairs, p.sampling, p.diffusion, device)
    winners, losers, sw, sl, _ = make_pairs(first, second, score(first), score(second), p.pairs["min_gap"])
    n_sampled = len(first)
if len(winners) == 0:
    raise ValueError(f"make_preferences: all {n_sampled} pairs are ties or below dpo.min_gap {p.pairs['min_gap']}")
info = {"choice_model": identity, "reference": str(inp.reference), "pairs_sampled": n_sampled, "pairs_kept": len(winners),
        "min_gap": p.pairs["min_gap"], "sample_seed": p.pairs["sample_seed"],
        "mean_winner_score": float(np.mean(sw)), "mean_loser_score": float(np.mean(sl))}
log(json.dumps(info))
save_npz_atomic(snakemake.output.pairs, winners=winners, losers=losers, winner_scores=sw, loser_scores=sl,
                choice_model=json.dumps(identity, sort_keys=True))
write_json_atomic(snakemake.output.info, info)
