"""Connecting to Ray and running a job's actors: `RayCluster.start(parts)` -> .rollouts (RayRollouts, the
rft.train.step rollout-source interface: start / push_weights / close), .dp (DataParallel or None) and
.placement (the job's placement group, rft.train.distributed.placement). `choose_backend` picks the
torch.distributed backend. See the package docstring for what runs where and how faults are handled.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from concurrent.futures import Future
from typing import Callable

import torch

from rft.engine.local import render_prompt
from rft.errors import Problem, RftError
from rft.train.distributed.faults import TrainerLost
from rft.train.distributed.placement import NoPlacement, Placement, plan_bundles, totals
from rft.train.step import (
    Rollout,
    UpdateFailed,
    UpdatePlan,
    assemble,
    shard_bounds,
    shard_seed,
    update_policy,
)

# tests: "<rollout|grader|judge|trainer>:<call>" kills that role's first worker at that call of its main method;
# "trainer_opt:<k>" kills trainer rank 1 at its first collective after its k-th optimizer step (mid-update)
FAULT_ENV = "RFT_RAY_FAULT"


def choose_backend(setting: str, device_type: str, nccl_available: bool, *, trainer_workers: int = 1,
                   trainer_gpus: float = 0.0) -> str:
    """The torch.distributed backend for `rft.cluster.backend` (auto | gloo | nccl) and the driver's trainer
    device: auto is nccl on CUDA when NCCL is available, else gloo; an explicit nccl that cannot run is an
    RftError naming the field (CPU trainer, no NCCL in this torch, or trainer workers without a GPU)."""
    if setting == "gloo":
        return "gloo"
    if setting == "auto":
        return "nccl" if device_type == "cuda" and nccl_available else "gloo"
    why = None
    if device_type != "cuda":
        why = f"the trainer runs on {device_type} (rft.train.device); NCCL only reduces CUDA tensors"
    elif not nccl_available:
        why = "this torch was built without NCCL (torch.distributed.is_nccl_available() is false)"
    elif trainer_workers > 1 and trainer_gpus <= 0:
        why = "the trainer workers ask for no GPU (rft.cluster.trainer.num_gpus is 0)"
    if why:
        raise RftError("rft.cluster.backend is nccl, which cannot run for this job",
                       [Problem(why, field="rft.cluster.backend")],
                       hint="use rft.cluster.backend=auto (nccl on GPUs, gloo otherwise) or gloo")
    return "nccl"


def job_backend(parts) -> str:
    import torch.distributed as dist

    cfg = parts.job.rft.cluster
    dev = next(parts.model.parameters()).device.type
    return choose_backend(cfg.backend, dev, dist.is_available() and dist.is_nccl_available(),
                          trainer_workers=cfg.trainer_workers, trainer_gpus=cfg.trainer.num_gpus)


def judge_count(job) -> int:
    """Judge actors of the job: `rft.cluster.judge_workers`, or 1 when it is unset and the grader tree has a local
    judge model; 0 whenever there is no local judge model or no grader actor (the driver grades with its own)."""
    from rft.train.distributed.actors import judge_models

    cfg = job.rft.cluster
    if not cfg.grader_workers or not judge_models(job.grader):
        return 0
    return 1 if cfg.judge_workers is None else cfg.judge_workers


def _ray():
    try:
        import ray
    except ImportError as e:
        raise RftError("rft.cluster.enabled (--ray) needs Ray, which is not installed",
                       hint="pip install 'rft[ray]'") from e
    return ray


def _faults() -> dict[str, int]:
    spec = os.environ.get(FAULT_ENV, "")
    out = {}
    for part in filter(None, spec.split(",")):
        role, _, n = part.partition(":")
        out[role] = int(n or 1)
    return out


def _dead_errors(ray) -> tuple:
    ex = ray.exceptions
    return tuple(getattr(ex, n) for n in ("RayActorError", "ActorDiedError", "WorkerCrashedError",
                                           "ActorUnavailableError", "OwnerDiedError") if hasattr(ex, n))


def connect(cfg, log: Callable[[str], None], judges: int = 0) -> bool:
    """Ray initialised for this process; True when this call started or connected it (close() undoes it)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="WARNING")
    if cfg.address is None:
        need = totals([b for _, _, b in plan_bundles(cfg, judges)]).get("CPU", 0.0)  # the placement group's
        # logical CPUs: enough for the job's actors on one machine (Ray does not pin them to cores)
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, int(need + 0.999)), _node_ip_address="127.0.0.1",
                 **kw)
        log(f"ray: started a local instance ({ray.cluster_resources().get('CPU', 0):.0f} logical CPUs)")
    else:
        try:
            ray.init(address=cfg.address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RftError(f"cannot connect to the Ray cluster at {cfg.address}: {e}",
                           hint="start one with `ray start --head --node-ip-address=127.0.0.1 --port=6379`, or "
                                "run `rft train JOB --ray` without an address for a local one") from e
        log(f"ray: connected to {cfg.address} ({len(ray.nodes())} nodes)")
    return True


class RayCluster:
    def __init__(self, rollouts, dp, started: bool, placement=None):
        self.rollouts, self.dp, self.started = rollouts, dp, started
        self.placement = placement or NoPlacement()

    @classmethod
    def start(cls, parts, *, log: Callable[[str], None] = print, event: Callable | None = None) -> "RayCluster":
        cfg = parts.job.rft.cluster
        backend = job_backend(parts)  # before connecting: a backend that cannot run is the user's to fix
        judges = judge_count(parts.job)
        started = connect(cfg, log, judges)
        rollouts = dp = placement = None
        try:
            placement = Placement.reserve(cfg, judges, log=log)
            faults = _faults()
            rollouts = RayRollouts(parts, faults, event, placement=placement, judges=judges)
            if cfg.trainer_workers > 1:
                dp = DataParallel(parts, faults, event, placement=placement, backend=backend)
            return cls(rollouts, dp, started, placement)
        except BaseException:
            for x in (rollouts, dp, placement):
                if x is not None:
                    x.close()
            if started:
                _ray().shutdown()
            raise

    def close(self) -> None:
        try:
            if self.dp is not None:
                self.dp.close()
            self.rollouts.close()
            self.placement.close()
        finally:
            if self.started:
                _ray().shutdown()


def _say(event, msg: str, **data) -> None:
    if event is not None:
        event(msg, level="warn", data=data)


# ------------------------------------------------------------------------------------------------ rollouts
class _RayFuture:
    """A rollout in flight on the actors; .result() gathers the shards (replacing dead actors and resubmitting)."""

    def __init__(self, owner: "RayRollouts", rows, prompt_ids, seed: int, version: int):
        self.owner, self.rows, self.prompt_ids, self.seed, self.version = owner, rows, prompt_ids, seed, version
        self.shards = shard_bounds(len(rows), len(owner.workers))
        self.refs = [owner.submit(i, rows[a:b], prompt_ids[a:b], seed) for i, (a, b) in enumerate(self.shards)]

    def result(self) -> Rollout:
        o = self.owner
        ray = _ray()
        dead = _dead_errors(ray)
        flat, grades, t_s, t_g = [], [], 0.0, 0.0
        for i, (a, b) in enumerate(self.shards):
            for attempt in range(o.max_restarts + 1):
                try:
                    c, g, ts, tg = ray.get(self.refs[i])
                    break
                except dead as e:
                    if attempt == o.max_restarts:
                        raise RftError(f"rollout shard {i}: its Ray worker died {attempt + 1} times in this step "
                                       f"({type(e).__name__}); stopping. The last saved state is intact",
                                       hint="check the cluster (`ray status`), then `rft jobs resume JOB`") from e
                    o.replace_dead(i, self.version)
                    self.refs[i] = o.submit(i, self.rows[a:b], self.prompt_ids[a:b], self.seed)
            flat += c
            grades += g
            t_s, t_g = max(t_s, ts), max(t_g, tg)  # the shards run side by side: the slowest one's time
        return assemble(self.rows, self.prompt_ids, flat, grades, len(flat) // max(1, len(self.rows)), t_s, t_g,
                        self.version)


class _GradeHere:
    """grader_workers: 0 -> the driver extracts and grades (the job's own grader)."""

    def __init__(self, parts):
        self.parts = parts

    def grade(self, rows, generated):
        from rft.train.step import grade_groups

        groups, ts = generated
        t0 = time.perf_counter()
        flat, grades = grade_groups(self.parts.job, self.parts.grader, rows, groups)
        return flat, grades, ts, time.perf_counter() - t0


class RayRollouts:
    """Rollout shards on Ray actors (rft.train.step's rollout-source interface)."""

    def __init__(self, parts, faults: dict, event, *, placement=None, judges: int = 0):
        from rft.train.distributed.actors import GraderWorker, JudgeWorker, RolloutWorker, judge_models

        ray = _ray()
        self.parts, self.event = parts, event
        cfg = parts.job.rft.cluster
        self.cfg, self.max_restarts = cfg, cfg.max_restarts
        self.placement = placement or NoPlacement()
        self.G = parts.values.completions_per_prompt
        self._Rollout, self._Grader = ray.remote(RolloutWorker), ray.remote(GraderWorker)
        self.faults = dict(faults)
        # the judge pool first: the grader actors get its handles (and a judge model that fails to load fails here)
        models = judge_models(parts.job.grader) if judges else []
        fault = self.faults.pop("judge", None)
        self.judges = [ray.remote(JudgeWorker).options(**self.placement.options("judge", k, cfg.judge))
                       .remote(models, fault if k == 0 else None) for k in range(judges if models else 0)]
        if self.judges:
            try:
                ray.get([j.ready.remote() for j in self.judges])
            except _dead_errors(ray) + (ray.exceptions.RayTaskError,) as e:
                for j in self.judges:
                    ray.kill(j)
                raise RftError(f"a Ray judge actor could not load the judge model(s) {', '.join(models)}: "
                               f"{str(e).strip().splitlines()[-1][:500]}",
                               [Problem("a score_model/label_model `model` the judge actors load",
                                        field=parts.job.grader_field)],
                               hint="check the model reference (`rft models list`), or set "
                                    "rft.cluster.judge_workers=0 to judge in the grader actors") from e
        model = parts.model if next(parts.model.parameters()).device.type == "cpu" else _cpu_copy(parts.model)
        self.model_ref = ray.put(model)
        self.tok_ref = ray.put(parts.tokenizer)
        self.version = 0
        self.weights: dict[int, object] = {}  # version -> ObjectRef of its trainable weights (the last two)
        self.workers = [self._new_rollout(i) for i in range(cfg.rollout_workers)]
        self.graders = [self._new_grader(i) for i in range(cfg.grader_workers)]
        ray.get([w.ready.remote() for w in self.workers] + [g.ready.remote() for g in self.graders])

    def _new_rollout(self, i: int):
        fault = self.faults.pop("rollout", None) if i == 0 else None
        return self._Rollout.options(**self.placement.options("rollout", i, self.cfg.rollout)).remote(
            self.parts.job, self.model_ref, self.tok_ref, self.parts.compute_dtype, fault)

    def _new_grader(self, i: int):
        fault = self.faults.pop("grader", None) if i == 0 else None
        return self._Grader.options(**self.placement.options("grader", i, self.cfg.grader)).remote(
            self.parts.job, fault, self.judges or None)

    def judge_stats(self) -> list[dict]:
        """{served, pid} of each judge actor (tests: the judge pool answered the model graders)."""
        return _ray().get([j.stats.remote() for j in self.judges])

    def submit(self, i: int, rows, prompt_ids, seed: int):
        gen = self.workers[i].generate.remote(prompt_ids, self.G, shard_seed(seed, i))
        if self.graders:
            return self.graders[i % len(self.graders)].grade.remote(rows, gen)
        return _ray().put(_GradeHere(self.parts).grade(rows, _ray().get(gen)))

    def replace_dead(self, i: int, version: int) -> None:
        """Replace shard i's rollout actor and its grader actor if either is dead (the new rollout actor gets the
        weights of `version`, the rollout's)."""
        ray = _ray()
        dead = _dead_errors(ray)
        replaced = []
        try:
            ray.get(self.workers[i].ready.remote(), timeout=60)
        except dead:
            self.workers[i] = self._new_rollout(i)
            if version in self.weights:
                self.workers[i].load_weights.remote(self.weights[version])
            replaced.append("rollout")
        if self.graders:
            j = i % len(self.graders)
            try:
                ray.get(self.graders[j].ready.remote(), timeout=60)
            except dead:
                self.graders[j] = self._new_grader(j)
                replaced.append("grader")
        _say(self.event, f"Ray {' and '.join(replaced) or 'rollout'} worker of shard {i} died; replaced, shard "
                         "resubmitted", shard=i, replaced=replaced)

    def start(self, rows: list[dict], seed: int) -> Future:
        tok = self.parts.tokenizer
        prompt_ids = [render_prompt(tok, r["messages"], r.get("tools")) for r in rows]
        return _RayFuture(self, rows, prompt_ids, seed, self.version)  # type: ignore[return-value]

    def push_weights(self, model, version: int) -> None:
        """One put of the trainable weights; each actor loads them after the rollout it is running."""
        ray = _ray()
        state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
        ref = ray.put(state)
        self.weights = {v: r for v, r in self.weights.items() if v >= version - 1} | {version: ref}
        self.version = version
        for w in self.workers:
            w.load_weights.remote(ref)

    def close(self) -> None:
        ray = _ray()
        for a in self.workers + self.graders + self.judges:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.workers, self.graders, self.judges = [], [], []


def _cpu_copy(model):
    import copy

    return copy.deepcopy(model).cpu()


# ----------------------------------------------------------------------------------------- data parallel
def _driver_node_ip(ray) -> str:
    """The address Ray knows this process's node by (127.0.0.1 on a loopback cluster): the gloo rendezvous."""
    me = ray.get_runtime_context().get_node_id()
    for n in ray.nodes():
        if n.get("NodeID") == me and n.get("NodeManagerAddress"):
            return n["NodeManagerAddress"]
    return ray.util.get_node_ip_address()


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def dp_shards(n_prompts: int, world: int) -> list[tuple[int, int]]:
    """[start, stop) prompts of each rank (every rank gets a range, possibly empty)."""
    q, r = divmod(n_prompts, world)
    out, a = [], 0
    for k in range(world):
        b = a + q + (1 if k < r else 0)
        out.append((a, b))
        a = b
    return out


class DataParallel:
    """The driver as rank 0 of a torch.distributed group (`backend`: gloo or nccl, see choose_backend) with
    `trainer_workers - 1` Ray trainer actors."""

    def __init__(self, parts, faults: dict, event, *, placement=None, backend: str = "gloo"):
        from rft.train.distributed.actors import TrainerWorker

        ray = _ray()
        self.parts, self.event, self.faults = parts, event, dict(faults)
        cfg = parts.job.rft.cluster
        self.cfg, self.world, self.backend = cfg, cfg.trainer_workers, backend
        self.placement = placement or NoPlacement()
        self._Trainer = ray.remote(TrainerWorker)
        self.workers: list = []
        self.names: list[str] = []  # "trainer worker rank k (pid P on node N)" of each worker
        self._build()

    def _build(self) -> None:
        import torch.distributed as dist

        ray = _ray()
        parts = self.parts
        ip = _driver_node_ip(ray)
        var = "GLOO_SOCKET_IFNAME" if self.backend == "gloo" else "NCCL_SOCKET_IFNAME"
        ifname = "lo" if ip.startswith("127.") else os.environ.get(var)
        if ifname:
            os.environ[var] = ifname
        init = f"tcp://{ip}:{_free_port(ip)}"
        model = parts.model if next(parts.model.parameters()).device.type == "cpu" else _cpu_copy(parts.model)
        mref, oref = ray.put(model), ray.put(parts.optimizer.state_dict())
        ref = parts.reference if isinstance(parts.reference, torch.nn.Module) else None
        rref = ray.put(ref)
        fault = self.faults.pop("trainer", None)
        opt_fault = self.faults.pop("trainer_opt", None)
        self.workers = [self._Trainer.options(**self.placement.options("trainer", k, self.cfg.trainer)).remote(
            parts.job, mref, rref, oref, parts.compute_dtype, fault if k == 1 else None,
            opt_fault if k == 1 else None) for k in range(1, self.world)]
        joins = [w.join.remote(init, k, self.world, self.cfg.collective_timeout_s, ifname, self.backend)
                 for k, w in enumerate(self.workers, start=1)]
        dist.init_process_group(self.backend, init_method=init, rank=0, world_size=self.world,
                                timeout=datetime.timedelta(seconds=self.cfg.collective_timeout_s))
        ray.get(joins)
        self.names = [f"trainer worker rank {k} (pid {w['pid']} on node {w['node'][:12]})"
                      for k, w in enumerate(ray.get([w.where.remote() for w in self.workers]), start=1)]

    def sum_(self, t: torch.Tensor) -> None:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def update(self, parts, batch, norm, plan: UpdatePlan) -> dict:
        """The step's update over the ranks; a worker lost before any optimizer step: rebuild and retry."""
        ray = _ray()
        dead = _dead_errors(ray)
        shards = dp_shards(batch.n_prompts, self.world)
        for attempt in range(self.cfg.max_restarts + 1):
            futs = [w.update.remote(batch.prompts(a, b).to("cpu"), norm, plan)
                    for w, (a, b) in zip(self.workers, shards[1:])]
            a0, b0 = shards[0]
            try:
                out = update_policy(parts, batch.prompts(a0, b0), norm, plan, reduce=self)
            except UpdateFailed as e:
                if e.updates:  # part of the update is applied on the driver: pause (the loop), resume from the state
                    who = self._lost()
                    _say(self.event, f"Data-parallel {who} was lost after {e.updates} optimizer step(s) of this "
                                     "step's update; the job pauses (its last saved state is intact)",
                         worker=who, updates=e.updates)
                    raise TrainerLost(who, e.updates, str(e)) from e
                if attempt == self.cfg.max_restarts:
                    raise RftError(f"a data-parallel trainer worker was lost during the update ({e}) "
                                   f"{attempt + 1} times in this step; stopping. The last saved state is intact",
                                   hint="check the cluster (`ray status`), then `rft jobs resume JOB`") from e
                _say(self.event, f"A data-parallel trainer worker was lost ({e}); the group is rebuilt and the update "
                                 "retried from the same rollouts", attempt=attempt + 1)
                self._rebuild()
                continue
            try:
                ray.get(futs)
            except dead:  # it died after the last collective: the driver's update stands; fresh workers next step
                _say(self.event, "A data-parallel trainer worker died after the update; the group is rebuilt")
                self._rebuild()
            return out
        raise AssertionError("unreachable")

    def _lost(self) -> str:
        """The names of the workers that no longer answer (all of them if none can be told apart)."""
        ray = _ray()
        gone = []
        for w, name in zip(self.workers, self.names):
            try:
                ray.get(w.ready.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - dead, unreachable or stuck: lost either way
                gone.append(name)
        return " and ".join(gone or self.names)

    def _rebuild(self) -> None:
        self.close()
        self._build()

    def digests(self) -> list[list[float]]:
        return _ray().get([w.digest.remote() for w in self.workers])

    def close(self) -> None:
        import torch.distributed as dist

        ray = _ray()
        for w in self.workers:
            try:
                ray.kill(w)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.workers = []
        if dist.is_initialized():
            dist.destroy_process_group()
