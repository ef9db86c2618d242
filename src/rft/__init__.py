"""rft: reinforcement fine-tuning for open models.

Accepts OpenAI's reinforcement fine-tuning job body and grader JSON, trains open models with GRPO-family
algorithms on the user's own hardware, evaluates against a baseline with confidence intervals, and keeps
every artifact traceable. See README.md for the two commands that set everything up.
"""

__version__ = "0.1.0"
