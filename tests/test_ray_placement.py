"""Ray jobs without a cluster (issue 16): the torch.distributed backend chosen by device, the placement group's
bundles and the fail-fast check of what a cluster can hold, which graders' judges go to the judge pool. Pure
functions with injected facts (device, NCCL availability, node resources); one CLI test of `nccl` on a CPU job.
The placement, judge-pool and lost-trainer tests that need a running cluster are in tests/test_ray.py.

Run: .venv/bin/python -m pytest -q tests/test_ray_placement.py
"""

from __future__ import annotations

import pytest

from clitools import assert_user_error, run_rft
from jobspecs import tiny_job_file


def _cluster(**kw):
    from rft.config import ClusterConfig

    return ClusterConfig(**kw)


@pytest.mark.parametrize("setting,device,nccl,want", [
    ("auto", "cuda", True, "nccl"),
    ("auto", "cuda", False, "gloo"),   # a CUDA torch without NCCL (e.g. Windows builds)
    ("auto", "cpu", True, "gloo"),
    ("auto", "mps", True, "gloo"),
    ("gloo", "cuda", True, "gloo"),    # explicit gloo is kept, even on GPUs
    ("nccl", "cuda", True, "nccl"),
])
def test_backend_by_device(setting, device, nccl, want):
    from rft.train.distributed.cluster import choose_backend

    assert choose_backend(setting, device, nccl, trainer_workers=2, trainer_gpus=1) == want


@pytest.mark.parametrize("device,nccl,gpus,needle", [
    ("cpu", True, 1, "the trainer runs on cpu"),
    ("cuda", False, 1, "without NCCL"),
    ("cuda", True, 0, "rft.cluster.trainer.num_gpus is 0"),
])
def test_nccl_that_cannot_run_is_a_user_error(device, nccl, gpus, needle):
    from rft.errors import RftError
    from rft.train.distributed.cluster import choose_backend

    with pytest.raises(RftError) as e:
        choose_backend("nccl", device, nccl, trainer_workers=2, trainer_gpus=gpus)
    assert e.value.problems[0].field == "rft.cluster.backend"
    assert needle in str(e.value)


def test_nccl_on_a_cpu_job_fails_through_the_cli_before_ray_starts(tmp_path, tiny_model_dir):
    """`rft train JOB --ray` with rft.cluster.backend=nccl on this CPU machine: exit 2, one error naming the field,
    no traceback (checked before connecting: no Ray instance is started for it)."""
    job = tiny_job_file(tmp_path, tiny_model_dir, learnability={"enabled": False},
                        cluster={"backend": "nccl", "trainer_workers": 2})
    r = run_rft("train", str(job), "--ray", "-o", str(tmp_path / "run"))  # not -q: Ray would log its start
    assert_user_error(r, "rft.cluster.backend", "nccl", "the trainer runs on cpu")
    assert "ray: started" not in r.stdout + r.stderr


def test_bundles_one_per_actor_in_role_order():
    from rft.train.distributed.placement import MIN_CPU, STRATEGY, describe, plan_bundles

    cfg = _cluster(rollout_workers=2, grader_workers=1, trainer_workers=3, rollout={"num_cpus": 0.5, "num_gpus": 1},
                   grader={"num_cpus": 2}, judge={"num_cpus": 0, "num_gpus": 0}, trainer={"num_cpus": 1, "num_gpus": 1})
    plan = plan_bundles(cfg, judges=1)
    assert plan == [("rollout", 0, {"CPU": 0.5, "GPU": 1.0}), ("rollout", 1, {"CPU": 0.5, "GPU": 1.0}),
                    ("grader", 0, {"CPU": 2.0}), ("judge", 0, {"CPU": MIN_CPU}),  # Ray refuses an empty bundle
                    ("trainer", 1, {"CPU": 1.0, "GPU": 1.0}), ("trainer", 2, {"CPU": 1.0, "GPU": 1.0})]
    assert describe(plan).endswith("= CPU 5.01, GPU 4")
    assert STRATEGY == {"colocated": "PACK", "split": "SPREAD"}


def test_misfits_names_totals_and_too_big_actors():
    from rft.train.distributed.placement import misfits

    nodes = [{"CPU": 2.0}, {"CPU": 2.0, "memory": 1e9}]
    assert misfits([{"CPU": 1.0}] * 4, nodes) == []  # exactly full
    assert misfits([{"CPU": 1.0}] * 5, nodes) == ["CPU 5 asked in all, the cluster has 4"]
    assert misfits([{"CPU": 0.5, "GPU": 4.0}], nodes) == [
        "GPU 4 asked in all, the cluster has 0", "one actor asks CPU 0.5, GPU 4, more than any one node has"]
    # enough CPUs in all, but no node holds one actor's three
    assert misfits([{"CPU": 3.0}], nodes) == ["one actor asks CPU 3, more than any one node has"]


def test_judge_models_and_count():
    from rft.config import ClusterConfig
    from rft.train.distributed.actors import judge_models
    from rft.train.distributed.cluster import judge_count

    score = {"type": "score_model", "name": "s", "model": "/models/judge", "input": []}
    tree = {"type": "multi", "graders": {
        "a": score, "b": {"type": "label_model", "model": "http://127.0.0.1:9/v1/j", "input": []},  # remote: not held
        "c": {"type": "python", "source": "def grade(s, i): return 1"}, "d": dict(score, name="again")}}
    assert judge_models(tree) == ["/models/judge"]
    assert judge_models({"type": "string_check"}) == []

    class Job:  # what judge_count reads
        def __init__(self, grader, **cluster):
            self.grader = grader
            self.rft = type("R", (), {"cluster": ClusterConfig(**cluster)})()

    assert judge_count(Job(tree)) == 1  # default: one judge actor when there is a local judge
    assert judge_count(Job(tree, judge_workers=3)) == 3
    assert judge_count(Job(tree, judge_workers=0)) == 0
    assert judge_count(Job({"type": "string_check"}, judge_workers=2)) == 0  # nothing to hold
    assert judge_count(Job(tree, grader_workers=0)) == 0  # the driver grades (and judges) itself
