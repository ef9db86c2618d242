"""Review and replay: people check the grader (queue, verdicts, agreement), a changed grader is replayed over
stored samples, and a regressed checkpoint is explained. See the modules of this package."""
