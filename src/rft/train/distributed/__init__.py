"""A training job on a Ray cluster: rollout actors, grader actors, data-parallel trainer workers.

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
    trainer actors  `trainer_workers - 1` Ray actors joining the driver in a torch.distributed gloo group: the
                    step's prompts are split among the ranks, gradients summed by all-reduce (each rank's loss
                    uses the step's normaliser), so N ranks give the one-process update up to float order;
                    every rank holds AdamW and applies the same update

Faults: a rollout or grader actor that dies is replaced (with the weights of the rollout's version) and its
shard resubmitted, at most `max_restarts` times a step (a warning event each time). A trainer worker that
dies before any optimizer step of the step: the group is rebuilt (fresh workers get the driver's weights and
optimizer state) and the update retried from the same rollouts; after one: the job stops (RftError; it is
resumable from its last saved state, nothing written is lost). The driver is the only writer: killing it
(kill -9) loses only the steps after the last saved state, and `rft jobs resume` continues exactly (the
job's actors are owned by the driver and die with it).

Connection: `address` None starts a local Ray (`ray.init(address="local")`, bound to 127.0.0.1, no dashboard)
and shuts it down at the end; an address connects (`ray.init(address=...)`) and only disconnects. Starting a
cluster is Ray's job (`ray start --head` ...). Ray is an optional dependency: `pip install 'rft[ray]'`.

Simplified: evaluation, checkpoints and the KL reference stay on the driver; weights go through the object
store (measured faster than a torch.distributed broadcast for the embedded model here, bench/scale.py);
placement is Ray's default (colocated) or its SPREAD strategy (split), no placement groups; NCCL is not
wired (gloo on every device).

Run: `rft train JOB.yaml --ray` (local) or `rft train JOB.yaml --ray HOST:6379`; tests/test_ray.py.
"""

from __future__ import annotations


def start_cluster(parts, *, log=print, event=None):
    """Connect to (or start) Ray and create the job's actors: a RayCluster (close() it). Imports Ray only here."""
    from rft.train.distributed.cluster import RayCluster

    return RayCluster.start(parts, log=log, event=event)


__all__ = ["start_cluster"]
