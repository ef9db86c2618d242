"""Where a distributed job's actors run: one Ray placement group per job, one bundle per actor.

    plan = plan_bundles(cfg, judges)            [(role, k, {"CPU": .., "GPU": ..})], pure
    problems = misfits(bundles, nodes)          why the bundles cannot fit these nodes' resources, pure
    pl = Placement.reserve(cfg, judges)         the group, ready (RftError naming asked vs available if not)
    actor_cls.options(**pl.options("rollout", k, cfg.rollout))   scheduled into its bundle
    pl.close()                                  removes the group (its actors go with it)

Bundles, in order: rollout 0..R-1, grader 0..G-1, judge 0..J-1, trainer 1..T-1 (the driver is trainer rank 0 and
lives outside the group: it is the process that called `rft train`). A bundle holds the role's `num_cpus` and
`num_gpus` (rft.config.RoleResources); a role asking for nothing gets a bundle of MIN_CPU logical CPUs, because
Ray refuses empty bundles. A replaced actor (a dead worker) is scheduled into the bundle its predecessor held.

Strategy: `colocated` -> PACK (as few nodes as possible, one machine when it fits), `split` -> SPREAD (bundles on
different nodes as far as they go). STRICT_SPREAD is not used: it needs a node per bundle, so a job with more
actors than nodes (any job on one machine) could never start; SPREAD gives the same spread whenever the nodes
exist, and still runs when they do not.

Fail fast: before the group is created, the asked totals are compared with the cluster's and every bundle with
the largest node (`misfits`), so a request that can never be met (4 GPUs on a CPU cluster) is an RftError at
once, naming what was asked and what the cluster has. A request that fits but is busy waits
`placement_timeout_s`, then the same RftError with what is free now.

Simplified: an autoscaling cluster that would grow to fit is refused by the fail-fast check (it compares with the
nodes alive now); custom resources and label selectors are not used.
"""

from __future__ import annotations

from typing import Callable

from rft.errors import Problem, RftError

MIN_CPU = 0.01  # the bundle of a role that asks for nothing (Ray refuses an empty bundle)
STRATEGY = {"colocated": "PACK", "split": "SPREAD"}


def bundle(res) -> dict[str, float]:
    """The bundle of one actor of a role (its RoleResources)."""
    b = {k: float(v) for k, v in (("CPU", res.num_cpus), ("GPU", res.num_gpus)) if v > 0}
    return b or {"CPU": MIN_CPU}


def plan_bundles(cfg, judges: int) -> list[tuple[str, int, dict[str, float]]]:
    """(role, k, bundle) for every actor of the job, in bundle order; trainer ranks start at 1."""
    out = [("rollout", k, bundle(cfg.rollout)) for k in range(cfg.rollout_workers)]
    out += [("grader", k, bundle(cfg.grader)) for k in range(cfg.grader_workers)]
    out += [("judge", k, bundle(cfg.judge)) for k in range(judges)]
    out += [("trainer", k, bundle(cfg.trainer)) for k in range(1, cfg.trainer_workers)]
    return out


def _fmt(res: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(res.items())) or "nothing"


def totals(bundles: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            out[k] = out.get(k, 0.0) + v
    return out


def misfits(bundles: list[dict[str, float]], nodes: list[dict[str, float]]) -> list[str]:
    """Why `bundles` can never be placed on nodes with these total resources ([] when they might)."""
    have = totals(nodes)
    out = [f"{k} {v:g} asked in all, the cluster has {have.get(k, 0.0):g}"
           for k, v in sorted(totals(bundles).items()) if v > have.get(k, 0.0) + 1e-9]
    for b in {tuple(sorted(b.items())) for b in bundles}:
        if not any(all(n.get(k, 0.0) + 1e-9 >= v for k, v in b) for n in nodes):
            out.append(f"one actor asks {_fmt(dict(b))}, more than any one node has")
    return out


def describe(plan: list[tuple[str, int, dict[str, float]]]) -> str:
    """'rollout 2 x {CPU 0.5}, trainer 1 x {GPU 4} = CPU 1, GPU 4'"""
    roles: dict[str, tuple[int, dict]] = {}
    for role, _, b in plan:
        n, _ = roles.get(role, (0, b))
        roles[role] = (n + 1, b)
    parts = [f"{role} {n} x {{{_fmt(b)}}}" for role, (n, b) in roles.items()]
    return f"{', '.join(parts)} = {_fmt(totals([b for _, _, b in plan]))}"


def _nodes(ray) -> list[dict[str, float]]:
    return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]


def _cluster_line(ray) -> str:
    nodes = _nodes(ray)
    keep = ("CPU", "GPU")
    have = {k: v for k, v in totals(nodes).items() if k in keep}
    free = {k: v for k, v in ray.available_resources().items() if k in keep}
    return f"the cluster has {_fmt(have) if have else 'no CPU or GPU'} on {len(nodes)} node(s), {_fmt(free)} free now"


class Placement:
    """The job's placement group; `options(role, k, res)` are an actor's Ray options inside its bundle."""

    def __init__(self, pg, index: dict[tuple[str, int], int]):
        self.pg, self.index = pg, index

    @classmethod
    def reserve(cls, cfg, judges: int, *, log: Callable[[str], None] = print) -> "Placement":
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group

        plan = plan_bundles(cfg, judges)
        asked = describe(plan)
        problems = misfits([b for _, _, b in plan], _nodes(ray))
        hint = ("lower rft.cluster.<role>.num_cpus / num_gpus or the worker counts, or add nodes "
                "(`ray start --address=HEAD:PORT` on another machine); `ray status` shows the cluster")
        if problems:
            raise RftError(f"the Ray cluster can never fit this job's actors ({asked}); {_cluster_line(ray)}",
                           [Problem(p, field="rft.cluster") for p in problems], hint=hint)
        pg = placement_group([b for _, _, b in plan], strategy=STRATEGY[cfg.placement])
        if not pg.wait(timeout_seconds=cfg.placement_timeout_s):
            line = _cluster_line(ray)
            remove_placement_group(pg)
            raise RftError(f"the Ray cluster did not free the resources of this job's actors ({asked}) within "
                           f"rft.cluster.placement_timeout_s = {cfg.placement_timeout_s:g} s; {line}", hint=hint)
        log(f"ray: placement group {pg.id.hex()[:12]} ready ({STRATEGY[cfg.placement]}: {asked})")
        return cls(pg, {(role, k): i for i, (role, k, _) in enumerate(plan)})

    def options(self, role: str, k: int, res) -> dict:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus, "max_restarts": 0,
                "scheduling_strategy": PlacementGroupSchedulingStrategy(
                    placement_group=self.pg, placement_group_bundle_index=self.index[(role, k)])}

    def close(self) -> None:
        from ray.util.placement_group import remove_placement_group

        if self.pg is not None:
            try:
                remove_placement_group(self.pg)
            except Exception:  # noqa: BLE001 - Ray already gone (the driver shutting down)
                pass
            self.pg = None


class NoPlacement:
    """Ray's default scheduling (RayRollouts / DataParallel used on their own: tests, bench/scale.py)."""

    pg = None

    def options(self, role: str, k: int, res) -> dict:
        return {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus, "max_restarts": 0}

    def close(self) -> None:
        pass
