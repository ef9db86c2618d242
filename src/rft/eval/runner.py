"""Run a model over a dataset and grade it (the same grader path as training), and build the eval report.

What
----
- `evaluate(engine, dataset, grader, ...) -> EvalReport`: greedy decoding gives the headline accuracy (mean
  grader score over scored items, with a 95% CI). With `samples = K > 0`, K sampled completions per item give
  pass@k (unbiased estimator) for k = 1, 2, 4, ... up to K, and K itself. Every item keeps its index, its id
  (the row's `id` field when it has one), its scalar fields (for slicing), its greedy score / error /
  completion, and its sampled scores and errors, so that two evaluations can be compared item by item.
- `report_dict(rep, by=...)`: the JSON-ready report: the summary, grader error rates by kind, per-slice
  results for any dataset field, and the per-item records.
- `run_eval(model, data, grader, ...) -> dict`: what `rft eval` calls: resolve the model, evaluate, write
  `report.json` and `report.md` to `output_dir` (default `$RFT_HOME/evals/<eval_id>/`), call `on_report`.

Structured outputs and tools: `response_format` (the job's `method.reinforcement.response_format`) constrains
decoding the way training does and flags unparsable outputs as sample_parse_error; rows' `tools` reach the
prompt and their calls `sample.output_tools`.

Simplified: the pass/fail outcome of an item is `score >= pass_threshold` (the grader's own `pass_threshold`
when it has one, else 1.0); unscored items are neither and are left out of accuracy and pass rate (they are
counted in the error rates instead). A dataset field used for slicing must be a scalar (string, number,
bool, null) at the top level or one level down (`metadata.topic`).

How to run: `rft eval smollm2-135m-instruct --data builtin:arithmetic --grader examples/grader.json --n 4 --by op`.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from rft.config import ExtractionConfig
from rft.engine import SamplingParams
from rft.errors import RftError, did_you_mean
from rft.eval.stats import mean_ci, pass_at_k, wilson_ci
from rft.types import ERROR_KINDS, EvalReport

if TYPE_CHECKING:  # rft.graders (and its grader modules) load when an evaluation runs, not on `import rft.eval`
    from rft.graders import Grader

MISSING = "(missing)"  # the slice key of an item that lacks the field
_MAX_FIELD_CHARS = 200  # longer strings (prompts, essays) are not useful slice keys and bloat the report


def pass_ks(samples: int) -> list[int]:
    """k = 1, 2, 4, ... <= samples, plus samples itself: the pass@k values an eval reports."""
    if samples <= 0:
        return []
    ks, k = set(), 1
    while k <= samples:
        ks.add(k)
        k *= 2
    ks.add(samples)
    return sorted(ks)


def mean_pass_at_k(correct: Iterable[int], n: int, k: int) -> float:
    """Mean over items of the unbiased pass@k estimate, given each item's count of passing samples out of n."""
    vals = [pass_at_k(n, c, k) for c in correct]
    return sum(vals) / len(vals) if vals else float("nan")


def row_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The row's scalar fields, top level and one level down as `parent.child`; `messages` is left out."""
    out: dict[str, Any] = {}

    def keep(key: str, v: Any) -> None:
        if v is None or isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= _MAX_FIELD_CHARS):
            out[key] = v

    for k, v in row.items():
        if k == "messages":
            continue
        if isinstance(v, dict):
            for k2, v2 in v.items():
                keep(f"{k}.{k2}", v2)
        else:
            keep(k, v)
    return out


def slice_key(v: Any) -> str:
    """A JSON object key for a field value: strings as they are, anything else as its JSON text."""
    return v if isinstance(v, str) else json.dumps(v)


def _passed(score: float | None, threshold: float) -> bool | None:
    return None if score is None else score >= threshold


def evaluate(
    engine,
    dataset,
    grader: Grader,
    *,
    model_name: str,
    max_new_tokens: int = 64,
    samples: int = 0,
    temperature: float = 1.0,
    extraction: ExtractionConfig | None = None,
    seed: int = 0,
    step: int | None = None,
    max_items: int | None = None,
    grader_workers: int | None = None,
    pass_threshold: float = 1.0,
    response_format: dict | None = None,
    strategy=None,
) -> EvalReport:
    """`response_format`: the job's OpenAI response_format; a JSON one constrains decoding (greedy and sampled)
    and an unparsable output is a sample_parse_error. Rows with `tools` get them in the prompt and their tool
    calls in `sample.output_tools`.

    `strategy` (a spec string or `rft.eval.inference.StrategySpec`; None: plain greedy): the headline answer of
    each item comes from that inference strategy (best-of-N, reasoning budget); each item then records
    `tokens_generated` (every sample and phase) and `strategy` (candidates, selection, thinking), and
    `mean_completion_tokens` is the mean of `tokens_generated`."""
    from rft.engine.constrain import from_response_format
    from rft.extraction import sample_from_text
    from rft.graders import grade_many

    t0 = time.perf_counter()
    extraction = extraction or ExtractionConfig()
    # a sample "passes" at the grader's own pass_threshold when it has one, else at `pass_threshold`
    threshold = grader.pass_threshold if getattr(grader, "pass_threshold", None) is not None else pass_threshold
    rows = list(dataset.rows[:max_items] if max_items else dataset.rows)
    prompts = [r["messages"] for r in rows]
    constraint = from_response_format(response_format)
    tools = [r.get("tools") or None for r in rows]
    # tools= only when some row has tools: engines without tool support keep working for everything else
    gen_kw = {"tools": tools} if any(tools) else {}
    strat_out = None
    if strategy is not None:
        from rft.eval.inference import StrategyContext, run_strategy

        strat_out = run_strategy(engine, prompts, strategy, StrategyContext(
            max_new_tokens=max_new_tokens, extraction=extraction, seed=seed, constraint=constraint, grader=grader,
            rows=rows, tools=tools if any(tools) else None))
        texts = [o.completion for o in strat_out]
    else:
        greedy = engine.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens,
                                                         constraint=constraint), **gen_kw)
        texts = [g[0] for g in greedy]
    samples_ns = [sample_from_text(c.text, extraction, finish_reason=c.finish_reason, response_format=response_format,
                                   tools=r.get("tools")) for c, r in zip(texts, rows)]
    grades = grade_many(grader, samples_ns, rows, max_workers=grader_workers)
    scored = [g.score for g in grades if g.score is not None]
    acc = mean_ci(scored)
    items = [
        {"index": i, "id": rows[i].get("id"), "score": g.score, "passed": _passed(g.score, threshold),
         "error": g.error, "completion": c.text, "completion_tokens": len(c.token_ids),
         "finish_reason": c.finish_reason, "answer": rows[i].get("answer"), "fields": row_fields(rows[i])}
        for i, (g, c) in enumerate(zip(grades, texts))
    ]
    if strat_out is not None:
        for it, o in zip(items, strat_out):
            it["tokens_generated"] = o.tokens
            it["strategy"] = o.record()
    pak: dict[int, float] = {}
    if samples and samples > 0:
        sampled = engine.generate(
            prompts, SamplingParams(n=samples, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed,
                                    constraint=constraint), **gen_kw
        )
        flat_s, flat_r = [], []
        for r, comps in zip(rows, sampled):
            for c in comps:
                flat_s.append(sample_from_text(c.text, extraction, finish_reason=c.finish_reason,
                                               response_format=response_format, tools=r.get("tools")))
                flat_r.append(r)
        sgr = grade_many(grader, flat_s, flat_r, max_workers=grader_workers)
        correct = []
        for i, it in enumerate(items):
            g = sgr[i * samples : (i + 1) * samples]
            it["sample_scores"] = [x.score for x in g]
            it["sample_errors"] = [x.error for x in g]
            it["sample_passed"] = [_passed(x.score, threshold) for x in g]
            # an unscored sample counts as not passing: it is one of the k tries and it did not succeed
            correct.append(sum(1 for x in g if x.score is not None and x.score >= threshold))
        pak = {k: mean_pass_at_k(correct, samples, k) for k in pass_ks(samples)}
    return EvalReport(
        model=model_name,
        dataset=dataset.name,
        dataset_sha256=dataset.sha256,
        accuracy=acc,
        unscored_frac=1 - len(scored) / max(1, len(grades)),
        pass_at_k=pak,
        mean_completion_tokens=(sum(o.tokens for o in strat_out) if strat_out is not None
                                else sum(len(c.token_ids) for c in texts)) / max(1, len(texts)),
        seconds=time.perf_counter() - t0,
        step=step,
        items=tuple(items),
    )


# ------------------------------------------------------------------------------------------- report dict
def error_rates(errors: list[str | None]) -> dict[str, float]:
    """The rate of every grader error kind (ERROR_KINDS, plus any other kind seen) among `errors`."""
    n = len(errors)
    kinds = list(ERROR_KINDS) + sorted({e for e in errors if e and e not in ERROR_KINDS})
    return {k: (sum(1 for e in errors if e == k) / n if n else 0.0) for k in kinds}


def summarize_items(items: list[dict]) -> dict[str, Any]:
    """Accuracy with 95% CI, pass rate, unscored fraction and pass@k for a set of item records."""
    scores = [it["score"] for it in items if it.get("score") is not None]
    acc = mean_ci(scores)
    passes = [it["passed"] for it in items if it.get("passed") is not None]
    out: dict[str, Any] = {
        "n": len(items), "n_scored": len(scores), "accuracy": acc.mean, "accuracy_ci95": [acc.low, acc.high],
        "pass_rate": (sum(passes) / len(passes)) if passes else float("nan"),
        "pass_rate_ci95": list(wilson_ci(sum(passes), len(passes))),
        "unscored_frac": 1 - len(scores) / len(items) if items else float("nan"),
    }
    sp = [it.get("sample_passed") for it in items]
    if items and all(sp) and len({len(x) for x in sp}) == 1:  # every item has the same number of samples
        k_max = len(sp[0])
        out["pass_at_k"] = {str(k): mean_pass_at_k([sum(1 for p in x if p) for x in sp], k_max, k) for k in pass_ks(k_max)}
    return out


def field_names(items: list[dict]) -> list[str]:
    return sorted({k for it in items for k in it.get("fields", {})})


def check_by(items: list[dict], by: Iterable[str]) -> None:
    """Every `by` field must occur in at least one item; otherwise say which fields there are."""
    names = field_names(items)
    for f in by:
        if f not in names:
            raise RftError(f"no item has a field '{f}' to slice by{did_you_mean(f, names)}",
                           hint=f"scalar fields of these items: {', '.join(names) or '(none)'}")


def slices(items: list[dict], by: Iterable[str]) -> dict[str, dict[str, dict]]:
    """{field: {value: summary of the items with that value}} for each field in `by`."""
    out: dict[str, dict[str, dict]] = {}
    for f in by:
        groups: dict[str, list[dict]] = {}
        for it in items:
            fields = it.get("fields", {})
            key = slice_key(fields[f]) if f in fields else MISSING
            groups.setdefault(key, []).append(it)
        out[f] = {k: summarize_items(v) for k, v in sorted(groups.items())}
    return out


def report_dict(rep: EvalReport, *, by: Iterable[str] = (), pass_threshold: float = 1.0,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-ready report of an evaluation: summary, error rates, slices and per-item records.

    `compare_reports` accepts these dicts (and the loop's `summary() | {"items": ...}` ones)."""
    items = [dict(it) for it in rep.items]
    for it in items:  # `evaluate` fills these; older records may lack them
        if "sample_scores" in it and "sample_passed" not in it:
            it["sample_passed"] = [_passed(s, pass_threshold) for s in it["sample_scores"]]
        if "passed" not in it:
            it["passed"] = _passed(it.get("score"), pass_threshold)
    by = list(by)
    check_by(items, by)
    passes = [it["passed"] for it in items if it["passed"] is not None]
    sample_errors = [e for it in items for e in it.get("sample_errors", [])]
    d = {
        "object": "rft.eval",
        **rep.summary(),
        "pass_threshold": pass_threshold,
        "pass_rate": sum(passes) / len(passes) if passes else float("nan"),
        "pass_rate_ci95": list(wilson_ci(sum(passes), len(passes))),
        "error_counts": _counts([it.get("error") for it in items]),
        "error_rates": error_rates([it.get("error") for it in items]),
        "by": by,
        "slices": slices(items, by),
        **(extra or {}),
        "items": items,
    }
    if sample_errors:
        d["sample_error_rates"] = error_rates(sample_errors)
    return d


def _counts(errors: list[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in errors:
        if e:
            out[e] = out.get(e, 0) + 1
    return dict(sorted(out.items()))


def new_eval_id() -> str:
    return "eval-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def evals_dir() -> Path:
    from rft.home import rft_home

    return rft_home() / "evals"


def write_report(report: dict, out_dir: Path, *, stem: str = "report") -> dict[str, str]:
    """Write `<stem>.json` and `<stem>.md` into out_dir, with their paths recorded in `report["paths"]`."""
    from rft.eval.report import eval_markdown

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pj, pm = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    report["paths"] = {"dir": str(out_dir), "json": str(pj), "markdown": str(pm)}
    # The markdown is a view of the JSON: if it cannot be formatted, the evaluation still stands (the JSON is its
    # result) and the problem is recorded as a warning in the report instead of failing the command.
    try:
        md = eval_markdown(report)
        if report.get("strategy"):  # the headline accuracy is the strategy's; say so under the title
            head, sep, rest = md.partition("\n\n")
            ub = (" **UPPER BOUND**: its selector read the reference answers, which no deployment can do."
                  if report.get("upper_bound") else "")
            md = f"{head}{sep}- strategy: `{report['strategy']}` (the accuracy row is this strategy's, not greedy's)." \
                 f"{ub}\n{rest}"
    except Exception as e:  # noqa: BLE001 - a report view never fails an evaluation
        md = None
        report.setdefault("warnings", []).append(f"could not write {pm.name}: {type(e).__name__}: {e}")
        report["paths"]["markdown"] = None
    pj.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if md is not None:
        pm.write_text(md)
    return report["paths"]


def load_report(path: str | Path) -> dict:
    """A saved eval report (report.json of `rft eval`, or a training run's eval_*.json)."""
    p = Path(path)
    if not p.exists():
        raise RftError(f"eval report not found: {p}")
    try:
        d = json.loads(p.read_text())
    except ValueError as e:
        raise RftError(f"{p}: not valid JSON: {e}") from None
    if not isinstance(d, dict) or not isinstance(d.get("items"), list):
        raise RftError(f"{p}: not an eval report (it has no 'items' list)",
                       hint="use the report.json that `rft eval` writes, or a run's eval_baseline.json / eval_final.json")
    return d


def run_eval(
    model: str,
    data: str,
    grader: str | dict,
    *,
    n: int = 0,
    by: Iterable[str] = (),
    output_dir: str | Path | None = None,
    max_new_tokens: int = 64,
    limit: int | None = None,
    extract: str | None = None,
    split: str = "validation",
    seed: int = 0,
    temperature: float = 1.0,
    eval_id: str | None = None,
    engine=None,
    write: bool = True,
    on_report: Callable[[dict], Any] | None = None,
    allow_private_hosts: Iterable[str] = (),
    response_format: dict | None = None,
    strategy: str | None = None,
) -> dict:
    """Evaluate `model` on `data` with `grader` and return the report dict (see `report_dict`).
    `strategy`: an inference strategy spec (rft.eval.inference) for the headline answers; the report's
    `strategy` says which, and `upper_bound: true` when its selector read the reference answers.

    `grader` is a grader JSON path or a grader spec dict; `model` is any model reference (`rft.models.resolve`),
    unless `engine` is given, in which case `model` is only the name recorded. With `write`, the report goes
    to `output_dir` (default `$RFT_HOME/evals/<eval_id>/`) as report.json and report.md, and
    `report["paths"]` says where. `on_report(report)` is called last (to store it in a registry, say)."""
    from rft import graders
    from rft.data import load_dataset

    by = list(by)
    if n < 0:
        raise RftError(f"--n must be >= 0, got {n}")
    strat = None
    if strategy is not None:
        from rft.eval.inference import parse_strategy

        strat = parse_strategy(strategy)  # before the model loads
    if isinstance(grader, dict):
        spec, source = grader, None
    else:
        spec, source = graders.load_grader_file(str(grader)), str(grader)
    g = graders.build(spec, source=source, context=graders.GraderContext(allow_private_hosts=tuple(allow_private_hosts)))
    try:
        ds = load_dataset(data, split=split)
        fields = field_names([{"fields": row_fields(r)} for r in (ds.rows[:limit] if limit else ds.rows)])
        for f in by:  # fail before generating anything
            if f not in fields:
                raise RftError(f"{data}: no row has a field '{f}' to slice by{did_you_mean(f, fields)}",
                               hint=f"scalar fields of these rows: {', '.join(fields) or '(none)'}")
        if engine is None:
            from rft.engine import load_engine

            engine = load_engine(model)
        threshold = g.pass_threshold if g.pass_threshold is not None else 1.0
        rep = evaluate(engine, ds, g, model_name=model, max_new_tokens=max_new_tokens, samples=n,
                       temperature=temperature, extraction=ExtractionConfig(pattern=extract), seed=seed,
                       max_items=limit, pass_threshold=threshold, response_format=response_format, strategy=strat)
    finally:
        g.close()
    eval_id = eval_id or new_eval_id()
    report = report_dict(rep, by=by, pass_threshold=threshold, extra={
        "id": eval_id, "created_at": int(time.time()),
        "grader": {"type": spec.get("type"), "name": g.name, "sha256": g.sha256, "source": source},
        "settings": {"n": n, "max_new_tokens": max_new_tokens, "limit": limit, "extract": extract, "split": split,
                     "seed": seed, "temperature": temperature, "response_format": response_format},
        **({"strategy": strat.text(), "upper_bound": strat.uses_reference} if strat is not None else {}),
    })
    if write:
        write_report(report, Path(output_dir) if output_dir else evals_dir() / eval_id)
    if on_report is not None:
        on_report(report)
    return report
