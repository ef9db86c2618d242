"""The cost/quality table over strategies: the base model, reasoning budgets, best-of-N, supervised, DPO and
GRPO, measured on one validation set (`rft strategies`)."""
