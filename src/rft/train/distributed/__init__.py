"""A training job on a Ray cluster: rollout actors, grader actors, judge actors, data-parallel trainer workers.

What runs where (`rft.cluster`, rft.config.ClusterConfig):
    driver          the process running `rft train JOB --ray`: the training loop, the run folder, the registry,
                    checkpoints and state saves, evaluation, and rank 0 of the data-parallel update
    rollout actors  `rollout_workers` Ray actors, each holding a LocalEngine over a copy of the policy; the
                    step's prompts are split into that many shards (rft.train.step: shard i, seed i) and each
                    actor samples one; after each update the driver puts the trainable weights into Ray's object
                    store once and every actor loads them (queued behind any rollout in flight)
    grader actors   `grader_workers` Ray actors, each with the job's grader built on its own node (a python
                    grader's sandbox runs there); a shard's completions go straight from its rollout actor to a
                    grader actor (an ObjectRef argument), extraction included
    judge actors    `judge_workers` Ray actors (default: 1 when the grader tree has a score_model/label_model
                    with a local judge model, else 0) holding the judge model; the grader actors' model graders
                    send their requests there (round robin) instead of each loading the judge; python and other
                    graders stay in the grader actors; remote (http) judges are called from the grader actors
    trainer actors  `trainer_workers - 1` Ray actors joining the driver in a torch.distributed group: the
                    step's prompts are split among the ranks, gradients summed by all-reduce (each rank's loss
                    uses the step's normaliser), so N ranks give the one-process update up to float order;
                    every rank holds AdamW and applies the same update. Backend (`backend`): auto = nccl when
                    the driver's trainer is on CUDA and torch has NCCL, else gloo; an explicit nccl that cannot
                    run (a CPU trainer, no NCCL, trainer workers without `num_gpus`) is an RftError before Ray
                    starts. NCCL was not run here (a CPU-only machine): only the choice and the error are tested.

Placement (rft.train.distributed.placement): one placement group per job, a bundle per actor from its role's
`num_cpus`/`num_gpus` (rollout, grader, judge, trainer); `colocated` packs them (PACK), `split` spreads them over
the nodes (SPREAD, not STRICT_SPREAD: a job with more actors than nodes must still start on one machine). Every
actor (and its replacement) is scheduled into its bundle. A request the cluster can never hold (4 GPUs on a CPU
cluster, one actor bigger than any node) fails at once with an RftError naming what was asked and what the
cluster has; one that fits but is busy waits `placement_timeout_s`. The group is removed when the job ends.

Faults: a rollout or grader actor that dies is replaced (with the weights of the rollout's version) and its
shard resubmitted, at most `max_restarts` times a step (a warning event each time). A trainer worker that
dies before any optimizer step of the step: the group is rebuilt (fresh workers get the driver's weights and
optimizer state) and the update retried from the same rollouts. After one: the driver's weights hold part of
the step, so DataParallel raises TrainerLost (rft.train.distributed.faults) naming the worker (rank, pid, node)
and the optimizer steps applied, after a warning event; the training loop pauses the job without saving a state
(status paused, an event naming the worker and the step) and `rft jobs resume` continues from the last saved
state; nothing written is lost. The driver is the only writer: killing it (kill -9) loses only the steps after
the last saved state, and `rft jobs resume` continues exactly (the job's actors are owned by the driver and die
with it).

Connection: `address` None starts a local Ray (`ray.init(address="local")`, bound to 127.0.0.1, no dashboard)
and shuts it down at the end; an address connects (`ray.init(address=...)`) and only disconnects. Starting a
cluster is Ray's job (`ray start --head` ...). Ray is an optional dependency: `pip install 'rft[ray]'`.

Devices: an actor given `num_gpus` runs its model on the GPU Ray assigned (CUDA_VISIBLE_DEVICES); the others
hold CPU copies.

Simplified: evaluation, checkpoints and the KL reference stay on the driver; weights go through the object
store (measured faster than a torch.distributed broadcast for the embedded model here, bench/scale.py); the
driver is not in the placement group (it is the process the user started); a dead judge actor is not replaced
(its requests come back unscored, model_grader_server_error, which the grader error gate sees); with
`grader_workers: 0` the driver grades and holds its own judge; the fail-fast placement check compares with the
nodes alive now (an autoscaler that would add nodes is not consulted).

Run: `rft train JOB.yaml --ray` (local) or `rft train JOB.yaml --ray HOST:6379`; tests/test_ray.py,
tests/test_ray_placement.py.
"""

from __future__ import annotations

from rft.train.distributed.faults import TrainerLost


def start_cluster(parts, *, log=print, event=None):
    """Connect to (or start) Ray and create the job's actors: a RayCluster (close() it). Imports Ray only here."""
    from rft.train.distributed.cluster import RayCluster

    return RayCluster.start(parts, log=log, event=event)


__all__ = ["TrainerLost", "start_cluster"]
