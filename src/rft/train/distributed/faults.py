"""What a distributed job raises when it cannot go on by itself (imported by rft.train.loop without Ray).

    TrainerLost(worker, updates, cause)   a data-parallel trainer worker died after `updates` optimizer steps of
                                          a step's update; rft.train.loop (an `except TrainerLost` around the
                                          step) pauses the job (no state save: the driver's
                                          weights hold part of that step) and `rft jobs resume` continues from the
                                          last saved state. An RftError, so a caller that does not know it stops
                                          with one clear error line (exit 2).
"""

from __future__ import annotations

from rft.errors import RftError


class TrainerLost(RftError):
    """A data-parallel trainer worker was lost after `updates` optimizer step(s) of a step (see the module)."""

    def __init__(self, worker: str, updates: int, cause: str):
        super().__init__(f"data-parallel {worker} was lost during the update ({cause}) after {updates} optimizer "
                         "step(s) of this step", hint="check the cluster (`ray status`), then `rft jobs resume JOB`")
        self.worker, self.updates, self.cause = worker, updates, cause
