"""The Python API: what the `rft` command does, as functions that return plain results.

    import rft
    job = rft.train("examples/quickstart.yaml", {"rft.train.max_steps": 20})   # the final fine_tuning.job dict
    report = rft.evaluate(job["fine_tuned_model"], "builtin:arithmetic", "grader.json", extract=r"-?\\d+")
    model = rft.load("alias:production")          # embedded name, model directory, ckpt:<id> or alias:<name>
    print(model.chat("What is 7 * 8? Answer with just the number."))
    rft.grade({"type": "string_check", ...}, "56", {"answer": "56"})           # OpenAI's graders/run shape
    rft.batch("requests.jsonl", model="ckpt:ckpt-...")                        # the final batch object
    rft.jobs(); rft.checkpoints(job["id"]); rft.export("ckpt:ckpt-...", "exported/")

What: `train`, `resume`, `evaluate`, `compare`, `load` (a `Model` with `generate` and `chat`), `grade`, `batch`,
`jobs`, `job`, `checkpoints`, `lineage`, `export`, `datasets` (the built-in tasks) and `load_dataset`. The `rft`
command calls these same functions (`rft train`, `rft eval`, `rft compare`, `rft jobs resume`, `rft checkpoints
export`), so a script and the command line behave alike: user mistakes raise `rft.errors.RftError` (with file,
line and field where there is one), nothing prints unless a `log` callback is given, and every result is a dict
or list of dicts (the same objects `--json` prints) or an rft dataclass (`Completion`, `Dataset`).
`import rft` stays cheap: `rft/__init__.py` loads this module on first use of one of its names, and this module
loads torch, the registry or the engine only inside the function that needs them.
Simplified: one process, the local machine; `train` blocks until the job ends (a paused or cancelled job raises
`rft.train.loop.JobStopped`, available here as `rft.api.JobStopped`); a `Model` holds its weights until it is
garbage-collected.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from rft.errors import RftError

if TYPE_CHECKING:  # names for annotations only: importing them here would load torch on `import rft.api`
    from rft.config import JobSpec
    from rft.data import Dataset
    from rft.types import Completion

__all__ = ["Model", "batch", "checkpoints", "compare", "datasets", "evaluate", "export", "grade", "job", "jobs",
           "lineage", "load", "load_dataset", "resume", "train"]

Overrides = Sequence[str] | Mapping[str, Any]
PathLike = str | os.PathLike


def __getattr__(name: str):
    if name == "JobStopped":  # the training loop's exception, without loading it on import
        from rft.train.loop import JobStopped

        return JobStopped
    raise AttributeError(f"module 'rft.api' has no attribute {name!r}")


# ------------------------------------------------------------------------------------------------- train
def _apply_mapping(raw: dict, overrides: Mapping[str, Any]) -> dict:
    """`{"rft.train.max_steps": 20}` set into the raw spec, as `key=value` overrides are (values kept as given)."""
    from rft.config import apply_overrides

    for key, value in overrides.items():
        if not isinstance(key, str):
            raise RftError(f"override key {key!r} is not a dotted name like rft.sampling.temperature")
        apply_overrides(raw, [f"{key}="])  # checks the key's syntax and makes the sections on the way
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = copy.deepcopy(value)
    return raw


def load_job(job: PathLike | Mapping[str, Any] | JobSpec, overrides: Overrides = ()) -> JobSpec:
    """A checked `JobSpec` from a job file path, an OpenAI job body (dict) or a `JobSpec`, with overrides applied:
    `key=value` strings (values read as YAML, as on the command line) or a mapping of dotted keys to values."""
    from rft.config import JobSpec, apply_overrides, load_raw
    from rft.jobcheck import parse_job

    if isinstance(job, JobSpec):
        if not overrides:
            return job
        raw, source = job.model_dump(mode="json", exclude_unset=True), "job spec"
    elif isinstance(job, Mapping):
        raw, source = copy.deepcopy(dict(job)), "job spec"
    elif isinstance(job, (str, os.PathLike)):
        raw, source = load_raw(job), str(job)
    else:
        raise RftError(f"a job is a path to a YAML/JSON job spec, a dict or a JobSpec, not {type(job).__name__}")
    if isinstance(overrides, Mapping):
        raw = _apply_mapping(raw, overrides)
    else:
        if isinstance(overrides, str):
            raise RftError("overrides are a list of key=value strings or a dict, not one string")
        raw = apply_overrides(raw, list(overrides))
    return parse_job(raw, source)


def train(job: PathLike | Mapping[str, Any] | JobSpec, overrides: Overrides = (), *,
          output_dir: PathLike | None = None, progress: Callable[[int, int, dict], None] | None = None,
          log: Callable[[str], None] | None = None) -> dict:
    """Run a fine-tuning job (reinforcement, supervised or dpo: `method.type`) to the end, recorded in the
    registry, as `rft train` does.

    `job`: a job spec path (YAML/JSON), an OpenAI fine-tuning job body (dict) or a `JobSpec`; `overrides`:
    `["rft.train.max_steps=20"]` or `{"rft.train.max_steps": 20}`. The data references and `output_dir` (default
    `$RFT_HOME/runs/<job id>`, which must not hold files) are checked before the job is recorded.
    `progress(step, total_steps, metrics)` is called after every step; `log(line)` gets the log lines (default:
    none). Returns the final job object (OpenAI's `fine_tuning.job` fields plus rft's: `run_dir`,
    `baseline_eval`, `final_eval`, `fine_tuned_model` = its `ft:<base>[:<suffix>]:<job id>` name, `fine_tuned_model_checkpoint` = `ckpt:<id>` of the final checkpoint, ...).
    Raises RftError for a mistake in the job or data, `rft.api.JobStopped` when it is paused or cancelled."""
    from rft.data import check_data_ref
    from rft.train.loop import run_job
    from rft.userinput import check_output_dir

    spec = load_job(job, overrides)
    # The data exist before the job is recorded: a typo'd path is one error and no registry row. (Their content
    # is validated by the loader, row by row.)
    for what, ref, split in (("training data", spec.training_file, "train"),
                             ("validation data", spec.validation_file, "validation"),
                             ("guard dataset", spec.rft.eval.guard_file, "validation")):
        if ref:
            check_data_ref(ref, what, split=split)
    if output_dir is not None:
        # before the job is recorded or anything is written: a run folder never mixes with or overwrites files
        check_output_dir(output_dir, "run folder")
    return run_job(spec, output_dir=None if output_dir is None else str(output_dir), progress=progress,
                   log=log or (lambda s: None))


def pairs(job: PathLike | Mapping[str, Any] | JobSpec, overrides: Overrides = (), *, out_path: PathLike,
          samples_per_prompt: int = 8, min_gap: float = 0.1, seed: int = 0, preferred: str = "best",
          log: Callable[[str], None] | None = None) -> dict:
    """DPO preference pairs from a reinforcement job's grader (`rft pairs JOB.yaml -o pairs.jsonl`): the base
    model samples `samples_per_prompt` completions per training prompt (the job's sampling settings), the job's
    grader scores them, and each prompt whose best and worst scores differ by at least `min_gap` gives one
    OpenAI DPO row (ties and unscored samples excluded); `preferred="reference"` prefers the job's reference
    answer (rft.train.reference_output) to the worst sample instead. Writes `out_path`; returns the counts
    (`rft.train.pairs.build_pairs`)."""
    from rft.train.pairs import build_pairs
    from rft.userinput import check_output_file

    spec = load_job(job, overrides)
    check_output_file(out_path, "pairs file")
    return build_pairs(spec, out_path=out_path, samples_per_prompt=samples_per_prompt, min_gap=min_gap, seed=seed,
                       preferred=preferred, log=log)


def resume(job_id: str, overrides: Sequence[str] = (), *, config: PathLike | None = None,
           allow_config_change: bool = False, progress: Callable[[int, int, dict], None] | None = None,
           log: Callable[[str], None] | None = None) -> dict:
    """Continue a paused, interrupted or failed job from its last complete training state (`rft jobs resume`).
    A changed config, data, grader or model is refused unless `allow_config_change`. Returns the final job."""
    from rft import views
    from rft.train.loop import resume_job

    return resume_job(views.job_ref(job_id), config_path=None if config is None else str(config),
                      overrides=list(overrides), allow_config_change=allow_config_change, progress=progress,
                      log=log or (lambda s: None))


# ---------------------------------------------------------------------------------------------- models
@dataclass
class Model:
    """A loaded model reference: `generate` for batches of prompts, `chat` for one reply.

    `ref` is what was asked for, `path` the directory it resolved to, `kind` "embedded", "directory" or
    "checkpoint", `engine` the `rft.engine.LocalEngine` (the one training, evaluation, batch and the server use)."""

    ref: str
    path: Path
    kind: str
    engine: Any

    def generate(self, prompts: str | Sequence[str | Sequence[Mapping[str, Any]]], *, n: int = 1,
                 temperature: float = 0.0, max_new_tokens: int = 64, top_p: float = 1.0, top_k: int = 0,
                 stop: Sequence[str] = (), seed: int | None = None) -> list[list[Completion]]:
        """`n` completions for each prompt (a string is one user message; or a list of chat messages).
        Greedy by default (`temperature=0`). Returns one list of `rft.types.Completion` (text, token ids,
        log-probabilities, finish reason) per prompt."""
        from rft.engine import SamplingParams

        if isinstance(prompts, str):
            prompts = [prompts]
        chats = [[{"role": "user", "content": p}] if isinstance(p, str) else [dict(m) for m in p] for p in prompts]
        for i, c in enumerate(chats):
            if not c or c[-1].get("role") != "user":
                raise RftError(f"prompt {i}: a chat prompt is a non-empty list of messages ending with a user message")
        if n < 1 or max_new_tokens < 1 or temperature < 0:
            raise RftError(f"n and max_new_tokens must be >= 1 and temperature >= 0, got n={n}, "
                           f"max_new_tokens={max_new_tokens}, temperature={temperature}")
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, top_k=top_k,
                                max_new_tokens=max_new_tokens, stop=tuple(stop), seed=seed)
        return self.engine.generate(chats, params)

    def chat(self, messages: str | Sequence[Mapping[str, Any]], **sampling: Any) -> str:
        """The reply text to one prompt (a string, or chat messages ending with a user message); `sampling` as
        for `generate` (greedy by default)."""
        return self.generate([messages], n=1, **sampling)[0][0].text


def load(model: str, *, device: str = "cpu", dtype: Any = None) -> Model:
    """Load any model reference (the embedded `smollm2-135m-instruct`, a model directory, `ckpt:<id>`,
    `alias:<name>`; checkpoint files are re-hashed against their manifest) on `device`."""
    from rft import models
    from rft.engine import load_engine

    resolved = models.resolve(str(model))
    return Model(ref=str(model), path=resolved.path, kind=resolved.kind,
                 engine=load_engine(resolved, dtype=dtype, device=device))


# -------------------------------------------------------------------------------------------- evaluate
def record_eval(report: dict) -> None:
    """Record an evaluation report in the registry (kind "eval"), linked to the checkpoint when the model is one;
    sets `report["registry_id"]`."""
    from rft.registry import Registry

    model = str(report.get("model"))
    ckpt = None
    reg = Registry()
    if model.startswith(("ckpt:", "alias:")):
        ckpt = reg.alias(model)["checkpoint_id"] if model.startswith("alias:") else model.removeprefix("ckpt:")
    grader_sha = (report.get("grader") or {}).get("sha256")
    report["registry_id"] = reg.add_eval_report(
        "eval", {k: v for k, v in report.items() if k != "items"}, checkpoint_id=ckpt, model_ref=model,
        data_sha256=report.get("dataset_sha256"), grader_sha256=grader_sha,
        path=(report.get("paths") or {}).get("json"))


def _grader_arg(grader: PathLike | Mapping[str, Any]) -> str | dict:
    return dict(grader) if isinstance(grader, Mapping) else str(grader)


def evaluate(model: str | Model, data: str | os.PathLike, grader: PathLike | Mapping[str, Any], *, n: int = 0,
             by: Iterable[str] = (), output_dir: PathLike | None = None, max_new_tokens: int = 64,
             limit: int | None = None, extract: str | None = None, split: str = "validation",
             temperature: float = 1.0, seed: int = 0, record: bool = True, write: bool = True,
             allow_private_hosts: Iterable[str] = (), strategy: str | None = None) -> dict:
    """Evaluate a model on a dataset with a grader, as `rft eval` does: greedy accuracy with a 95% CI, pass@k
    from `n` sampled completions per item, per-slice results `by` dataset fields, grader error rates.

    `model`: a model reference or a loaded `Model`; `data`: JSONL, Parquet, `hf:...`, `builtin:...` or a
    `file-...` id; `grader`: a grader JSON path or an OpenAI grader dict. With `write`, report.json and report.md
    go to `output_dir` (default `$RFT_HOME/evals/<id>/`, which must not hold files); with `record`, the report is
    recorded in the registry. Returns the report dict (`accuracy`, `accuracy_ci95`, `pass_at_k`, `items`, ...).
    `strategy`: an inference strategy for the headline answers instead of greedy (`best_of_n:n=4,selector=majority`,
    `reasoning:budget=64`; rft.eval.inference)."""
    from rft.eval.runner import run_eval
    from rft.userinput import check_output_dir

    if output_dir is not None and write:  # before the model loads: a report folder never mixes with files
        check_output_dir(output_dir, "report folder")
    engine = model.engine if isinstance(model, Model) else None
    name = model.ref if isinstance(model, Model) else str(model)
    return run_eval(name, str(data), _grader_arg(grader), n=n, by=list(by), output_dir=output_dir,
                    max_new_tokens=max_new_tokens, limit=limit, extract=extract, split=split,
                    temperature=temperature, seed=seed, engine=engine, write=write,
                    on_report=record_eval if record else None, allow_private_hosts=tuple(allow_private_hosts),
                    strategy=strategy)


def strategies(job: PathLike, overrides: Sequence[str] = (), *, only: str | Iterable[str] | None = None,
               max_items: int | None = None, train_steps: int | None = None, train_rows: int | None = 64,
               latency_items: int = 16, budgets: Iterable[int] = (32, 128), ns: Iterable[int] = (4, 8),
               prices: PathLike | None = None, output_dir: PathLike | None = None,
               log: Callable[[str], None] | None = None, record: bool = True) -> dict:
    """The cost/quality table of `rft strategies` (rft.strategies.runner): base, reasoning budgets, best-of-N
    (majority; grader = upper bound), SFT, DPO and GRPO on the job's validation set, with accuracy CIs, paired
    differences to base, training and inference cost, latency, the Pareto plot and a recommendation. Writes
    table.json/.md and pareto.png to `output_dir` (default `$RFT_HOME/strategies/<id>/`, which must not hold
    files) and stores the table in the registry with `record`. Returns the table."""
    from rft.strategies.runner import run_strategies
    from rft.userinput import check_output_dir

    if output_dir is not None:
        check_output_dir(output_dir, "strategies folder")
    return run_strategies(str(job), list(overrides), only=only, max_items=max_items, train_steps=train_steps,
                          train_rows=train_rows, latency_items=latency_items, budgets=budgets, ns=ns,
                          prices=str(prices) if prices is not None else None, output_dir=output_dir,
                          log=log or (lambda s: None), record=record)


def compare(a: str | None, b: str | None, data: str | None = None, grader: PathLike | Mapping[str, Any] | None = None,
            *, a_report: PathLike | None = None, b_report: PathLike | None = None, by: Iterable[str] = (),
            seed: int = 0, resamples: int = 10_000, output_dir: PathLike | None = None, max_new_tokens: int = 64,
            limit: int | None = None, extract: str | None = None, split: str = "validation",
            allow_private_hosts: Iterable[str] = (), record: bool = True) -> dict:
    """Paired comparison B - A, as `rft compare` does: mean difference with a bootstrap CI, McNemar's test,
    regressed and improved items, per-slice differences. Each side is a model reference (evaluated on `data`
    with `grader`) or a saved eval report (`a_report`/`b_report`); a model given for a side that has a report
    fills the other side. Writes to `output_dir` (default `$RFT_HOME/compares/<id>`); returns the comparison."""
    import secrets
    import time

    from rft.eval.compare import compare_models
    from rft.eval.runner import load_report
    from rft.home import rft_home
    from rft.userinput import check_output_dir

    if resamples < 1:
        raise RftError(f"--resamples must be >= 1, got {resamples}")
    if output_dir is not None:
        check_output_dir(output_dir, "comparison folder")
    ra = load_report(a_report) if a_report else None
    rb = load_report(b_report) if b_report else None
    # the models given fill, in order, the sides that have no saved report
    models = [x for x in (a, b) if x]
    need = [side for side, r in (("a", ra), ("b", rb)) if r is None]
    if len(models) != len(need):
        raise RftError(f"got {len(models)} model(s) for {len(need)} side(s) without a report",
                       hint="give two models (A B), or --a-report / --b-report for a side already evaluated")
    sides = dict(zip(need, models))
    cid = "compare-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
    out_dir = output_dir or rft_home() / "compares" / cid
    res = compare_models(sides.get("a"), sides.get("b"), None if data is None else str(data),
                         None if grader is None else _grader_arg(grader), a_report=ra, b_report=rb, by=list(by),
                         seed=seed, resamples=resamples, output_dir=out_dir,
                         eval_kwargs={"max_new_tokens": max_new_tokens, "limit": limit, "extract": extract,
                                      "split": split, "allow_private_hosts": tuple(allow_private_hosts)})
    if record:
        from rft.registry import Registry

        summary = {k: v for k, v in res.items() if k not in ("improved", "regressed", "items")}
        res["registry_id"] = Registry().add_eval_report(
            "compare", summary, model_ref=f"{sides.get('a')} vs {sides.get('b')}",
            data_sha256=(res.get("b") or {}).get("dataset_sha256"))
    return res


# ---------------------------------------------------------------------------------------------- graders
def grade(grader: PathLike | Mapping[str, Any], sample: str, item: Mapping[str, Any] | None = None, *,
          response_format: Mapping[str, Any] | None = None, allow_private_hosts: Iterable[str] = ()) -> dict:
    """Grade one model output against one dataset row, as `rft grader run` does; returns OpenAI's graders/run
    response (`reward`, `metadata.errors`, `metadata.scored`: a grader that fails gives reward 0.0 with the
    error flags set and `scored` false)."""
    from rft import graders
    from rft.graders.run import run_grader

    if isinstance(grader, Mapping):
        spec, source = dict(grader), None
    else:
        spec, source = graders.load_grader_file(str(grader)), str(grader)
    g = graders.build(spec, source=source, context=graders.GraderContext(allow_private_hosts=tuple(allow_private_hosts)))
    try:
        return run_grader(spec, sample, None if item is None else dict(item),
                          response_format=None if response_format is None else dict(response_format), grader=g)
    finally:
        g.close()


# ------------------------------------------------------------------------------------------------ batch
_BATCH_KEYS = {"concurrency": "concurrency", "batch_size": "batch_size", "max_cost": "max_cost",
               "api_key_env": "api_key_env", "max_attempts": "retry.max_attempts",
               "request_deadline": "retry.request_deadline_s", "attempt_timeout": "retry.attempt_timeout_s",
               "circuit_breaker": "retry.circuit_breaker_threshold", "price_per_hour": "prices.local_per_hour"}


def batch(requests: PathLike, *, model: str, output: PathLike | None = None, remote_model: str | None = None,
          config: PathLike | None = None, completion_window: str = "24h",
          progress: Callable[[dict], None] | None = None, log: Callable[[str], None] | None = None,
          **policy: Any) -> dict:
    """Run a file of OpenAI batch requests on a model reference or a remote endpoint, as `rft batch run` does.

    `policy`: any of concurrency, batch_size, max_cost, api_key_env, max_attempts, request_deadline,
    attempt_timeout, circuit_breaker, price_per_hour (over `config`, a batch config file). Returns the final
    batch object (`status`: completed, completed_with_errors, failed, cancelled or expired; `output_file`,
    `error_file`, `request_counts`, `usage`, `cost`)."""
    from rft.batch import create_batch, load_config, run_batch

    unknown = sorted(set(policy) - set(_BATCH_KEYS))
    if unknown:
        from rft.errors import did_you_mean

        raise RftError(f"unknown batch option '{unknown[0]}'{did_you_mean(unknown[0], list(_BATCH_KEYS))}; valid: "
                       f"{', '.join(_BATCH_KEYS)}")
    cfg = load_config(config, {_BATCH_KEYS[k]: v for k, v in policy.items()})
    state = create_batch(requests, model=model, remote_model=remote_model, output=output, config=cfg,
                         completion_window=completion_window)
    return run_batch(state["id"], progress=progress, log=log)


# --------------------------------------------------------------------------------------------- registry
def jobs(*, status: str | None = None, limit: int = 50) -> list[dict]:
    """Jobs in the registry, newest first (the rows of `rft jobs list --json`)."""
    from rft import views
    from rft.registry import Registry

    return [views.job_row(j) for j in Registry().list_jobs(limit=limit, status=status)]


def job(job_id: str) -> dict:
    """One job: status, progress, hashes, outcome (`rft jobs show --json`)."""
    from rft import views
    from rft.registry import Registry

    return views.job_detail(Registry(), job_id)


def checkpoints(job_id: str, *, include_pruned: bool = False) -> list[dict]:
    """A job's checkpoints: step, validation score with its CI, gate verdict, approval, status
    (`rft checkpoints list --json`)."""
    from rft import views
    from rft.registry import Registry

    return views.checkpoint_rows(Registry(), job_id, include_pruned=include_pruned)[1]


def lineage(ref: str, *, verify: bool = True) -> dict:
    """Everything a checkpoint, alias or fine-tuned model (`ft:` name) depends on, with every hash
    (`rft lineage --json`)."""
    from rft import models
    from rft.registry.lineage import lineage as _lineage

    return _lineage(models.fine_tuned_checkpoint(ref) if ref.startswith(models.FT_PREFIX) else ref, verify=verify)


def export(checkpoint: str, out_dir: PathLike, *, force: bool = False) -> dict:
    """Write a checkpoint as a plain transformers directory (merged weights, tokenizer, config, generation
    config, a README.md model card with its lineage and evaluations) that `AutoModelForCausalLM.from_pretrained`
    loads as is (`rft checkpoints export`). Returns {"path", "files", "checkpoint", ...}; see
    `rft.models.export.export_checkpoint`."""
    from rft.models.export import export_checkpoint

    return export_checkpoint(checkpoint, out_dir, force=force)


# ------------------------------------------------------------------------------------------------- data
def datasets() -> list[dict]:
    """The built-in datasets, each `{"ref", "name", "family", "description"}` (`rft data list --json`)."""
    from rft.data import builtin_catalog

    return builtin_catalog()


def load_dataset(ref: str | os.PathLike, *, split: str = "train", n: int | None = None,
                 seed: int | None = None) -> Dataset:
    """Rows of a JSONL or Parquet file, a `file-...` id, an `hf:` dataset in the local cache or a `builtin:`
    dataset, checked row by row (`rft.data.load_dataset`)."""
    from rft.data import load_dataset as _load

    return _load(str(ref), split=split, n=n, seed=seed)


# ------------------------------------------------------------------------------- replay and explain (issue 18)
def replay(job_id: str, grader: PathLike | Mapping[str, Any], *, write: bool = True, record: bool = True,
           log: Callable[[str], Any] | None = None) -> dict:
    """Re-grade a job's stored training samples and evaluation items with another grader, generating nothing
    (`rft replay JOB --grader NEW.json`): per-item old and new scores, pass/fail flips, advantage sign flips,
    mean reward and validation accuracy under each grader with paired CIs, agreement with people's verdicts.
    Recorded in the registry with both grader hashes; see `rft.review.replay`."""
    from rft.review.replay import replay_job

    return replay_job(job_id, _grader_arg(grader), write=write, record=record, log=log)


def replay_eval(eval_id: str, grader: PathLike | Mapping[str, Any], *, write: bool = True,
                record: bool = True) -> dict:
    """Re-grade a stored evaluation report's items with another grader (`rft eval --replay EVAL_ID`)."""
    from rft.review.replay import replay_eval as _replay_eval

    return _replay_eval(eval_id, _grader_arg(grader), write=write, record=record)


def explain(checkpoint: str, *, by: Iterable[str] = (), max_items: int = 50) -> dict:
    """Where a checkpoint regressed against its job's baseline (`rft explain CKPT`): slices, kinds of moved
    items, grader errors, length and truncation, the steps where the monitor saw it start; see
    `rft.review.explain`."""
    from rft.review.explain import explain as _explain

    return _explain(checkpoint, by=list(by) or None, max_items=max_items)


# ------------------------------------------------------------------------------------ review (issue 18)
def review_queue(job_id: str, *, n: int = 20, seed: int = 0) -> dict:
    """The next n of a job's stored samples and evaluation items for people to review (`rft review JOB --queue`):
    a seeded stratified draw (grader score, grader errors, high |advantage|, late steps, regressed validation
    items), items already reviewed left out, each with why it was drawn; see `rft.review.queue`."""
    from rft.registry import Registry
    from rft.review.verdicts import job_queue

    reg = Registry()
    return job_queue(reg, reg.get_job(job_id), n, seed=seed)


def review_submit(job_id: str, verdicts: list[dict], *, reviewer: str | None = None,
                  where: str | None = None) -> list[dict]:
    """Store people's verdicts on a job's items: [{"item_key", "verdict": pass | fail | a score in [0, 1],
    "note"}] (or "human_score" for the number), all or none; each row records the reviewer (default: the
    acting user) and when. `rft review JOB`, `--verdicts FILE` and POST .../review/verdicts all come here."""
    from rft.registry import Registry, default_actor
    from rft.review.verdicts import submit

    reg = Registry()
    return submit(reg, reg.get_job(job_id), verdicts, reviewer or default_actor(), where=where)


def review_agreement(job_id: str, *, grader_sha256: str | None = None) -> dict:
    """Agreement of people with a job's grader (`rft review JOB --report`): accuracy and Cohen's kappa with 95%
    CIs, overall and per grader version, and the disagreements; see `rft.review.agreement`."""
    from rft.registry import Registry
    from rft.review.verdicts import job_agreement

    reg = Registry()
    return job_agreement(reg, reg.get_job(job_id)["id"], grader_sha256=grader_sha256)


def review_export_guard(job_id: str, path: PathLike) -> dict:
    """Write a job's reviewed items as a guard set (`rft review JOB --export-guard FILE.jsonl`), usable as
    `rft.eval.guard_file`."""
    from rft.registry import Registry
    from rft.review.verdicts import export_guard

    reg = Registry()
    return export_guard(reg, reg.get_job(job_id), path)
