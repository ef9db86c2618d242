"""Training: the shared setup (setup.py), one GRPO step (step.py), the loop with resume, evaluation, checkpoints
and the report (loop.py), exact-resume state (state.py), the data cursor (cursor.py), the run folder (runlog.py),
the reward-integrity monitor (monitor.py) and the policy-side tensors (policy.py).

Run: `rft train JOB.yaml`; the library entry point is `rft.train.loop.run_job(job)`.
"""
