"""`rft replay` and `rft explain`: thin wrappers over `rft.api.replay` and `rft.api.explain`.

`register(app)` adds both commands (rft.cli.main calls it). They parse, call the library, and print a short
text summary (or the JSON with --json: the replay without its per-item records, which are in the replay
folder's items.jsonl; the explanation in full).

How to run:
    rft replay ftjob-... --grader examples/review/fixed_grader.json
    rft explain ckpt:ckpt-... --json
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rft.cli.output import out, print_json


def _f(x, fmt: str = ".3f") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and x == x else "n/a"


def _ci(ci) -> str:
    ci = ci or [None, None]
    return f"[{_f(ci[0])}, {_f(ci[1])}]"


def _keys(keys: list[str], show: int) -> str:
    more = f" ... (+{len(keys) - show})" if len(keys) > show else ""
    return ", ".join(keys[:show]) + more if keys else "-"


def _say(line: str) -> None:
    out.print(line, highlight=False, soft_wrap=True, markup=False)


def print_replay(res: dict, show: int = 10) -> None:
    g = res["graders"]
    _say(f"replay {res['id']} of {'job ' + res['job_id'] if res.get('job_id') else 'evaluation ' + str(res['eval_id'])}")
    _say(f"  old grader  {g['old'].get('type')} {g['old'].get('name') or ''}  sha256:{g['old']['sha256']}")
    _say(f"  new grader  {g['new'].get('type')} {g['new'].get('name') or ''}  sha256:{g['new']['sha256']}")
    tr = res.get("training")
    if tr and tr["overall"]["n"]:
        o = tr["overall"]
        _say(f"training samples: {o['n']}; mean reward old {_f(o['old_mean'])} {_ci(o['old_ci95'])} -> new "
             f"{_f(o['new_mean'])} {_ci(o['new_ci95'])}; difference {_f(o['mean_difference'])} {_ci(o['difference_ci95'])}")
        for st in tr["steps"]:
            adv = st.get("advantage") or {}
            _say(f"  step {st['step']:>4}: reward {_f(st['old_mean'])} -> {_f(st['new_mean'])}  flips "
                 f"pass->fail {st['pass_to_fail']}, fail->pass {st['fail_to_pass']}; advantage sign flips "
                 f"{adv.get('sign_flipped', 'n/a')} in {adv.get('groups_with_sign_flip', 'n/a')} of "
                 f"{adv.get('groups', 'n/a')} groups")
        fl, a = tr["flips"], tr["advantages"]
        _say(f"training flips: {fl['pass_to_fail']} pass->fail, {fl['fail_to_pass']} fail->pass "
             f"({fl['became_unscored']} became unscored)")
        _say(f"  pass->fail: {_keys(fl['pass_to_fail_keys'], show)}")
        _say(f"  fail->pass: {_keys(fl['fail_to_pass_keys'], show)}")
        _say(f"advantages ({res['advantage_function']}, groups of {res['group_size']}): {a['sign_flipped']} of "
             f"{a['samples']} samples change sign, in {a['groups_with_sign_flip']} of {a['groups']} groups; "
             f"{a['gained_signal']} gain and {a['lost_signal']} lose a learning signal")
    for ev in res.get("evaluations") or []:
        p = ev.get("paired") or {}
        _say(f"evaluation {ev['name']}{' (' + ev['kind'] + ')' if ev.get('kind') else ''}: accuracy "
             f"{_f(ev['old']['accuracy'])} {_ci(ev['old']['accuracy_ci95'])} -> {_f(ev['new']['accuracy'])} "
             f"{_ci(ev['new']['accuracy_ci95'])}; paired difference {_f(p.get('mean_difference'))} "
             f"{_ci(p.get('difference_ci95'))}; flips {ev['flips']['pass_to_fail']} pass->fail, "
             f"{ev['flips']['fail_to_pass']} fail->pass")
    ag = res.get("agreement")
    if ag and ag.get("n_matched"):
        for side in ("old", "new"):
            s = ag[side]
            _say(f"agreement with {ag['n_matched']} human verdicts, {side} grader: accuracy {_f(s['accuracy'])} "
                 f"{_ci(s['accuracy_ci95'])}, kappa {_f(s['kappa'])} {_ci(s['kappa_ci95'])}; disagreements: "
                 f"{_keys([str(k) for k in s['disagreements']], show)}")
    elif ag is not None:
        _say(f"agreement: none of the job's {ag['n_verdicts']} human verdicts is on these items")
    for w in res.get("warnings") or []:
        _say(f"warning: {w}")
    if res.get("paths"):
        _say(f"per-item scores: {res['paths']['items']}")


def print_explanation(res: dict, show: int = 10) -> None:
    for line in res["summary"]:
        _say(line)
    for c in res["comparisons"]:
        if c["slices"]:
            _say(f"{c['set']} slices that moved down (field=value: regressed/improved of n, mean before -> after):")
            for s in c["slices"][:show]:
                _say(f"  {s['field']}={s['value']}: {s['n_regressed']}/{s['n_improved']} of {s['n']}, "
                     f"{_f(s['mean_a'])} -> {_f(s['mean_b'])}")
        if c["regressed_keys"]:
            _say(f"{c['set']} regressed items: {_keys(c['regressed_keys'], show)}")
    f = res["files"]
    _say("files: " + ", ".join(p for p in [*f["reports"], f["events"], f["metrics"], f["samples"]] if p))


def register(app: typer.Typer) -> None:
    """Add the `replay` and `explain` commands to `app`."""

    @app.command("replay")
    def replay_cmd(
        job: str = typer.Argument(..., help="Job id (or a unique prefix) whose stored samples are re-graded."),
        grader: Path = typer.Option(..., "--grader", help="The other grader: OpenAI grader JSON (or YAML)."),
        show: int = typer.Option(10, "--show", help="How many item keys to list per flip direction."),
        as_json: bool = typer.Option(False, "--json", help="Print the replay (without per-item records) as JSON."),
    ):
        """Re-grade a job's stored training samples and evaluation items with another grader (nothing is
        generated): pass/fail flips, advantage sign flips, reward and accuracy under each grader with paired CIs,
        agreement with human verdicts. Writes <run dir>/replays/<id>/ and records the replay in the registry."""
        from rft import api

        res = api.replay(job, str(grader))
        if as_json:
            print_json({k: v for k, v in res.items() if k != "items"})
            return
        print_replay(res, show)

    @app.command("explain")
    def explain_cmd(
        ckpt: str = typer.Argument(..., help="Checkpoint: ckpt:<id>, alias:<name> or ft:<base>[:<suffix>]:<job id>."),
        by: Optional[List[str]] = typer.Option(None, "--by", help="Slice only by this dataset field (repeatable; "
                                               "default: every field of the items)."),
        max_items: int = typer.Option(50, "--max-items", help="Moved items listed in full per comparison."),
        show: int = typer.Option(10, "--show", help="Slices and item keys listed in the text output."),
        as_json: bool = typer.Option(False, "--json", help="Print the explanation as JSON."),
    ):
        """Where a checkpoint regressed against its job's baseline: the slices and kinds of items that moved,
        grader errors, completion length and truncation, and the steps where the monitor saw it start."""
        from rft import api

        res = api.explain(ckpt, by=by or [], max_items=max_items)
        if as_json:
            print_json(res)
            return
        print_explanation(res, show)
