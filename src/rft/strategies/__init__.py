"""The cost/quality table over strategies: the base model, reasoning budgets, best-of-N, supervised, DPO and
GRPO, measured on one validation set (`rft strategies`).

- `runner.run_strategies(job_path, ...)`: runs the rows and returns the table (what `rft strategies` prints);
- `stats`: paired difference to the base (rft.eval.compare), latency percentiles, Pareto front, recommendation;
- `cost`: the price table and the arithmetic from measurements to USD per 1,000 requests;
- `report`: the Pareto plot (PNG) and the markdown report.
The inference strategies themselves are `rft.eval.inference` (also used by `rft eval`, `rft batch`, `rft serve`).
How to run: `rft strategies examples/quickstart.yaml --max-items 100 --train-steps 20`.
"""
