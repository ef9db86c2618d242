"""`rft review JOB`: people check the grader. A thin wrapper over `rft.api.review_*` (`rft.review`).

Modes (one at a time):
  rft review JOB                       interactive: items one at a time (prompt, completion, grader score and
                                       error, reference fields, why it was drawn); answer p (pass), f (fail), a
                                       number in [0, 1], s (skip) or q (quit), then an optional note. Each verdict
                                       is stored at once, so quitting keeps what was given. Reads stdin line by
                                       line, so it also works with stdin piped (scripts, tests).
  rft review JOB --queue               print the queue (what the interactive mode would show), nothing stored
  rft review JOB --verdicts FILE       store verdicts from a JSONL file ({"item_key", "verdict", "note"} a line)
  rft review JOB --report              agreement of people with the grader: accuracy and Cohen's kappa with
                                       95% CIs, per grader version, the disagreements
  rft review JOB --export-guard FILE   the reviewed items as a guard-set JSONL (rft.eval.guard_file)
`--json` prints the result object (in the interactive mode the items are shown on stderr, and the stored
verdicts and the agreement are printed as JSON at the end).
How to run: `rft review ftjob-... -n 30`, `rft review ftjob-... --report --json`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from rft.cli.output import err, out, print_json
from rft.errors import RftError


def _f(x, fmt: str = ".3f") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and not isinstance(x, bool) and x == x else "n/a"


def _ci(ci) -> str:
    return f"[{_f(ci[0])}, {_f(ci[1])}]" if ci else "n/a"


def _say(line: str, to_err: bool = False) -> None:
    (err if to_err else out).print(line, highlight=False, soft_wrap=True, markup=False)


def _show_item(it: dict, i: int, total: int, to_err: bool) -> None:
    say = lambda s: _say(s, to_err)  # noqa: E731
    where = f"step {it['step']}" if it["source"] == "train" else f"evaluation item {it['index']}"
    say(f"--- [{i}/{total}] {it['key']} ({where}) drawn as {it['why']['stratum']}: {it['why']['text']}")
    say("prompt:")
    say("  " + (it.get("prompt") or "(not stored)").replace("\n", "\n  "))
    say("completion:")
    say("  " + (it.get("completion") or "").replace("\n", "\n  "))
    err_txt = f"  error: {it['error']}" if it.get("error") else ""
    adv = f"  advantage: {_f(it['advantage'], '+.3f')}" if it.get("advantage") is not None else ""
    base = f"  baseline score: {_f(it['baseline_score'])}" if it.get("baseline_score") is not None else ""
    say(f"grader score: {_f(it.get('grader_score')) if it.get('grader_score') is not None else 'none (unscored)'}"
        f"{err_txt}{adv}{base}")
    ref = it.get("reference") or {}
    if ref:
        say("reference: " + ", ".join(f"{k}={str(v)[:200]}" for k, v in ref.items()))


def _ask(question: str, to_err: bool) -> str | None:
    """One line from stdin (None at end of input)."""
    (sys.stderr if to_err else sys.stdout).write(question)
    (sys.stderr if to_err else sys.stdout).flush()
    line = sys.stdin.readline()
    return None if line == "" else line.strip()


def _interactive(job_id: str, n: int, seed: int, reviewer: str, as_json: bool) -> dict:
    from rft import api
    from rft.review.verdicts import parse_verdict

    q = api.review_queue(job_id, n=n, seed=seed)
    stored, skipped, quit_ = [], 0, False
    if not q["items"]:
        _say(f"nothing to review in job {q['job_id']}: {q['reviewed']} of {q['items_total']} item(s) already "
             "reviewed", as_json)
    for i, it in enumerate(q["items"], 1):
        _show_item(it, i, len(q["items"]), as_json)
        while True:
            ans = _ask("verdict [p]ass / [f]ail / a score 0..1 / [s]kip / [q]uit: ", as_json)
            if ans is None or ans.lower() in ("q", "quit"):
                quit_ = True
                break
            if ans.lower() in ("s", "skip"):
                skipped += 1
                break
            try:
                score = parse_verdict(ans)
            except RftError as e:
                _say(f"  {e}", True)
                continue
            note = _ask("note (Enter for none): ", as_json)
            rows = api.review_submit(q["job_id"], [{"item_key": it["key"], "human_score": score, "note": note}],
                                     reviewer=reviewer)
            stored += rows
            _say(f"  stored: {it['key']} = {score:g} by {reviewer}", as_json)
            break
        if quit_:
            break
    ag = api.review_agreement(q["job_id"])
    res = {"object": "rft.review_session", "job_id": q["job_id"], "reviewer": reviewer, "stored": len(stored),
           "skipped": skipped, "quit": quit_, "verdicts": [{k: r[k] for k in ("id", "item_key", "human_score",
                                                                             "grader_score", "note")} for r in stored],
           "agreement": ag["overall"]}
    if not as_json:
        _say(f"stored {len(stored)} verdict(s), skipped {skipped}; job {q['job_id']} now has {ag['verdicts']} "
             f"verdict(s): {_agreement_line(ag['overall'])}")
    return res


def _agreement_line(a: dict) -> str:
    if not a["n"]:
        return f"no verdict on a scored item yet ({a['unscored']} on unscored items)"
    return (f"agreement {_f(a['accuracy'])} {_ci(a['accuracy_ci95'])}, kappa "
            f"{_f(a['kappa']) if a['kappa'] is not None else 'undefined'} {_ci(a['kappa_ci95'])}, "
            f"disagreement {_f(a['disagreement'])} on {a['n']} item(s)")


def _print_report(r: dict) -> None:
    _say(f"review of job {r['job_id']}: {r['verdicts']} verdict(s) by {', '.join(r['reviewers']) or 'nobody yet'}")
    o = r["overall"]
    _say(f"  all:   {_agreement_line(o)}; confusion (person = truth) tp {o['confusion']['tp']} fp "
         f"{o['confusion']['fp']} fn {o['confusion']['fn']} tn {o['confusion']['tn']}; unscored {o['unscored']}")
    for sha, a in r["by_grader"].items():
        _say(f"  grader {sha[:16]}: {_agreement_line(a)}")
    _say(f"  method: {o['method']}")
    if r["disagreements"]:
        _say(f"disagreements ({len(r['disagreements'])}):")
        for d in r["disagreements"]:
            note = f"  note: {d['note']}" if d.get("note") else ""
            _say(f"  {d['item_key']}: person {_f(d['human_score'], 'g')}, grader {_f(d['grader_score'], 'g')} "
                 f"({d['reviewer']}){note}")
            _say(f"      completion: {d['completion'][:160]!r}")


def _print_queue(q: dict) -> None:
    _say(f"queue for job {q['job_id']}: {q['n']} item(s) (seed {q['seed']}; {q['reviewed']} of {q['items_total']} "
         "already reviewed)")
    _say("  strata: " + ", ".join(f"{k} {v}" for k, v in q["strata"].items()))
    for it in q["items"]:
        _say(f"  {it['key']:<28} score {_f(it['grader_score'])}  {it['why']['stratum']}: {it['why']['text']}")


def review(job_id: str = typer.Argument(..., help="The job (id or unique prefix) whose samples to review."),
           n: int = typer.Option(20, "-n", "--n", min=0, max=10_000, help="How many items to draw for review."),
           seed: int = typer.Option(0, "--seed", help="Seed of the stratified draw (same seed, same queue)."),
           queue: bool = typer.Option(False, "--queue", help="Print the queue; store nothing."),
           verdicts: Optional[Path] = typer.Option(None, "--verdicts", metavar="FILE.jsonl",
                                                   help="Store verdicts from a JSONL file: item_key, verdict "
                                                        "(pass, fail or a score in [0, 1]), note."),
           report: bool = typer.Option(False, "--report", help="Print agreement of people with the grader "
                                                                "(accuracy, Cohen's kappa, 95% CIs, disagreements)."),
           export_guard: Optional[Path] = typer.Option(None, "--export-guard", metavar="FILE.jsonl",
                                                       help="Write the reviewed items as a guard set "
                                                            "(usable as rft.eval.guard_file)."),
           grader_sha256: Optional[str] = typer.Option(None, "--grader-sha256",
                                                       help="With --report: only verdicts given on this grader version."),
           by: Optional[str] = typer.Option(None, "--by", help="Reviewer name (single-user mode; default: you)."),
           as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")):
    """Review a job's samples: pass/fail verdicts by people, measured against the grader."""
    from rft import api
    from rft.cli.permissions import actor

    modes = [name for name, on in (("--queue", queue), ("--verdicts", verdicts is not None), ("--report", report),
                                   ("--export-guard", export_guard is not None)) if on]
    if len(modes) > 1:
        raise RftError(f"{' and '.join(modes)}: give one of --queue, --verdicts, --report, --export-guard")
    if grader_sha256 is not None and not report:
        raise RftError("--grader-sha256 goes with --report")
    if queue:
        res = api.review_queue(job_id, n=n, seed=seed)
        return print_json(res) if as_json else _print_queue(res)
    if report:
        res = api.review_agreement(job_id, grader_sha256=grader_sha256)
        return print_json(res) if as_json else _print_report(res)
    if export_guard is not None:
        res = api.review_export_guard(job_id, export_guard)
        if as_json:
            return print_json(res)
        more = f" ({res['skipped']} without a stored prompt left out)" if res["skipped"] else ""
        return _say(f"wrote {res['rows']} reviewed item(s) of job {res['job_id']} to {res['path']}{more}; "
                    "use it as rft.eval.guard_file")
    reviewer = actor(by)
    if verdicts is not None:
        from rft.review.verdicts import load_verdict_file

        entries = load_verdict_file(verdicts)
        rows = api.review_submit(job_id, entries, reviewer=reviewer, where=str(verdicts))
        ag = api.review_agreement(rows[0]["job_id"])
        if as_json:
            return print_json({"object": "rft.review_import", "job_id": rows[0]["job_id"], "stored": len(rows),
                               "reviewer": reviewer, "agreement": ag["overall"]})
        return _say(f"stored {len(rows)} verdict(s) by {reviewer} on job {rows[0]['job_id']}; "
                    f"{_agreement_line(ag['overall'])}")
    res = _interactive(job_id, n, seed, reviewer, as_json)
    if as_json:
        print_json(res)


def register(app: typer.Typer) -> None:
    app.command("review")(review)
