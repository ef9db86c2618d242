"""Training on Ray (issue 16): a local Ray cluster on loopback, a job with `--ray` through the installed entry
point, data-parallel updates against the one-process update, dead workers replaced, the job's actors in the
bundles of its placement group (and an impossible request refused at once), LLM judges answered by a judge
actor with the one-process grades, a trainer worker lost mid-update named (TrainerLost).

The cluster: `ray start --head --node-ip-address=127.0.0.1` and two `ray start --address=...` worker nodes,
each `--block` in its own subprocess (so the test stops exactly what it started: SIGTERM to each `ray start
--block`, which takes its raylet and workers down; a check of `ps` afterwards finds nothing left under the
cluster's temp dir). Three raylets on one machine are three real nodes to Ray; with `placement: split`
(SPREAD) the job's actors run in worker processes of different nodes. Two logical CPUs per node; the job's
actors ask for half a CPU each. (ray.cluster_utils.Cluster would give the same processes but is a test
utility of Ray's; `ray start` is what a user runs, so the test runs it too.)

Tolerance against the single-process run: rollouts are sharded the same way with the same seeds in both runs
(rft.cluster.rollout_workers shards, rft.train.step), so the sampled tokens are the same as long as the weights
are; the data-parallel update sums per-rank gradients with gloo, so the weights differ from the one-process
update only by float summation order (~1e-7 relative). Rewards are therefore compared to 1e-6 (a token flip
would change a reward by > 0.01), the loss and gradient norm to 1e-4 relative, and the final parameters to
atol = 2 * lr * steps: Adam's step is lr * m / (sqrt(v) + eps), so a gradient entry that is pure rounding
noise can at worst move by 2 * lr per step in the other direction; everywhere else the difference is ~1e-9.

Run: .venv/bin/python -m pytest -q tests/test_ray.py   (about three minutes on 2 busy cores)
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from clitools import run_rft
from jobspecs import fuzzy_job_file

RAY = str(Path(sys.executable).with_name("ray"))
STEPS = 4  # 4 rows, 2 prompts per step, 2 epochs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _procs_under(tag: str) -> list[int]:
    """Pids of live processes whose command line mentions `tag` (the cluster's temp dir / port)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if tag in cmd and str(os.getpid()) != d.name:
                out.append(int(d.name))
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and two worker nodes on 127.0.0.1; yields the address; stops them all (and checks ps)."""
    tmp = tempfile.mkdtemp(prefix="rftray", dir="/tmp")  # short: Ray's unix sockets live under it
    port = _free_port()
    addr = f"127.0.0.1:{port}"
    # Ray's token authentication with a token of this cluster's own, in the environment of every process that
    # talks to it (the nodes, this test process, the `rft` subprocesses, which copy os.environ)
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0"}
    import ray  # after the token is in the environment: Ray reads it once

    common = ["--node-ip-address=127.0.0.1", "--num-cpus=2", "--block", "--disable-usage-stats"]

    def node_ports() -> list[str]:
        # Every listening port of a node chosen here: Ray's fixed defaults (10001, 8265, 52365) collide with any
        # other cluster on this machine, and two raylets starting at once can race for the same random one.
        return [f"--{k}={_free_port()}" for k in ("node-manager-port", "object-manager-port", "metrics-export-port",
                                                 "runtime-env-agent-port", "dashboard-agent-grpc-port",
                                                 "dashboard-agent-listen-port")]
    procs = [subprocess.Popen([RAY, "start", "--head", f"--port={port}", f"--temp-dir={tmp}", "--include-dashboard=false",
                               f"--ray-client-server-port={_free_port()}", f"--dashboard-port={_free_port()}",
                               *node_ports(), *common], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 240  # a loaded 2-core machine takes its time
        while True:  # the head's GCS port answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "ray head did not start"
                assert procs[0].poll() is None, "ray start --head exited"
                time.sleep(0.5)
        ray.init(address=addr, log_to_driver=False, logging_level="WARNING")
        for want in (2, 3):  # one worker node at a time
            procs.append(subprocess.Popen([RAY, "start", f"--address={addr}", *node_ports(), *common], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            while len([n for n in ray.nodes() if n["Alive"]]) < want:
                assert time.monotonic() < deadline, f"only {len(ray.nodes())} ray nodes came up"
                assert procs[-1].poll() is None, "ray start --address exited"
                time.sleep(0.5)
        yield addr
    finally:
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        deadline = time.monotonic() + 30
        while (left := _procs_under(tmp) + _procs_under(f"127.0.0.1:{port}")) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:  # a straggler of *this* cluster only (matched by its temp dir or port)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        assert not left, f"ray processes left behind: {left}"


def _job(tmp_path: Path, model_dir: Path, **cluster) -> Path:
    """The tiny fuzzy-reward job (tests/jobspecs.py), 4 steps, state saved every 2, sharded rollouts and two
    data-parallel ranks."""
    return fuzzy_job_file(tmp_path, model_dir, lr=1e-3,
                          cluster={"rollout_workers": 2, "grader_workers": 1, "trainer_workers": 2, "placement": "split",
                                   "rollout": {"num_cpus": 0.5}, "grader": {"num_cpus": 0.5},
                                   "trainer": {"num_cpus": 0.5}, **cluster})


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_ray_job_matches_single_process_and_resumes_after_kill9(ray_cluster, tiny_model_dir, tmp_path):
    """`rft train JOB --ray ADDRESS`, killed (-9) after step 3 (the state of step 2 saved), then `rft jobs resume`:
    it succeeds, writes the run folder and registry records of the one-process run of the same spec, and its
    per-step rewards and final parameters match that run (tolerances: module docstring)."""
    from rft.registry import Registry

    job = _job(tmp_path, tiny_model_dir)
    one, dist = tmp_path / "one", tmp_path / "dist"
    r = run_rft("train", str(job), "-o", str(one), "--json", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_rft("train", str(job), "-o", str(dist), "--json", "-q", "--ray", ray_cluster,
                env={"RFT_FAULT": "after_step:3"})
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-3000:])
    job_id = json.loads((dist / "job.json").read_text())["id"]
    assert Registry().get_job(job_id)["status"] == "interrupted"
    r = run_rft("jobs", "resume", job_id, "--json", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["status"] == "succeeded" and res["trained_steps"] == STEPS
    stored = Registry().get_job(job_id)
    assert stored["spec"]["rft"]["cluster"]["enabled"] is True
    assert stored["spec"]["rft"]["cluster"]["address"] == ray_cluster

    # the same run folder
    def listing(run: Path) -> set[str]:
        return {str(p.relative_to(run)) for p in run.rglob("*") if "state" not in p.parts}
    assert listing(one) == listing(dist)
    # the same registry records
    reg = Registry()
    one_id = json.loads((one / "job.json").read_text())["id"]
    for jid in (one_id, job_id):
        assert reg.get_job(jid)["status"] == "succeeded"
    assert [c["step"] for c in reg.list_checkpoints(one_id)] == [c["step"] for c in reg.list_checkpoints(job_id)]
    # per-step rewards, loss and gradient norm
    ma, mb = _metrics(one), _metrics(dist)
    assert [m["step"] for m in mb] == list(range(1, STEPS + 1))
    assert any(m["reward"] > 0 for m in ma) and any(m["grad_norm"] > 0 for m in ma)  # something was learned
    for a, b in zip(ma, mb):
        assert abs(a["reward"] - b["reward"]) <= 1e-6, (a["step"], a["reward"], b["reward"])
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4, abs=1e-6)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
    # final parameters
    lr = yaml.safe_load((one / "resolved_config.yaml").read_text())["resolved"]["learning_rate"]
    pa = load_file(str(one / "checkpoints" / "final" / "model.safetensors"))
    pb = load_file(str(dist / "checkpoints" / "final" / "model.safetensors"))
    assert pa.keys() == pb.keys()
    worst = max(float((pa[k].float() - pb[k].float()).abs().max()) for k in pa)
    assert worst <= 2 * lr * STEPS, worst
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    moved = max(float((pa[k].float() - base[k].float()).abs().max()) for k in pa if k in base)
    assert moved > 10 * worst  # the tolerance is far below what training changed


def _parts(tmp_path: Path, model_dir: Path, **cluster):
    from rft.config import load_job
    from rft.train.setup import setup_training

    job = load_job(_job(tmp_path, model_dir, **cluster))
    parts = setup_training(job)
    return parts


def _batch(parts):
    """A step's batch from a real rollout of the tiny model, with advantages that are not all zero."""
    from rft import algo
    from rft.train.policy import build_batch
    from rft.train.step import LocalRollouts

    rows = list(parts.inputs.train_ds.rows)  # all 4 prompts
    ro = LocalRollouts(parts).start(rows, 11).result()
    adv = torch.linspace(-1, 1, ro.rewards.numel()).view_as(ro.rewards)  # [N, G] fixed, non-zero
    G = parts.values.completions_per_prompt
    b = build_batch(ro.prompt_ids, [(list(c.token_ids), list(c.logprobs)) for c in ro.completions], adv.reshape(-1),
                    pad_id=parts.tokenizer.pad_token_id, group=G)
    norm = algo.LossNorm(sequences=b.comp_in.shape[0], tokens=int(b.comp_mask.sum()), max_len=6)
    return b, norm


def test_data_parallel_update_equals_one_process_update_and_survives_a_dead_worker(ray_cluster, tiny_model_dir,
                                                                                  tmp_path):
    """Two ranks (the driver and one Ray trainer worker), micro-batches of one prompt each, give the update of one
    process over all prompts at once; the worker is killed at its first update: the group is rebuilt and the
    update retried from the same batch, with the same result."""
    from rft.train.distributed.cluster import DataParallel
    from rft.train.step import UpdatePlan, update_policy

    parts = _parts(tmp_path, tiny_model_dir, trainer_workers=2)
    batch, norm = _batch(parts)
    ref_model = copy.deepcopy(parts.model)
    ref_opt = torch.optim.AdamW([p for p in ref_model.parameters() if p.requires_grad], lr=1e-3)
    ref_opt.load_state_dict(parts.optimizer.state_dict())
    ref = type("P", (), dict(job=parts.job, model=ref_model, params=[p for p in ref_model.parameters() if p.requires_grad],
                             optimizer=ref_opt, reference=None, compute_dtype=parts.compute_dtype))()
    ntok = float(batch.comp_mask.sum())
    one = update_policy(ref, batch, norm, UpdatePlan(per_mb=batch.n_prompts, iterations=2, lr=1e-3, off_policy=True,
                                                     ntok=ntok))
    events = []
    dp = DataParallel(parts, {"trainer": 1}, lambda msg, **kw: events.append(msg))
    try:
        two = dp.update(parts, batch, norm, UpdatePlan(per_mb=1, iterations=2, lr=1e-3, off_policy=True, ntok=ntok))
        digests = dp.digests()
    finally:
        dp.close()
    assert any("lost" in e for e in events), events  # the worker died once and was replaced
    assert one["updates"] == two["updates"] == 2
    assert two["stats"]["loss"] == pytest.approx(one["stats"]["loss"], rel=1e-5, abs=1e-6)
    assert two["stats"]["grad_norm"] == pytest.approx(one["stats"]["grad_norm"], rel=1e-5)
    for (n, a), b in zip(ref_model.named_parameters(), parts.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), n
    mine = [float(sum(p.detach().double().sum() for p in parts.params)),
            float(sum((p.detach().double() ** 2).sum() for p in parts.params))]
    assert digests[0] == pytest.approx(mine, rel=1e-12)  # the worker applied the very same update


def test_dead_rollout_worker_is_replaced_and_its_shard_resampled(ray_cluster, tiny_model_dir, tmp_path):
    """Rollout worker 0 dies at its first generate: it is replaced, the shard resubmitted with the same seed,
    and the rollout equals the one-process sharded rollout."""
    from rft.train.distributed.cluster import RayRollouts
    from rft.train.step import LocalRollouts

    parts = _parts(tmp_path, tiny_model_dir)
    rows = list(parts.inputs.train_ds.rows)
    here = LocalRollouts(parts).start(rows, 5).result()
    events = []
    ro = RayRollouts(parts, {"rollout": 1}, lambda msg, **kw: events.append(msg))
    try:
        there = ro.start(rows, 5).result()
    finally:
        ro.close()
    assert any("died" in e for e in events), events
    assert [c.token_ids for c in here.completions] == [c.token_ids for c in there.completions]
    assert torch.equal(torch.nan_to_num(here.rewards, -1), torch.nan_to_num(there.rewards, -1))


def test_ray_flag_takes_one_address(tmp_path, tiny_model_dir):
    """`--ray` is a flag whose ADDRESS sits among the key=value overrides: two bare words are a user error, named."""
    from clitools import assert_user_error

    job = _job(tmp_path, tiny_model_dir)
    r = run_rft("train", str(job), "--ray", "127.0.0.1:1", "10.0.0.1:2", "-o", str(tmp_path / "run"))
    assert_user_error(r, "--ray takes one ADDRESS", "127.0.0.1:1", "10.0.0.1:2")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------- placement groups (rft.cluster)
def _live_groups() -> set[str]:
    from ray.util import placement_group_table

    return {k for k, v in placement_group_table().items() if v["state"] != "REMOVED"}


def test_actors_land_in_the_jobs_placement_group_bundles(ray_cluster, tiny_model_dir, tmp_path):
    """RayCluster.start reserves one placement group (SPREAD for `split`), every actor runs in its own bundle (Ray
    says which group and node each runs on), the bundles lie on more than one node, and close() removes it."""
    from ray.util import placement_group_table

    from rft.train.distributed.cluster import RayCluster

    parts = _parts(tmp_path, tiny_model_dir, address=ray_cluster)
    before = _live_groups()
    logs = []
    cluster = RayCluster.start(parts, log=logs.append)
    try:
        pl = cluster.placement
        table = placement_group_table(pl.pg)
        assert table["state"] == "CREATED" and table["strategy"] == "SPREAD"
        assert len(table["bundles"]) == 2 + 1 + 1  # rollout 0-1, grader 0, trainer rank 1
        actors = {("rollout", k): a for k, a in enumerate(cluster.rollouts.workers)}
        actors |= {("grader", k): a for k, a in enumerate(cluster.rollouts.graders)}
        actors |= {("trainer", k): a for k, a in enumerate(cluster.dp.workers, start=1)}
        import ray

        seen = ray.get([a.where.remote() for a in actors.values()])
        for key, w in zip(actors, seen):
            i = pl.index[key]
            assert w["placement_group"] == pl.pg.id.hex(), (key, w)
            assert w["node"] == table["bundles_to_node_id"][i], (key, w, table["bundles_to_node_id"])
        assert len({w["node"] for w in seen}) > 1  # split: spread over the nodes
        assert any("placement group" in m for m in logs), logs
    finally:
        cluster.close()
    assert _live_groups() == before  # removed on close


def test_an_impossible_placement_fails_fast_naming_asked_and_available(ray_cluster, tiny_model_dir, tmp_path):
    """4 GPUs for a trainer worker on this CPU cluster: an RftError at once (no group created, no timeout waited),
    naming the resources asked and those the cluster has. A request that fits but is busy waits
    placement_timeout_s and says what is free."""
    from ray.util.placement_group import placement_group, remove_placement_group

    from rft.config import ClusterConfig
    from rft.errors import RftError
    from rft.train.distributed.placement import Placement

    before = _live_groups()
    cfg = ClusterConfig(rollout_workers=1, grader_workers=1, trainer_workers=2, rollout={"num_cpus": 0.5},
                        grader={"num_cpus": 0.5}, trainer={"num_cpus": 0.5, "num_gpus": 4}, placement_timeout_s=600)
    with pytest.raises(RftError) as e:
        Placement.reserve(cfg, 0, log=lambda m: None)
    msg = str(e.value)
    assert "trainer 1 x {CPU 0.5, GPU 4}" in msg and "= CPU 1.5, GPU 4" in msg, msg
    assert "the cluster has CPU 6 on 3 node(s)" in msg and "GPU 4 asked in all, the cluster has 0" in msg, msg
    assert _live_groups() == before

    # busy: another group holds 5 of the 6 CPUs; one actor of 2 CPUs fits a node but not now
    hog = placement_group([{"CPU": 2}, {"CPU": 2}, {"CPU": 1}], strategy="SPREAD")
    assert hog.wait(timeout_seconds=60)
    try:
        cfg = ClusterConfig(rollout_workers=1, grader_workers=0, rollout={"num_cpus": 2}, placement_timeout_s=1)
        with pytest.raises(RftError) as e:
            Placement.reserve(cfg, 0, log=lambda m: None)
        assert "placement_timeout_s = 1 s" in str(e.value) and "free now" in str(e.value), str(e.value)
    finally:
        remove_placement_group(hog)
    assert _live_groups() == before


# ------------------------------------------------------------------------------------- LLM judges on Ray actors
def test_model_grader_judges_run_on_the_judge_actor(ray_cluster, tiny_model_dir, tmp_path):
    """A score_model grader with a tiny random local judge: on Ray the grader actor sends every judge request to
    the judge actor (it served one per sample) and the grades (score, error kind, the judge's reply in the
    details) equal the one-process grading of the same samples, where the driver's grader holds the judge."""
    from rft.config import load_job
    from rft.train.distributed.cluster import RayRollouts, judge_count
    from rft.train.setup import setup_training
    from rft.train.step import LocalRollouts

    p = _job(tmp_path, tiny_model_dir, trainer_workers=1, judge_workers=1, judge={"num_cpus": 0.5})
    spec = yaml.safe_load(p.read_text())
    spec["method"]["reinforcement"]["grader"] = {
        "type": "score_model", "name": "judge", "model": str(tiny_model_dir),
        "input": [{"role": "user", "content": "Score {{sample.output_text}} against {{item.answer}}"}],
        "sampling_params": {"temperature": 0, "max_completions_tokens": 6}}
    p.write_text(yaml.safe_dump(spec))
    parts = setup_training(load_job(p))
    assert judge_count(parts.job) == 1
    rows = list(parts.inputs.train_ds.rows)
    here = LocalRollouts(parts).start(rows, 7).result()
    ro = RayRollouts(parts, {}, None, judges=judge_count(parts.job))
    try:
        there = ro.start(rows, 7).result()
        stats = ro.judge_stats()
    finally:
        ro.close()
        parts.inputs.close()
    n = len(rows) * parts.values.completions_per_prompt
    assert [s["served"] for s in stats] == [n]  # every judge request went to the judge actor
    assert [c.token_ids for c in here.completions] == [c.token_ids for c in there.completions]
    key = lambda g: (g.score, g.error, g.details)  # noqa: E731
    assert [key(g) for g in here.grades] == [key(g) for g in there.grades]
    assert all(g.details for g in there.grades)  # the judge's reply is in what is compared
    assert not any(g.error == "model_grader_server_error" for g in here.grades + there.grades)  # judges answered


def test_a_judge_model_that_cannot_load_is_a_user_error_naming_it(ray_cluster, tiny_model_dir, tmp_path):
    """The judge actor loads its model before the job starts: a missing one is an RftError naming the model and
    the grader field, not a Ray traceback."""
    from rft.config import load_job
    from rft.errors import RftError
    from rft.train.distributed.cluster import RayRollouts
    from rft.train.setup import setup_training

    p = _job(tmp_path, tiny_model_dir, trainer_workers=1, rollout_workers=1, judge={"num_cpus": 0.5})
    spec = yaml.safe_load(p.read_text())
    missing = str(tmp_path / "no-such-judge")
    spec["method"]["reinforcement"]["grader"] = {"type": "score_model", "name": "judge", "model": missing,
                                                 "input": [{"role": "user", "content": "{{sample.output_text}}"}]}
    p.write_text(yaml.safe_dump(spec))
    parts = setup_training(load_job(p))
    try:
        with pytest.raises(RftError) as e:
            RayRollouts(parts, {}, None, judges=1)
    finally:
        parts.inputs.close()
    assert missing in str(e.value) and "method.reinforcement.grader" in str(e.value), str(e.value)


# --------------------------------------------------------------------- a trainer worker lost mid-update: pause
def test_trainer_lost_after_an_optimizer_step_pauses_the_job_and_resume_finishes_it(ray_cluster, tiny_model_dir,
                                                                                    tmp_path):
    """Rank 1 dies at its first collective after an optimizer step (two passes per update, fault `trainer_opt:5`):
    the update can be neither finished nor undone, so the job is PAUSED (exit 75), with an event naming the worker
    and the step and no state saved for that step; `rft jobs resume` finishes it from the last saved state."""
    import re

    from rft.registry import Registry

    job = _job(tmp_path, tiny_model_dir)
    spec = yaml.safe_load(job.read_text())
    spec["rft"]["algorithm"] = {"num_iterations": 2}
    job.write_text(yaml.safe_dump(spec))
    run = tmp_path / "run"
    r = run_rft("train", str(job), "-o", str(run), "--json", "-q", "--ray", ray_cluster,
                env={"RFT_RAY_FAULT": "trainer_opt:5"})
    assert r.returncode == 75, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    job_id = json.loads((run / "job.json").read_text())["id"]
    reg = Registry()
    assert reg.get_job(job_id)["status"] == "paused"
    msgs = [e["message"] for e in reg.events(job_id)]
    paused = [m for m in msgs if m.startswith("Job paused")]
    assert paused and re.search(r"trainer worker rank 1 \(pid \d+ on node \w+\) was lost at step \d+, after 1 "
                                r"optimizer step", paused[0]), msgs
    r = run_rft("jobs", "resume", job_id, "--json", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["status"] == "succeeded" and res["trained_steps"] == STEPS
