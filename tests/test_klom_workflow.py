"""The KLOM rules in dry-runs: the floor's reference (split / extra), fine_tune_all, and the seeds the oracles train with."""
from conftest import planned_jobs, tiny_config, write_config


def klom_config(tmp_path, reference, methods=("do_nothing", "fine_tune_all", "retrain")):
    cfg = tiny_config(tmp_path / "results")
    cfg["seeds"] = [0, 1]
    cfg["unlearning"]["methods"] = list(methods)
    cfg["unlearning"]["fine_tune_all"] = {"steps": 2, "batch_size": 8}
    cfg["klom"] = {"reference": reference}
    return write_config(tmp_path / f"{reference}.yaml", cfg)


def test_split_reference_trains_no_extra_oracles(tmp_path):
    jobs = planned_jobs(tmp_path, klom_config(tmp_path, "split"))
    assert jobs["train_original"] == 2
    assert jobs["train_oracle"] == 2 * 2  # forget sets rand and cls1, 2 seeds
    assert jobs["unlearn"] == 2  # fine_tune_all on rand, 2 seeds; do_nothing / retrain reuse other models
    assert jobs["klom"] == 3


def test_extra_reference_trains_a_second_set_of_oracles_for_the_unlearning_forget_sets(tmp_path):
    jobs = planned_jobs(tmp_path, klom_config(tmp_path, "extra"))
    assert jobs["train_oracle"] == 2 * 2 + 2  # + oracle2.rand.s0 / s1 (cls1 is not unlearned)
    assert jobs["margins"] == 2 + 2 + 2 + 2  # originals, oracle.rand, oracle2.rand, unlearn.fine_tune_all.rand
    assert jobs["klom"] == 3

