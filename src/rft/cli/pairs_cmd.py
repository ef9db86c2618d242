"""`rft pairs JOB.yaml -o pairs.jsonl`: OpenAI-format DPO rows from a reinforcement job's grader.

A thin wrapper over `rft.api.pairs` (rft.train.pairs.build_pairs): the base model samples N completions per
training prompt with the job's sampling settings, the job's grader scores them, and each prompt whose best and
worst scores differ by at least --min-gap gives one pair (ties and unscored samples excluded). With
`--preferred reference` the preferred output is the job's reference answer (rft.train.reference_output) and the
rejected one the worst of the samples; with `--preferred auto`, best against worst where the samples differ and
the reference answer against the worst elsewhere. Prints the counts (or the JSON with --json); progress lines go to stderr
unless -q.

How to run:
    rft pairs examples/quickstart.yaml -o pairs.jsonl --samples 8
    rft pairs examples/quickstart.yaml "rft.sampling.temperature=1.2" -o pairs.jsonl --json
    rft pairs examples/dpo/pairs_job.yaml -o pairs.jsonl --samples 4 --preferred reference
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rft.cli.output import err, out, print_json, table


def register(app: typer.Typer) -> None:
    """Add the `pairs` command to `app`."""

    @app.command("pairs")
    def pairs_cmd(
        job: Path = typer.Argument(..., help="A reinforcement job (YAML/JSON): its training prompts, model, "
                                   "sampling settings and grader."),
        overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides of the job, as in rft train."),
        output: Path = typer.Option(..., "--output", "-o", help="The DPO JSONL file to write."),
        samples: int = typer.Option(8, "--samples", "-n", help="Completions sampled per prompt (2-256)."),
        min_gap: float = typer.Option(0.1, "--min-gap", help="Smallest best-minus-worst score difference that "
                                      "makes a pair (ties never do)."),
        seed: int = typer.Option(0, "--seed", help="Sampling seed."),
        preferred: str = typer.Option("best", "--preferred", help="The preferred output of each pair: 'best' (the "
                                      "best-scored sample) or 'reference' (the job's reference answer, rendered "
                                      "from rft.train.reference_output and graded like a sample; the rejected "
                                      "output is then the worst sample, and it must score at least --min-gap "
                                      "below the reference) or 'auto' (the best sample where the samples differ "
                                      "by --min-gap, else the reference answer)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
        as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
    ):
        """Write DPO preference pairs (best vs worst sample per prompt by the job's grader, or the reference
        answer vs the worst sample with --preferred reference)."""
        from rft import api

        log = None if quiet else (lambda s: err.print(s, highlight=False))
        res = api.pairs(str(job), list(overrides or []), out_path=output, samples_per_prompt=samples,
                        min_gap=min_gap, seed=seed, preferred=preferred, log=log)
        if as_json:
            print_json(res)
            return
        ex = res["excluded"]
        t = table("", "value", title=f"rft pairs: {res['pairs']} pairs written to {res['path']}")
        for row in [
            ("prompts", str(res["prompts"])),
            ("samples (per prompt)", f"{res['samples']} ({res['samples_per_prompt']})"),
            ("unscored samples", str(res["unscored_samples"])),
            ("pairs", str(res["pairs"])),
            ("preferred output", {"reference": "the reference answer", "best": "the best sample"}.get(
                res["preferred"], f"the best sample, else the reference ({res['pairs_preferring_reference']} pairs)")),
            ("no pair: tie / below gap / unscored / same text",
             f"{ex['tie']} / {ex['below_gap']} / {ex['unscored']} / {ex['same_text']}"),
            *([("no pair: no reference answer", str(ex["no_reference"]))] if "no_reference" in ex else []),
            ("min gap", f"{res['min_gap']:g}"),
            ("seconds", f"{res['seconds']:.1f}"),
        ]:
            t.add_row(*row)
        out.print(t)
