"""The Ray actors of a distributed job (plain classes; rft.train.distributed.cluster wraps them with ray.remote).

    RolloutWorker(job, model, tokenizer, compute_dtype)   .generate(prompt_ids, G, seed) -> ([n][G] completions, s)
                                                          .load_weights(state)  trainable tensors by name
    GraderWorker(job)                                     .grade(rows, generated) -> (completions, grades, t_s, t_g)
    TrainerWorker(job, model, reference, opt_state, dt)   .join(init_method, rank, world, timeout_s, ifname)
                                                          .update(batch, norm, plan) (rft.train.step.update_policy)

`fault`: a test hook; the actor exits (os._exit) at that call of its main method, as a killed worker would.
Simplified: actors hold CPU copies of what the driver pickled; GPUs are whatever Ray assigned (num_gpus).
"""

from __future__ import annotations

import os
import time

import torch


def _maybe_die(fault: int | None, calls: int) -> None:
    if fault is not None and calls == fault:
        os._exit(17)


class RolloutWorker:
    def __init__(self, job, model, tokenizer, compute_dtype, fault: int | None = None):
        from rft.engine.local import LocalEngine

        for p in model.parameters():
            p.requires_grad_(False)
        self.job, self.model = job, model
        self.engine = LocalEngine(model, tokenizer, compute_dtype=compute_dtype)
        self.fault, self.calls = fault, 0

    def ready(self) -> int:
        return os.getpid()

    def load_weights(self, state: dict) -> None:
        own = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, t in state.items():
                own[n].copy_(t)
        self.engine.sync_weights()

    def generate(self, prompt_ids: list[list[int]], G: int, seed: int):
        from rft.train.step import sampling_params

        self.calls += 1
        _maybe_die(self.fault, self.calls)
        t0 = time.perf_counter()
        groups = self.engine.generate_ids(prompt_ids, sampling_params(self.job, G, seed))  # [n][G]
        return groups, time.perf_counter() - t0


class GraderWorker:
    def __init__(self, job, fault: int | None = None):
        from rft.train.setup import build_grader

        self.job = job
        self.grader = build_grader(job)  # its sandbox (python graders) lives on this node
        self.fault, self.calls = fault, 0

    def ready(self) -> int:
        return os.getpid()

    def grade(self, rows: list[dict], generated):
        from rft.train.step import grade_groups

        self.calls += 1
        _maybe_die(self.fault, self.calls)
        groups, t_sampling = generated
        t0 = time.perf_counter()
        flat, grades = grade_groups(self.job, self.grader, rows, groups)
        return flat, grades, t_sampling, time.perf_counter() - t0

    def close(self) -> None:
        self.grader.close()


class TrainerWorker:
    """A data-parallel rank > 0: the policy, its AdamW (loaded from the driver's state) and the KL reference;
    attribute names as rft.train.step.update_policy reads them."""

    def __init__(self, job, model, reference, opt_state: dict, compute_dtype, fault: int | None = None):
        from rft.train.setup import make_optimizer

        self.job, self.model, self.compute_dtype = job, model, compute_dtype
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(job, self.params, 1e-3)  # the lr is set every step from the driver's
        self.optimizer.load_state_dict(opt_state)
        if reference is None and job.rft.algorithm.beta > 0 and job.rft.lora.enabled:
            reference = model.disable_adapter
        self.reference = reference
        self.fault, self.calls = fault, 0
        self.group = False

    def join(self, init_method: str, rank: int, world: int, timeout_s: float, ifname: str | None) -> int:
        import datetime

        import torch.distributed as dist

        if ifname:
            os.environ["GLOO_SOCKET_IFNAME"] = ifname
        dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
        self.group = True
        return os.getpid()

    def update(self, batch, norm, plan) -> int:
        from rft.train.step import update_policy

        self.calls += 1
        _maybe_die(self.fault, self.calls)
        out = update_policy(self, batch, norm, plan, reduce=GlooSum())
        return out["updates"]

    def digest(self) -> list[float]:
        """Sum and sum of squares of every trainable parameter (tests: the ranks hold the same weights)."""
        ps = [p.detach().double() for p in self.params]
        return [float(sum(p.sum() for p in ps)), float(sum((p ** 2).sum() for p in ps))]

    def state(self) -> dict:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}


class GlooSum:
    """In-place sum over the process group (rft.train.step.update_policy's `reduce`)."""

    def sum_(self, t: torch.Tensor) -> None:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
