"""People's verdicts on samples (`rft review`): the rows of table `review_verdicts` (migration 0006).

`add_verdict(reg, job_id=..., item_key=..., source=..., human_score=..., reviewer=...)` stores one verdict;
`list_verdicts(reg, job_id)` returns the verdicts in force, one per item (a later verdict on the same item
replaces an earlier one: a reviewer who changes their mind, or a second reviewer, wins by being newer; equal
times break by row id). `all_verdicts` keeps the history. Item keys name the sample a verdict is about:
  "train:<step>:<index>"        line <index> (0-based) of samples/step_<step>.jsonl in the job's run folder
  "eval:<report>:<index>"       item <index> of an evaluation report (its file stem, e.g. eval_step_4, or eval id)
The row also keeps the grader score the reviewer saw and that grader's sha256, so agreement can be computed
per grader version (a fixed grader is judged only on verdicts given against it, or replayed).

A store module: it checks the shape of what it stores (score in [0, 1], a well-formed key), not who may store
it; the CLI and HTTP routes check roles (trainer) before calling it, and resolve the job (team visibility).
How to run: `python -c "from rft.registry import Registry; from rft.registry.reviews import list_verdicts;
print(list_verdicts(Registry(), 'ftjob-...'))"`.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time

import sqlalchemy as sa

from rft.errors import RftError
from rft.registry.db import review_verdicts

SOURCES = ("train", "eval")
KEY_RE = re.compile(r"(train):(\d+):(\d+)|(eval):([A-Za-z0-9._-]{1,160}):(\d+)")


def parse_key(item_key: str) -> tuple[str, str | int, int]:
    """("train", step, index) or ("eval", report, index); RftError naming the expected forms otherwise."""
    m = KEY_RE.fullmatch(str(item_key or ""))
    if not m:
        raise RftError(f"item key '{item_key}' is not 'train:<step>:<index>' or 'eval:<report>:<index>'")
    if m.group(1):
        return "train", int(m.group(2)), int(m.group(3))
    return "eval", m.group(5), int(m.group(6))


def check_score(value, what: str = "human_score") -> float:
    """A verdict score: a number in [0, 1] (pass is 1.0, fail 0.0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= float(value) <= 1.0:
        raise RftError(f"{what} must be a number in [0, 1] (1 pass, 0 fail), got {value!r}")
    return float(value)


def add_verdict(reg, *, job_id: str, item_key: str, source: str, human_score: float, reviewer: str,
                step: int | None = None, grader_sha256: str | None = None, grader_score: float | None = None,
                note: str | None = None, data: dict | None = None, team: str | None = None,
                now: float | None = None) -> dict:
    """Store one verdict and return its row. `team`: the job's team (the caller passes it; this module imports
    nothing of rft.registry.access, which uses the rule below); `now` defaults to time.time()."""
    kind = parse_key(item_key)[0]
    if source not in SOURCES:
        raise RftError(f"verdict source must be one of {', '.join(SOURCES)}, got {source!r}")
    if kind != source:
        raise RftError(f"item key '{item_key}' is a {kind} item but source is {source!r}")
    if not reviewer or not str(reviewer).strip():
        raise RftError("a verdict needs a reviewer (who gave it)")
    score = check_score(human_score)
    if grader_score is not None:
        grader_score = float(grader_score)
        if not math.isfinite(grader_score):
            grader_score = None
    if step is None and kind == "train":
        step = parse_key(item_key)[1]
    row = {"id": f"rv-{secrets.token_hex(6)}", "job_id": job_id, "item_key": item_key, "source": source,
           "step": step, "grader_sha256": grader_sha256, "grader_score": grader_score, "human_score": score,
           "note": (note or "").strip() or None, "reviewer": str(reviewer).strip(), "team": team,
           "created_at": time.time() if now is None else float(now),
           "data": None if data is None else json.loads(json.dumps(data, default=str))}
    with reg.engine.begin() as c:
        c.execute(review_verdicts.insert().values(**row))
    return row


def all_verdicts(reg, job_id: str, *, grader_sha256: str | None = None) -> list[dict]:
    """Every verdict on the job (history included), oldest first."""
    q = sa.select(review_verdicts).where(review_verdicts.c.job_id == job_id)
    if grader_sha256 is not None:
        q = q.where(review_verdicts.c.grader_sha256 == grader_sha256)
    q = q.order_by(review_verdicts.c.created_at, review_verdicts.c.id)
    with reg.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(q)]


def list_verdicts(reg, job_id: str, *, grader_sha256: str | None = None) -> list[dict]:
    """The verdicts in force on the job: the newest per item_key, oldest first. With `grader_sha256`, only
    verdicts given while the reviewer saw that grader's score."""
    latest: dict[str, dict] = {}
    for r in all_verdicts(reg, job_id, grader_sha256=grader_sha256):
        latest.pop(r["item_key"], None)  # re-inserted: keeps "oldest first" by the verdict in force
        latest[r["item_key"]] = r
    return list(latest.values())


def count_verdicts(reg, job_id: str) -> int:
    """How many verdict rows the job has (a cheap check for the monitor: has anything changed?)."""
    with reg.engine.connect() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(review_verdicts)
                             .where(review_verdicts.c.job_id == job_id)).scalar() or 0)


# ----------------------------------------------------------------------------- the disagreement rule
MIN_VERDICTS = 20  # fewest scored verdicts for a disagreement rate to count (gates, policies, the monitor)


def pass_fail_counts(rows: list[dict], threshold: float = 0.5) -> tuple[int, int]:
    """(n, differ): verdicts whose grader score is known, and those where person and grader differ on
    pass/fail at `threshold`. The same count as `rft.review.agreement.agreement` (n, and 1 - accuracy times n);
    here so that layers below `review` (the promotion policy in rft.registry.access, the gates) can use it."""
    n = differ = 0
    for r in rows:
        g = r.get("grader_score")
        if g is None or (isinstance(g, float) and math.isnan(g)):
            continue
        n += 1
        differ += (float(r["human_score"]) >= threshold) != (float(g) >= threshold)
    return n, differ


def disagreement_rule(n: int, disagreement: float | None, limit: float, min_verdicts: int = MIN_VERDICTS
                      ) -> tuple[bool, str]:
    """(passed, why) for "people disagree with the grader on at most `limit` of the reviewed items", measured on
    n verdicts; fewer than `min_verdicts` cannot measure it, so the rule holds the checkpoint."""
    if n < max(1, min_verdicts) or disagreement is None:
        return False, (f"grader disagreement cannot be measured yet: {n} reviewed item(s) with a grader score, "
                       f"at least {max(1, min_verdicts)} needed (review more with `rft review JOB`)")
    ok = disagreement <= limit
    return ok, (f"people disagree with the grader on {disagreement:.1%} of {n} reviewed items "
                f"({'within' if ok else 'above'} the limit {limit:.1%})")


def job_run_by_this_process(reg) -> str | None:
    """The id of the one running job whose recorded owner is this process (pid and host, as `create_job` /
    `claim_job` record them), or None when there is none or more than one (then nothing can be told apart).
    The monitor uses it to find its job's verdicts without being handed the job id."""
    import os
    import socket

    from rft.registry.db import jobs

    host = socket.gethostname()
    with reg.engine.connect() as c:
        rows = c.execute(sa.select(jobs.c.id, jobs.c.host).where(
            (jobs.c.pid == os.getpid()) & (jobs.c.status == "running"))).all()
    ids = [r[0] for r in rows if (r[1] or "").partition("#")[0] == host]
    return ids[0] if len(ids) == 1 else None


def measured_disagreement(reg, job_id: str, *, grader_sha256: str | None = None) -> dict:
    """{"n", "disagreement"} of the job's verdicts in force (disagreement None when n = 0): what
    `rft.eval.gates.evaluate_gates(..., grader_review=...)` takes."""
    n, differ = pass_fail_counts(list_verdicts(reg, job_id, grader_sha256=grader_sha256))
    return {"n": n, "disagreement": differ / n if n else None}
