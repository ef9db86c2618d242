"""The Ray actors of a distributed job (plain classes; rft.train.distributed.cluster wraps them with ray.remote).

    RolloutWorker(job, model, tokenizer, compute_dtype)   .generate(prompt_ids, G, seed) -> ([n][G] completions, s)
                                                          .load_weights(state)  trainable tensors by name
    GraderWorker(job, judges=[JudgeWorker handles])       .grade(rows, generated) -> (completions, grades, t_s, t_g)
    JudgeWorker(models)                                   .complete(model, messages, params) -> JudgeReply
    TrainerWorker(job, model, reference, opt_state, dt)   .join(init_method, rank, world, timeout_s, ifname, backend)
                                                          .update(batch, norm, plan) (rft.train.step.update_policy)
    every actor: .ready() -> pid, .where() -> {pid, node, placement_group} (tests: where Ray put it)

LLM judges: a grader actor given judge handles maps every local judge model of the job's grader tree
(`judge_models`) to a RayJudge in its GraderContext's `Judges`, so score_model / label_model graders send their
requests to the judge pool (round robin) instead of loading the model themselves; python, string and other
graders stay in the grader actor. Remote judges (http(s) URLs) are called from the grader actor as before.

`fault`: a test hook; the actor exits (os._exit) at that call of its main method, as a killed worker would.
Devices: an actor that Ray gave a GPU (num_gpus > 0: CUDA_VISIBLE_DEVICES is set) moves its model to it; the
others keep CPU copies of what the driver pickled. Simplified: a dead judge actor is not replaced (its requests
become model_grader_server_error, i.e. unscored samples, which the grader error-rate gate sees).
"""

from __future__ import annotations

import os
import time

import torch


def _maybe_die(fault: int | None, calls: int) -> None:
    if fault is not None and calls == fault:
        os._exit(17)


def _device() -> str:
    """cuda when Ray assigned this actor a GPU (it sets CUDA_VISIBLE_DEVICES to the GPUs it gave), else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def where() -> dict:
    """This actor's process, node and placement group as Ray knows them."""
    import ray

    ctx = ray.get_runtime_context()
    pg = ctx.get_placement_group_id()
    return {"pid": os.getpid(), "node": ctx.get_node_id(), "placement_group": pg, "device": _device()}


class _Located:
    def ready(self) -> int:
        return os.getpid()

    def where(self) -> dict:
        return where()


class RolloutWorker(_Located):
    def __init__(self, job, model, tokenizer, compute_dtype, fault: int | None = None):
        from rft.engine.local import LocalEngine

        for p in model.parameters():
            p.requires_grad_(False)
        model = model.to(_device())
        self.job, self.model = job, model
        self.engine = LocalEngine(model, tokenizer, compute_dtype=compute_dtype)
        self.fault, self.calls = fault, 0

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


def judge_models(spec) -> list[str]:
    """The local judge models of a grader tree: `model` of every score_model / label_model that is not an
    http(s) URL (those are remote judges), in first-seen order."""
    out: list[str] = []

    def walk(x) -> None:
        if isinstance(x, dict):
            m = x.get("model")
            if x.get("type") in ("score_model", "label_model") and isinstance(m, str) and \
                    not m.startswith(("http://", "https://")) and m not in out:
                out.append(m)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(spec)
    return out


class RayJudge:
    """A judge (rft.graders.judges.Judge) whose requests go to the job's JudgeWorker actors, round robin."""

    def __init__(self, handles: list, model: str):
        self.handles, self.model, self.n = list(handles), model, 0

    def complete(self, messages, params):
        import ray

        h = self.handles[self.n % len(self.handles)]
        self.n += 1
        return ray.get(h.complete.remote(self.model, messages, params))


class GraderWorker(_Located):
    def __init__(self, job, fault: int | None = None, judges: list | None = None):
        from rft.train.setup import build_grader, grader_context

        self.job = job
        context = grader_context(job)
        for m in judge_models(job.grader) if judges else []:
            context.judges.set(m, RayJudge(judges, m))  # the judge pool holds the model, not this actor
        self.grader = build_grader(job, context)  # its sandbox (python graders) lives on this node
        self.fault, self.calls = fault, 0

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


class JudgeWorker(_Located):
    """Holds the job's local judge models (rft.graders.judges.LocalJudge, loaded here before ready() answers)
    and answers the grader actors' requests, one at a time (Ray runs an actor's calls in order)."""

    def __init__(self, models: list[str], fault: int | None = None):
        from rft.graders.judges import Judges, load_judge_engine

        device = _device()

        def load(ref: str):
            if device == "cpu":
                return load_judge_engine(ref)
            from rft.engine import load_engine  # on the GPU Ray gave: the same fp32 weights and compute

            return load_engine(ref, dtype=torch.float32, compute_dtype=torch.float32, device=device)

        self.judges = Judges(load_engine=load)
        for m in models:
            self.judges.get(m, None, None)._get_engine()  # load now: a missing model fails the job's start
        self.fault, self.calls, self.served = fault, 0, 0

    def complete(self, model: str, messages: list[dict], params):
        self.calls += 1
        _maybe_die(self.fault, self.calls)
        reply = self.judges.get(model, None, None).complete(messages, params)
        self.served += 1
        return reply

    def stats(self) -> dict:
        return {"served": self.served, "pid": os.getpid()}


class TrainerWorker(_Located):
    """A data-parallel rank > 0: the policy, its AdamW (loaded from the driver's state) and the KL reference;
    attribute names as rft.train.step.update_policy reads them. On a GPU Ray gave it, everything moves there."""

    def __init__(self, job, model, reference, opt_state: dict, compute_dtype, fault: int | None = None,
                 opt_fault: int | None = None):
        from rft.train.setup import make_optimizer

        self.device = _device()
        model = model.to(self.device)
        if isinstance(reference, torch.nn.Module):
            reference = reference.to(self.device)
        self.job, self.model, self.compute_dtype = job, model, compute_dtype
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(job, self.params, 1e-3)  # the lr is set every step from the driver's
        self.optimizer.load_state_dict(opt_state)  # AdamW's state follows the parameters' device
        if reference is None and job.rft.algorithm.beta > 0 and job.rft.lora.enabled:
            reference = model.disable_adapter
        self.reference = reference
        self.fault, self.calls = fault, 0
        self.steps, self.opt_fault = 0, opt_fault  # optimizer steps taken; test hook: die mid-update after k
        self.optimizer.register_step_post_hook(lambda *_: setattr(self, "steps", self.steps + 1))
        self.group = False

    def join(self, init_method: str, rank: int, world: int, timeout_s: float, ifname: str | None,
             backend: str = "gloo") -> int:
        import datetime

        import torch.distributed as dist

        if backend == "nccl" and self.device != "cuda":
            raise RuntimeError("rft.cluster.backend nccl: this trainer worker has no GPU (rft.cluster.trainer.num_gpus)")
        if ifname:
            os.environ["GLOO_SOCKET_IFNAME" if backend == "gloo" else "NCCL_SOCKET_IFNAME"] = ifname
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
        self.group = True
        return os.getpid()

    def update(self, batch, norm, plan) -> int:
        from rft.train.step import update_policy

        self.calls += 1
        _maybe_die(self.fault, self.calls)
        out = update_policy(self, batch.to(self.device), norm, plan, reduce=CollectiveSum(self))
        return out["updates"]

    def digest(self) -> list[float]:
        """Sum and sum of squares of every trainable parameter (tests: the ranks hold the same weights)."""
        ps = [p.detach().double() for p in self.params]
        return [float(sum(p.sum() for p in ps)), float(sum((p ** 2).sum() for p in ps))]

    def state(self) -> dict:
        return {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad}


class CollectiveSum:
    """In-place sum over the process group (rft.train.step.update_policy's `reduce`)."""

    def __init__(self, worker: TrainerWorker | None = None):
        self.worker = worker

    def sum_(self, t: torch.Tensor) -> None:
        import torch.distributed as dist

        w = self.worker
        if w is not None and w.opt_fault is not None and w.steps >= w.opt_fault:
            os._exit(17)  # the test hook: lost after an optimizer step, in the middle of an update

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
