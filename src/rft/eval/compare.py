"""Paired comparison of two evaluations of the same items (model A vs model B, baseline vs checkpoint).

What
----
`compare_reports(a_report, b_report, by=..., seed=...)` pairs the two reports' items (by the rows' `id`
field when every item has a unique one, else by position in the dataset) and returns:

- the mean score difference B - A over the items both scored, with a paired bootstrap 95% CI (resample the
  per-item differences with replacement, `resamples` times from a seeded generator; percentile interval);
- McNemar's test on the pass/fail outcomes: the exact two-sided binomial test on the discordant pairs when
  there are fewer than `exact_below` (25) of them, else the chi-square statistic with continuity correction,
  (|b - c| - 1)^2 / (b + c) on 1 degree of freedom. `mcnemar.method` says which one was used;
- the items that regressed (B scored lower than A) and that improved, and those that became unscored;
- the same numbers per slice, for every dataset field in `by`.

`a_report` / `b_report` are the dicts of `rft.eval.runner.report_dict` (what `rft eval` writes as report.json)
or the training run's `eval_*.json` (`summary() | {"items": [...]}`): only `items[*].index` and `.score` are
required; `id`, `passed`, `fields`, `completion` are used when present.

Simplified: unscored items (grader errors) are left out of the mean difference and of McNemar's table;
they are counted separately, and the grader error-rate gate is where they matter. Completions in the
improved/regressed lists are cut to 500 characters (the full text is in the eval reports).

How to run: `rft compare BASE_MODEL CANDIDATE --data val.jsonl --grader grader.json --by topic`, or on saved
reports: `rft compare --a-report base/report.json --b-report cand/report.json`.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from rft.errors import RftError
from rft.eval.runner import MISSING, slice_key

DEFAULT_RESAMPLES = 10_000
_SNIPPET = 500


# ------------------------------------------------------------------------------------------- statistics
def paired_bootstrap_ci(diffs: Iterable[float], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of paired differences.

    Each resample draws len(diffs) differences with replacement; the interval is the (1-level)/2 and
    (1+level)/2 quantiles of the resampled means. Deterministic for a given seed."""
    d = np.asarray(list(diffs), dtype=np.float64)  # [n]
    n = d.size
    if n == 0:
        return (float("nan"), float("nan"))
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)  # [R]
    chunk = max(1, 4_000_000 // n)  # bound the index matrix to ~32 MB
    for start in range(0, resamples, chunk):
        m = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(m, n))  # [m, n]
        means[start : start + m] = d[idx].mean(axis=1)
    alpha = 1.0 - level
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def _binom_two_sided_half(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n trials at p = 1/2 (twice the smaller tail, capped at 1)."""
    tail = sum(math.comb(n, i) for i in range(0, min(k, n - k) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def mcnemar(b: int, c: int, *, exact_below: int = 25) -> dict[str, Any]:
    """McNemar's test. b: pairs A passed and B failed (regressions); c: A failed and B passed (improvements)."""
    n = b + c
    if n == 0:
        return {"regressed": b, "improved": c, "discordant": 0, "method": "none (no discordant pairs)",
                "statistic": None, "p_value": 1.0}
    if n < exact_below:
        return {"regressed": b, "improved": c, "discordant": n, "method": "exact_binomial",
                "statistic": None, "p_value": _binom_two_sided_half(b, n)}
    stat = (abs(b - c) - 1.0) ** 2 / n
    stat = max(stat, 0.0)
    # chi-square with 1 degree of freedom: P(X > s) = P(|Z| > sqrt(s)) = erfc(sqrt(s / 2))
    return {"regressed": b, "improved": c, "discordant": n, "method": "chi2_continuity",
            "statistic": stat, "p_value": math.erfc(math.sqrt(stat / 2.0))}


# ------------------------------------------------------------------------------------------- pairing
def _key_mode(a_items: list[dict], b_items: list[dict]) -> str:
    def unique_ids(items):
        ids = [it.get("id") for it in items]
        return all(i is not None for i in ids) and len(set(map(str, ids))) == len(ids)

    return "id" if a_items and b_items and unique_ids(a_items) and unique_ids(b_items) else "index"


def _key(it: dict, mode: str) -> str:
    return str(it.get("id")) if mode == "id" else str(it.get("index"))


def _passed(it: dict, threshold: float) -> bool | None:
    if it.get("passed") is not None:
        return bool(it["passed"])
    s = it.get("score")
    return None if s is None else s >= threshold


def _snip(s: Any) -> Any:
    return s[:_SNIPPET] + "..." if isinstance(s, str) and len(s) > _SNIPPET else s


def _side_summary(r: dict) -> dict[str, Any]:
    keys = ("id", "model", "dataset", "dataset_sha256", "step", "accuracy", "accuracy_ci95", "n", "unscored_frac",
            "pass_rate", "pass_at_k", "mean_completion_tokens", "error_rates")
    out = {k: r.get(k) for k in keys if k in r}
    if "mean_completion_tokens" not in out:
        toks = [it["completion_tokens"] for it in r.get("items", []) if it.get("completion_tokens") is not None]
        if toks:
            out["mean_completion_tokens"] = sum(toks) / len(toks)
    if "unscored_frac" not in out and r.get("items"):
        out["unscored_frac"] = sum(1 for it in r["items"] if it.get("score") is None) / len(r["items"])
    return out


def _paired_stats(pairs: list[tuple[dict, dict]], *, ta: float, tb: float, resamples: int, seed: int,
                  level: float, exact_below: int) -> dict[str, Any]:
    both = [(a, b) for a, b in pairs if a.get("score") is not None and b.get("score") is not None]
    diffs = [b["score"] - a["score"] for a, b in both]
    n = len(diffs)
    lo, hi = paired_bootstrap_ci(diffs, resamples=resamples, seed=seed, level=level)
    pf = [(_passed(a, ta), _passed(b, tb)) for a, b in both]
    pf = [(x, y) for x, y in pf if x is not None and y is not None]
    reg = sum(1 for x, y in pf if x and not y)
    imp = sum(1 for x, y in pf if y and not x)
    return {
        "n_paired": len(pairs),
        "n_scored_pairs": n,
        "mean_a": sum(a["score"] for a, _ in both) / n if n else float("nan"),
        "mean_b": sum(b["score"] for _, b in both) / n if n else float("nan"),
        "mean_difference": sum(diffs) / n if n else float("nan"),
        "difference_ci95": [lo, hi],
        "n_improved": sum(1 for d in diffs if d > 0),
        "n_regressed": sum(1 for d in diffs if d < 0),
        "n_unchanged": sum(1 for d in diffs if d == 0),
        "mcnemar": mcnemar(reg, imp, exact_below=exact_below),
    }


def compare_reports(a_report: dict, b_report: dict, *, by: Iterable[str] | None = None, seed: int = 0,
                    resamples: int = DEFAULT_RESAMPLES, level: float = 0.95, exact_below: int = 25) -> dict[str, Any]:
    """Paired comparison of B against A (B - A). See the module docstring for what is in the result."""
    a_items, b_items = list(a_report.get("items") or []), list(b_report.get("items") or [])
    if not a_items or not b_items:
        raise RftError("both eval reports need per-item records ('items') to be compared",
                       hint="re-run `rft eval`, which keeps them")
    warnings: list[str] = []
    mode = _key_mode(a_items, b_items)
    sa, sb = a_report.get("dataset_sha256"), b_report.get("dataset_sha256")
    if sa and sb and sa != sb:
        if mode == "index":
            raise RftError(
                f"the two reports are on different datasets (sha256 {sa[:12]} vs {sb[:12]}) and the items have "
                "no unique 'id' field, so they cannot be paired",
                hint="compare evaluations of the same data file, or give every row a unique 'id'")
        warnings.append(f"the datasets differ (sha256 {sa[:12]} vs {sb[:12]}); items were paired by id")
    a_by = {_key(it, mode): it for it in a_items}
    b_by = {_key(it, mode): it for it in b_items}
    common = [k for k in a_by if k in b_by]
    a_only = [k for k in a_by if k not in b_by]
    b_only = [k for k in b_by if k not in a_by]
    if a_only or b_only:
        warnings.append(f"{len(a_only)} item(s) only in A and {len(b_only)} only in B were left out")
    if not common:
        raise RftError("the two eval reports have no items in common", hint=f"items were matched by {mode}")
    pairs = [(a_by[k], b_by[k]) for k in common]
    ta = float(a_report.get("pass_threshold", 1.0))
    tb = float(b_report.get("pass_threshold", 1.0))
    if ta != tb:
        warnings.append(f"the reports use different pass thresholds ({ta} vs {tb})")
    kw = dict(ta=ta, tb=tb, resamples=resamples, seed=seed, level=level, exact_below=exact_below)

    result: dict[str, Any] = {
        "object": "rft.comparison",
        "a": _side_summary(a_report),
        "b": _side_summary(b_report),
        "paired_by": mode,
        "n_a": len(a_items),
        "n_b": len(b_items),
        **_paired_stats(pairs, **kw),
        "ci_method": f"paired bootstrap, percentile, {resamples} resamples, seed {seed}",
        "level": level,
        "resamples": resamples,
        "seed": seed,
    }
    result["unscored"] = {
        "a_only": sum(1 for a, b in pairs if a.get("score") is None and b.get("score") is not None),
        "b_only": sum(1 for a, b in pairs if b.get("score") is None and a.get("score") is not None),
        "both": sum(1 for a, b in pairs if a.get("score") is None and b.get("score") is None),
    }

    def rec(k: str, a: dict, b: dict) -> dict:
        return {"key": k, "index": a.get("index"), "id": a.get("id"), "a": a.get("score"), "b": b.get("score"),
                "a_error": a.get("error"), "b_error": b.get("error"), "answer": _snip(a.get("answer")),
                "a_completion": _snip(a.get("completion")), "b_completion": _snip(b.get("completion"))}

    scored = [(k, a_by[k], b_by[k]) for k in common
              if a_by[k].get("score") is not None and b_by[k].get("score") is not None]
    result["improved"] = [rec(k, a, b) for k, a, b in scored if b["score"] > a["score"]]
    result["regressed"] = [rec(k, a, b) for k, a, b in scored if b["score"] < a["score"]]
    result["became_unscored"] = [rec(k, a_by[k], b_by[k]) for k in common
                                 if a_by[k].get("score") is not None and b_by[k].get("score") is None]

    by = list(a_report.get("by") or b_report.get("by") or []) if by is None else list(by)
    result["by"] = by
    result["slices"] = {}
    for f in by:
        def field_of(a: dict, b: dict):
            fa, fb = a.get("fields") or {}, b.get("fields") or {}
            return slice_key(fa[f]) if f in fa else slice_key(fb[f]) if f in fb else MISSING

        groups: dict[str, list[tuple[dict, dict]]] = {}
        for a, b in pairs:
            groups.setdefault(field_of(a, b), []).append((a, b))
        if set(groups) == {MISSING}:
            raise RftError(f"no item has a field '{f}' to slice by",
                           hint="slices need the items' 'fields' (reports written by `rft eval` keep them)")
        result["slices"][f] = {v: _paired_stats(g, **kw) for v, g in sorted(groups.items())}
    result["warnings"] = warnings
    return result


def compare_models(a_model: str | None, b_model: str | None, data: str | None, grader: str | dict | None, *,
                   a_report: dict | None = None, b_report: dict | None = None, by: Iterable[str] = (),
                   seed: int = 0, resamples: int = DEFAULT_RESAMPLES, eval_kwargs: dict | None = None,
                   output_dir=None, on_report=None) -> dict[str, Any]:
    """What `rft compare` calls: evaluate whichever side has no saved report (greedy, same data and grader),
    then `compare_reports`. With `output_dir`, the new eval reports go to `a/` and `b/` under it and the
    comparison to comparison.json and comparison.md. `on_report` is called for each new eval report."""
    import json
    from pathlib import Path

    from rft.eval.report import comparison_markdown
    from rft.eval.runner import run_eval

    by = list(by)
    reports = {}
    for side, model, rep in (("a", a_model, a_report), ("b", b_model, b_report)):
        if rep is not None:
            reports[side] = rep
            continue
        if not model:
            raise RftError(f"give model {side.upper()} or --{side}-report")
        if not data or grader is None:
            raise RftError(f"--data and --grader are needed to evaluate model {side.upper()} ({model})")
        sub = Path(output_dir) / side if output_dir else None
        reports[side] = run_eval(model, data, grader, by=by, output_dir=sub, write=sub is not None,
                                 on_report=on_report, **(eval_kwargs or {}))
    result = compare_reports(reports["a"], reports["b"], by=by or None, seed=seed, resamples=resamples)
    if output_dir:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        pj, pm = out / "comparison.json", out / "comparison.md"
        result["paths"] = {"json": str(pj), "markdown": str(pm), "dir": str(out)}
        for side in ("a", "b"):
            p = (reports[side].get("paths") or {}).get("json")
            if p:
                result["paths"][f"{side}_report"] = p
        pj.write_text(json.dumps(result, indent=2, default=str) + "\n")
        pm.write_text(comparison_markdown(result))
    return result
