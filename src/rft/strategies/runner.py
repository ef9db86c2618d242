"""`rft strategies JOB.yaml`: the cost/quality table, row by row.

What it runs, all on the job's validation set (its first `max_items` rows) with the job's grader, extraction and
decoding cap (`rft.eval.max_new_tokens`, else `rft.sampling.max_new_tokens`):

    base            the job's model, greedy                                   (always run: every row is compared to it)
    reasoning       the base model with a thinking budget, for each of `budgets` (rft.eval.inference `reasoning`)
    best_of_n       the base model, N samples at the job's sampling temperature, for each N in `ns` and each selector:
                    `majority` (deployable) and `grader` (an upper bound: it reads the reference answers)
    sft             supervised fine-tuning (method.type supervised) on chat rows built from the training rows: the
                    prompt messages plus one assistant message, the row's reference output. The reference output is
                    the template `rft.learnability.reference_template` finds (rft.warm_start.reference_output, else
                    rft.train.reference_output, else the reference of an exact-match string_check on the whole
                    output), rendered over the row; rows it cannot render are left out. No template: the row is
                    skipped, with that reason.
    dpo             DPO (method.type dpo) on pairs from the job's grader (`rft.train.pairs.build_pairs`: the base
                    model's samples on the training prompts, best vs worst per prompt)
    grpo            the job itself (its method, its rft: section)

Trained rows run as ordinary registered jobs (`rft.train.loop.run_job`) with the job's own baseline/final
evaluations and interval checkpoints turned off (this table evaluates every model the same way, afterwards),
at most `train_steps` optimizer steps each when set, and on at most `train_rows` training rows for SFT and DPO
pair building. Then their final checkpoint is evaluated greedily exactly like `base`.

Per row: accuracy with its 95% CI; the paired difference to base (rft.eval.compare); training seconds (wall time
of the job, plus the pair building for DPO) and tokens; inference tokens per request, seconds and USD per 1,000
requests (rft.strategies.cost), measured inside the engine during the batched evaluation (the same engine
batching `rft batch` uses); p50 / p95 latency of single requests (`latency_items` requests sent one at a time
after the batched run). Then the Pareto front, the recommendation (rft.strategies.stats), the plot and report
(rft.strategies.report), and the table in the registry (rft.registry.strategies) with the ids of every job and
eval report it started.

Simplified: the rows run one after another on one machine (nothing overlaps); a row that fails (a training job
that stops) is recorded as failed with its reason and the table goes on; latency is measured with nothing else
running in the engine (no queueing).
How to run: `rft strategies examples/quickstart.yaml --max-items 100 --train-steps 20`.
"""

from __future__ import annotations

import copy
import gc
import json
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from rft.errors import RftError
from rft.eval.inference import StrategyContext, StrategySpec, check_spec, run_strategy
from rft.strategies.cost import Prices, inference_cost, training_cost
from rft.strategies.stats import answer_spread, cost_key, paired_difference, pareto_front, percentile, recommend

ROW_KINDS = ("base", "reasoning", "best_of_n", "sft", "dpo", "grpo")
SELECTORS = ("majority", "grader")
DEFAULT_BUDGETS = (32, 128)
DEFAULT_NS = (4, 8)


def warm_up(engine, rows: Sequence[dict]) -> None:
    """One short untimed generation, so the first timed row does not pay for first-call set-up (kernels, caches)."""
    from rft.engine import SamplingParams

    if rows:
        engine.generate([rows[0]["messages"]], SamplingParams(n=1, temperature=0.0, max_new_tokens=2))


class TimedEngine:
    """Wraps an engine: counts the seconds spent inside `generate` (the inference time of a row). Everything
    else (tokenizer, model) is the wrapped engine's.

    With a `cache` (a dict shared by the rows of one model), a call identical to an earlier one (same prompts,
    same sampling parameters, seed included) returns the earlier completions and is charged the seconds that
    call took: the best-of-N rows with the two selectors draw the very same seeded samples, so the second
    selector costs what the first one's generation cost without decoding them again."""

    def __init__(self, engine, clock: Callable[[], float], cache: dict | None = None):
        self._engine, self._clock, self.seconds, self._cache = engine, clock, 0.0, cache

    def generate(self, prompts, params, **kw):
        key = None
        if self._cache is not None:
            key = json.dumps([prompts, repr(params), kw], sort_keys=True, default=str)
            if key in self._cache:
                out, seconds = self._cache[key]
                self.seconds += seconds
                return out
        t0 = self._clock()
        out = self._engine.generate(prompts, params, **kw)
        seconds = self._clock() - t0
        self.seconds += seconds
        if key is not None:
            self._cache[key] = (out, seconds)
        return out

    def __getattr__(self, name):
        return getattr(self._engine, name)


def parse_only(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """`base,best_of_n,...` -> the row kinds, in table order; base is always included."""
    if text is None:
        return ROW_KINDS
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    from rft.errors import did_you_mean

    for p in parts:
        if p not in ROW_KINDS:
            raise RftError(f"--only: unknown row '{p[:40]}'{did_you_mean(p, list(ROW_KINDS))}",
                           hint=f"rows: {', '.join(ROW_KINDS)}")
    return tuple(k for k in ROW_KINDS if k in parts or k == "base")


def _ints(values: Iterable[int], what: str, lo: int, hi: int) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    if not out:
        raise RftError(f"{what}: give at least one value")
    for v in out:
        if not lo <= v <= hi:
            raise RftError(f"{what}: {v} is out of range [{lo}, {hi}]")
    return out


def new_table_id() -> str:
    return "strat-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _response_format(job) -> dict | None:
    rf = getattr(job, "response_format", None)
    if rf is None and getattr(job.method, "reinforcement", None) is not None:
        rf = job.method.reinforcement.response_format
    return rf


def _final_answer(completion: str | None, extraction) -> str | None:
    """The answer a row's item gave: the extraction pattern's match when the job has one, else the whole text."""
    from rft.extraction import extract

    if completion is None:
        return None
    got = extract(completion, extraction) if extraction.pattern else completion
    return got if got is None else got.strip()


def _safe(label: str) -> str:
    return label.replace("/", "-")


def _write_jsonl(path: Path, rows: Sequence[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sft_rows(job, rows: Sequence[dict]) -> tuple[list[dict], str | None]:
    """Chat rows for supervised fine-tuning from RFT rows (see the module docstring), and why there are none."""
    from rft import graders
    from rft.train.learnability import reference_template

    tmpl = reference_template(job)
    if not tmpl:
        return [], ("the job does not make a passing output known (set rft.train.reference_output or "
                    "rft.warm_start.reference_output, a template over the row such as '{{item.answer}}')")
    out = []
    for r in rows:
        try:
            target = graders.render(tmpl, {}, r)
        except graders.TemplateError:
            continue
        if target:
            out.append({"messages": [*r["messages"], {"role": "assistant", "content": target}]})
    return out, (None if out else f"the reference template {tmpl!r} rendered no output for any training row")


class _Table:
    """The state of one `rft strategies` run (see `run_strategies`)."""

    def __init__(self, job_path, overrides, *, out: Path, prices: Prices, max_items, train_steps, train_rows,
                 latency_items, budgets, ns, log, clock, record, load=None):
        from rft.config import apply_overrides, load_raw
        from rft.jobcheck import parse_job

        self.raw = apply_overrides(load_raw(job_path), list(overrides))
        self.job = parse_job(copy.deepcopy(self.raw), str(job_path))
        if self.job.method.type != "reinforcement":
            raise RftError(f"{job_path}: rft strategies compares methods against a reinforcement job; this one is "
                           f"method.type {self.job.method.type}", hint="give the RFT job (method.type reinforcement)")
        if not self.job.validation_file:
            raise RftError(f"{job_path}: the job has no validation_file; rft strategies measures every row on it",
                           hint="add validation_file to the job")
        self.job_path, self.out, self.prices, self.log, self.clock = str(job_path), out, prices, log, clock
        self.max_items, self.train_steps, self.train_rows = max_items, train_steps, train_rows
        self.latency_items, self.budgets, self.ns, self.record = latency_items, budgets, ns, record
        if load is None:
            from rft.engine import load_engine as load
        self.load = load
        from rft.train.setup import build_grader, load_data

        self.train_ds, self.val_ds = load_data(self.job)
        self.grader = build_grader(self.job)
        self.threshold = self.grader.pass_threshold if self.grader.pass_threshold is not None else 1.0
        self.rows_val = list(self.val_ds.rows[:max_items] if max_items else self.val_ds.rows)
        self.max_new_tokens = self.job.rft.eval.max_new_tokens or self.job.rft.sampling.max_new_tokens
        self.job_ids: list[str] = []
        self.eval_ids: list[str] = []
        self.base_report: dict | None = None

    # -------------------------------------------------------------------------------------------- measuring
    def measure(self, label: str, kind: str, engine, model_ref: str, spec: StrategySpec,
                cache: dict | None = None) -> dict[str, Any]:
        """Evaluate one (model, strategy) on the validation rows: accuracy, tokens, seconds, latency."""
        from rft.eval.runner import evaluate, report_dict, write_report

        spec = check_spec(spec)
        self.log(f"[{label}] evaluating {len(self.rows_val)} items ...")
        timed = TimedEngine(engine, self.clock, cache)
        rf = _response_format(self.job)
        rep = evaluate(timed, self.val_ds, self.grader, model_name=model_ref, max_new_tokens=self.max_new_tokens,
                       extraction=self.job.rft.extraction, seed=self.job.seed, max_items=self.max_items,
                       pass_threshold=self.threshold, response_format=rf, strategy=spec)
        eid = "eval-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
        report = report_dict(rep, pass_threshold=self.threshold, extra={
            "id": eid, "created_at": int(time.time()), "strategy": spec.text(), "upper_bound": spec.uses_reference,
            "grader": {"type": self.job.grader.get("type"), "name": self.grader.name, "sha256": self.grader.sha256},
            "settings": {"max_new_tokens": self.max_new_tokens, "limit": self.max_items, "seed": self.job.seed,
                         "strategy_table": True}})
        write_report(report, self.out / "evals" / _safe(label))
        if self.record:
            from rft.registry import Registry

            ckpt = model_ref.removeprefix("ckpt:") if model_ref.startswith("ckpt:") else None
            rid = Registry().add_eval_report("strategy", {k: v for k, v in report.items() if k != "items"},
                                             checkpoint_id=ckpt, model_ref=model_ref,
                                             data_sha256=report.get("dataset_sha256"),
                                             grader_sha256=self.grader.sha256, path=report["paths"]["json"])
            report["registry_id"] = rid
            self.eval_ids.append(rid)
        lat = self.latency(engine, spec)
        answers = answer_spread([_final_answer(it.get("completion"), self.job.rft.extraction)
                                 for it in report["items"] if not it.get("error")],
                                [it.get("answer") for it in report["items"]])
        tokens = sum(it.get("tokens_generated") or 0 for it in report["items"])
        cost = inference_cost(tokens, timed.seconds, len(report["items"]), self.prices)
        row = {"label": label, "kind": kind, "status": "ok", "strategy": spec.text(), "model": model_ref,
               "upper_bound": spec.uses_reference, "accuracy": report["accuracy"],
               "accuracy_ci95": report["accuracy_ci95"], "n": report["n"], "unscored_frac": report["unscored_frac"],
               **cost, "engine_seconds": timed.seconds, "latency": lat, "answers": answers,
               "eval_id": report.get("registry_id") or eid, "eval_report": report["paths"]["json"]}
        if self.base_report is None:
            self.base_report = report
            row["vs_base"] = {"mean": 0.0, "ci95": [0.0, 0.0], "n": report["n"], "improved": 0, "regressed": 0,
                              "mcnemar_p": 1.0, "method": "the base itself"}
        else:
            row["vs_base"] = paired_difference(self.base_report, report, seed=self.job.seed)
        self.log(f"[{label}] accuracy {row['accuracy']:.3f} [{row['accuracy_ci95'][0]:.3f}, "
                 f"{row['accuracy_ci95'][1]:.3f}], {cost['tokens_per_request']:.1f} tokens/request, "
                 f"{cost['seconds_per_1k']:.1f} s per 1k requests")
        return row

    def latency(self, engine, spec: StrategySpec) -> dict[str, Any]:
        """p50 / p95 seconds of single requests (one at a time) on the first `latency_items` rows."""
        from rft.engine.constrain import from_response_format

        rows = self.rows_val[: self.latency_items]
        ctx_kw = dict(max_new_tokens=self.max_new_tokens, extraction=self.job.rft.extraction, seed=self.job.seed,
                      constraint=from_response_format(_response_format(self.job)), grader=self.grader)
        times = []
        for r in rows:
            t0 = self.clock()
            run_strategy(engine, [r["messages"]], spec, StrategyContext(rows=[r], **ctx_kw))
            times.append(self.clock() - t0)
        return {"p50_s": percentile(times, 50), "p95_s": percentile(times, 95), "n": len(times)}

    # -------------------------------------------------------------------------------------------- training
    def train_job(self, label: str, raw: dict) -> dict:
        """Run one training job (evaluations off; `train_steps` cap) and return its final job object."""
        from rft.config import apply_overrides
        from rft.jobcheck import parse_job
        from rft.train.loop import run_job

        ov = ["rft.eval.baseline=false", "rft.eval.final=false", "rft.checkpoint.at_eval=false",
              "rft.checkpoint.save_final=true", "rft.checkpoint.state_interval=10000000"]
        if self.train_steps:
            ov.append(f"rft.train.max_steps={self.train_steps}")
        raw = apply_overrides(raw, ov)
        job = parse_job(raw, f"{self.job_path} ({label} row)")
        self.log(f"[{label}] training ({job.method.type}) ...")
        res = run_job(job, log=lambda s: self.log(f"[{label}] {s}"))
        self.job_ids.append(res["id"])
        return res

    def trained_row(self, label: str, raw: dict, *, extra_seconds: float = 0.0, extra: dict | None = None) -> dict:
        t0 = self.clock()
        res = self.train_job(label, raw)
        seconds = self.clock() - t0 + extra_seconds
        ref = res.get("fine_tuned_model_checkpoint")
        if not ref:
            raise RftError(f"the {label} job {res['id']} saved no final checkpoint")
        engine = self.load(ref)
        warm_up(engine, self.rows_val)
        try:
            row = self.measure(label, "trained", engine, ref, StrategySpec())
        finally:
            del engine
            gc.collect()
        row |= {"job_id": res["id"], "run_dir": (res.get("paths") or {}).get("run_dir"),
                "training": {"seconds": seconds, "loop_seconds": res.get("train_seconds"),
                             "tokens": res.get("trained_tokens"), "steps": res.get("trained_steps"),
                             "usd": training_cost(seconds, self.prices), **(extra or {})}}
        return row

    def sft(self) -> dict:
        rows, why = sft_rows(self.job, self.train_ds.rows[: self.train_rows] if self.train_rows else self.train_ds.rows)
        if why:
            return {"label": "sft", "kind": "trained", "status": "skipped", "reason": why}
        path = _write_jsonl(self.out / "data" / "sft_train.jsonl", rows)
        return self.trained_row("sft", self._method_raw("supervised", path),
                                extra={"training_file": str(path), "rows": len(rows)})

    def _method_raw(self, method: str, training_file: Path) -> dict:
        """The job as a one-epoch `method` job (supervised or dpo) on `training_file`, with the job's batch size
        and learning-rate multiplier, no validation file and no reinforcement-only settings."""
        raw = copy.deepcopy(self.raw)
        hp = self.job.hp
        raw["method"] = {"type": method, method: {"hyperparameters": {
            "n_epochs": 1, "batch_size": hp.batch_size, "learning_rate_multiplier": hp.learning_rate_multiplier}}}
        raw |= {"training_file": str(training_file), "validation_file": None}
        _drop_rl_only(raw)
        return raw

    def dpo(self) -> dict:
        from rft.jobcheck import parse_job
        from rft.train.pairs import build_pairs

        src = copy.deepcopy(self.raw)
        if self.train_rows:  # build pairs on a bounded number of training prompts
            p = _write_jsonl(self.out / "data" / "pair_prompts.jsonl", list(self.train_ds.rows[: self.train_rows]))
            src["training_file"] = str(p)
        pjob = parse_job(src, f"{self.job_path} (dpo pairs)")
        path = self.out / "data" / "dpo_pairs.jsonl"
        # best against worst sample where a prompt's samples differ (both sides on-policy), else the reference
        # answer against the worst when the job makes one known: best-vs-worst pairs are mostly ties when the base
        # model rarely passes (rft.train.pairs, preferred="auto")
        self.log("[dpo] building preference pairs from the base model's graded samples ...")
        t0 = self.clock()
        info = build_pairs(pjob, out_path=path, seed=self.job.seed, preferred="auto",
                           log=lambda s: self.log(f"[dpo] {s}"))
        pair_seconds = self.clock() - t0
        if info["pairs"] == 0:
            return {"label": "dpo", "kind": "trained", "status": "skipped",
                    "reason": "no prompt gave a pair: its samples scored alike and no reference answer scored "
                              "above them", "pairs": info}
        return self.trained_row("dpo", self._method_raw("dpo", path), extra_seconds=pair_seconds,
                                extra={"pair_seconds": pair_seconds, "pairs": info, "training_file": str(path)})

    def grpo(self) -> dict:
        return self.trained_row("grpo", copy.deepcopy(self.raw))


def _drop_rl_only(raw: dict) -> None:
    """Settings that only a reinforcement job has: a supervised/DPO job built from it must not carry them."""
    r = raw.get("rft")
    if isinstance(r, dict):
        tr = r.get("train")
        if isinstance(tr, dict):
            tr.pop("reference_output", None)  # checked against the grader, which these jobs do not carry


def run_strategies(job_path: str, overrides: Sequence[str] = (), *, only: str | Iterable[str] | None = None,
                   max_items: int | None = None, train_steps: int | None = None, train_rows: int | None = 64,
                   latency_items: int = 16, budgets: Iterable[int] = DEFAULT_BUDGETS,
                   ns: Iterable[int] = DEFAULT_NS, prices: Prices | str | None = None,
                   output_dir: str | Path | None = None, log: Callable[[str], None] = lambda s: None,
                   clock: Callable[[], float] = time.perf_counter, record: bool = True,
                   load: Callable[[str], Any] | None = None) -> dict:
    """Run the table (see the module docstring) and return it; writes table.json, table.md and pareto.png to
    `output_dir` (default `$RFT_HOME/strategies/<id>/`) and, with `record`, stores it in the registry.
    `clock` times generation and latency; `load(model_ref) -> engine` loads models (default
    `rft.engine.load_engine`); tests inject both."""
    from rft.strategies.cost import load_prices
    from rft.strategies.report import pareto_plot, table_markdown

    kinds = parse_only(only)
    budgets = _ints(budgets, "--budgets", 1, 32768)
    ns = _ints(ns, "--n", 1, 128)
    if max_items is not None and max_items < 1:
        raise RftError(f"--max-items must be >= 1, got {max_items}")
    if train_steps is not None and train_steps < 1:
        raise RftError(f"--train-steps must be >= 1, got {train_steps}")
    if train_rows is not None and train_rows < 1:
        raise RftError(f"--train-rows must be >= 1, got {train_rows}")
    if latency_items < 0:
        raise RftError(f"--latency-items must be >= 0, got {latency_items}")
    prices = prices if isinstance(prices, Prices) else load_prices(prices)
    table_id = new_table_id()
    out = Path(output_dir) if output_dir else _default_dir() / table_id
    t_start = clock()
    t = _Table(job_path, overrides, out=out, prices=prices, max_items=max_items, train_steps=train_steps,
               train_rows=train_rows, latency_items=latency_items, budgets=budgets, ns=ns, log=log, clock=clock,
               record=record, load=load)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    sampling_t = t.job.rft.sampling.temperature
    infer = [("base", "base", StrategySpec())]
    if "reasoning" in kinds:
        infer += [(f"reasoning_{b}", "reasoning", StrategySpec("reasoning", budget=b)) for b in budgets]
    if "best_of_n" in kinds:
        infer += [(f"best_of_{n}/{s}", "best_of_n", StrategySpec("best_of_n", n=n, selector=s,
                                                                  temperature=min(sampling_t, 2.0)))
                  for n in ns for s in SELECTORS]
    engine = t.load(t.job.model)
    warm_up(engine, t.rows_val)
    cache: dict = {}  # the base model's generations, shared by rows that ask for the same ones (best-of-N selectors)
    try:
        for label, kind, spec in infer:
            rows.append(t.measure(label, kind, engine, t.job.model, spec, cache))
    finally:
        del engine, cache
        gc.collect()
    for kind in ("sft", "dpo", "grpo"):
        if kind not in kinds:
            continue
        try:
            row = getattr(t, kind)()
        except Exception as e:  # noqa: BLE001 - one failed training row must not lose the table
            row = {"label": kind, "kind": "trained", "status": "failed", "reason": f"{type(e).__name__}: {e}"}
            import traceback

            log(f"[{kind}] failed: {type(e).__name__}: {e}\n{traceback.format_exc(limit=-4)}")
        rows.append(row)
    t.grader.close()
    ok = [r for r in rows if r.get("status") == "ok"]
    for r in rows:  # flat columns for the recommendation and the plot; NaN where a row did not run
        r.setdefault("accuracy", float("nan"))
        r.setdefault("accuracy_ci95", [float("nan"), float("nan")])
        for k in ("usd_per_1k", "tokens_per_1k", "seconds_per_1k", "tokens_per_request"):
            r.setdefault(k, float("nan"))
        r.setdefault("latency", {"p50_s": float("nan"), "p95_s": float("nan"), "n": 0})
    dep = [r for r in ok if not r.get("upper_bound")]
    key = cost_key(ok)  # the plot's x axis: USD, or tokens when every price is 0
    front = [dep[i]["label"] for i in pareto_front([(r[key], r["accuracy"]) for r in dep])]
    from rft.config import config_sha256

    table = {
        "object": "rft.strategy_table", "id": table_id, "created_at": int(time.time()), "job": t.job_path,
        "spec_sha256": config_sha256(t.job.model_dump(mode="json")), "model": t.job.model,
        "validation_file": t.job.validation_file, "dataset_sha256": t.val_ds.sha256, "n_items": len(t.rows_val),
        "grader": t.grader.name, "prices": prices.model_dump(),
        "settings": {"only": list(kinds), "max_items": max_items, "train_steps": train_steps,
                     "train_rows": train_rows, "latency_items": latency_items, "budgets": list(budgets),
                     "ns": list(ns), "overrides": list(overrides), "max_new_tokens": t.max_new_tokens},
        "rows": rows, "pareto_front": front, "recommendation": recommend(rows),
        "job_ids": t.job_ids, "eval_ids": t.eval_ids, "wall_seconds": clock() - t_start,
    }
    pj, pm, pp = out / "table.json", out / "table.md", out / "pareto.png"
    table["paths"] = {"dir": str(out), "json": str(pj), "markdown": str(pm), "plot": str(pp)}
    try:
        pareto_plot(table, pp)
    except Exception as e:  # noqa: BLE001 - a plot never loses the measurements
        table["paths"]["plot"] = None
        table.setdefault("warnings", []).append(f"could not draw {pp.name}: {type(e).__name__}: {e}")
    table = _nan_to_none(table)  # strict JSON: a number that could not be measured is null
    pj.write_text(json.dumps(table, indent=2, default=str) + "\n")
    pm.write_text(table_markdown(table))
    if record:
        from rft.registry import Registry
        from rft.registry.strategies import save_strategy_table

        save_strategy_table(Registry(), table)
    return table


def _nan_to_none(x):
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def _default_dir() -> Path:
    from rft.home import rft_home

    return rft_home() / "strategies"
