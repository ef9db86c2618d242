"""Connecting to Ray and running a job's actors: `RayCluster.start(parts)` -> .rollouts (RayRollouts, the
rft.train.step rollout-source interface: start / push_weights / close) and .dp (DataParallel or None).
See the package docstring for what runs where and how faults are handled.
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
from rft.errors import RftError
from rft.train.step import (
    Rollout,
    UpdateFailed,
    UpdatePlan,
    assemble,
    shard_bounds,
    shard_seed,
    update_policy,
)

FAULT_ENV = "RFT_RAY_FAULT"  # tests: "<rollout|grader|trainer>:<call>" kills that role's first worker at that call


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


def connect(cfg, log: Callable[[str], None]) -> bool:
    """Ray initialised for this process; True when this call started or connected it (close() undoes it)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="WARNING")
    if cfg.address is None:
        need = cfg.rollout_workers * cfg.rollout.num_cpus + cfg.grader_workers * cfg.grader.num_cpus + \
            (cfg.trainer_workers - 1) * cfg.trainer.num_cpus
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


def _options(res, placement: str) -> dict:
    o = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus, "max_restarts": 0}
    if placement == "split":
        o["scheduling_strategy"] = "SPREAD"
    return o


class RayCluster:
    def __init__(self, rollouts, dp, started: bool):
        self.rollouts, self.dp, self.started = rollouts, dp, started

    @classmethod
    def start(cls, parts, *, log: Callable[[str], None] = print, event: Callable | None = None) -> "RayCluster":
        cfg = parts.job.rft.cluster
        started = connect(cfg, log)
        rollouts = dp = None
        try:
            faults = _faults()
            rollouts = RayRollouts(parts, faults, event)
            if cfg.trainer_workers > 1:
                dp = DataParallel(parts, faults, event)
            return cls(rollouts, dp, started)
        except BaseException:
            for x in (rollouts, dp):
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

    def __init__(self, parts, faults: dict, event):
        from rft.train.distributed.actors import GraderWorker, RolloutWorker

        ray = _ray()
        self.parts, self.event = parts, event
        cfg = parts.job.rft.cluster
        self.cfg, self.max_restarts = cfg, cfg.max_restarts
        self.G = parts.values.completions_per_prompt
        self._Rollout = ray.remote(RolloutWorker).options(**_options(cfg.rollout, cfg.placement))
        self._Grader = ray.remote(GraderWorker).options(**_options(cfg.grader, cfg.placement))
        model = parts.model if next(parts.model.parameters()).device.type == "cpu" else _cpu_copy(parts.model)
        self.model_ref = ray.put(model)
        self.tok_ref = ray.put(parts.tokenizer)
        self.version = 0
        self.weights: dict[int, object] = {}  # version -> ObjectRef of its trainable weights (the last two)
        self.faults = dict(faults)
        self.workers = [self._new_rollout(i) for i in range(cfg.rollout_workers)]
        self.graders = [self._new_grader(i) for i in range(cfg.grader_workers)]
        ray.get([w.ready.remote() for w in self.workers] + [g.ready.remote() for g in self.graders])

    def _new_rollout(self, i: int):
        fault = self.faults.pop("rollout", None) if i == 0 else None
        return self._Rollout.remote(self.parts.job, self.model_ref, self.tok_ref, self.parts.compute_dtype, fault)

    def _new_grader(self, i: int):
        fault = self.faults.pop("grader", None) if i == 0 else None
        return self._Grader.remote(self.parts.job, fault)

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
        for a in self.workers + self.graders:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.workers, self.graders = [], []


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
    """The driver as rank 0 of a gloo group with `trainer_workers - 1` Ray trainer actors."""

    def __init__(self, parts, faults: dict, event):
        from rft.train.distributed.actors import TrainerWorker

        ray = _ray()
        self.parts, self.event, self.faults = parts, event, dict(faults)
        cfg = parts.job.rft.cluster
        self.cfg, self.world = cfg, cfg.trainer_workers
        self._Trainer = ray.remote(TrainerWorker).options(**_options(cfg.trainer, cfg.placement))
        self.workers: list = []
        self._build()

    def _build(self) -> None:
        import torch.distributed as dist

        ray = _ray()
        parts = self.parts
        ip = _driver_node_ip(ray)
        ifname = "lo" if ip.startswith("127.") else os.environ.get("GLOO_SOCKET_IFNAME")
        if ifname:
            os.environ["GLOO_SOCKET_IFNAME"] = ifname
        init = f"tcp://{ip}:{_free_port(ip)}"
        model = parts.model if next(parts.model.parameters()).device.type == "cpu" else _cpu_copy(parts.model)
        mref, oref = ray.put(model), ray.put(parts.optimizer.state_dict())
        ref = parts.reference if isinstance(parts.reference, torch.nn.Module) else None
        rref = ray.put(ref)
        fault = self.faults.pop("trainer", None)
        self.workers = [self._Trainer.remote(parts.job, mref, rref, oref, parts.compute_dtype, fault if k == 1 else None)
                        for k in range(1, self.world)]
        joins = [w.join.remote(init, k, self.world, self.cfg.collective_timeout_s, ifname)
                 for k, w in enumerate(self.workers, start=1)]
        dist.init_process_group("gloo", init_method=init, rank=0, world_size=self.world,
                                timeout=datetime.timedelta(seconds=self.cfg.collective_timeout_s))
        ray.get(joins)

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
                if e.updates or attempt == self.cfg.max_restarts:
                    raise RftError(f"a data-parallel trainer worker was lost during the update ({e}) after "
                                   f"{e.updates} optimizer step(s) of this step; stopping. The last saved state "
                                   "is intact", hint="check the cluster (`ray status`), then `rft jobs resume JOB`") from e
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
