"""The review page in a real browser (Debian's Chromium through Playwright, the module-scoped `browser` fixture of
tests/dashboard/conftest.py) over the live server holding the real tiny run: the job page links it, fail / score /
pass buttons store verdicts through the same library call as `rft review` (checked with the installed CLI's
`rft review JOB --report --json`), skip moves on, the agreement summary updates, no console errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RFT = str(Path(sys.executable).with_name("rft"))


def _submit(page, button, url_part):
    with page.expect_navigation():
        page.click(button)
    assert url_part in page.url, (page.url, page.content()[:2000])


def _report(job_id: str) -> dict:
    out = subprocess.run([RFT, "review", job_id, "--report", "--json"], capture_output=True, text=True,
                         env=os.environ.copy(), timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_review_page_stores_verdicts_like_the_cli(page, base_url, trained_run, screenshots):
    jid = trained_run["id"]
    before = _report(jid)["verdicts"]
    page.goto(f"{base_url}/jobs/{jid}")
    with page.expect_navigation():
        page.click("#review-link")
    assert page.url.endswith(f"/jobs/{jid}/review")
    assert page.locator("#item-completion").count() == 1 and page.locator("#agreement").count() == 1

    keys = []
    for button, extra in (("#btn-fail", {"#verdict-note": "lists <b>numbers</b>"}), ("#btn-score", {"#verdict-score": "0.8"}),
                          ("#btn-pass", {})):
        keys.append(page.locator("#review-item").get_attribute("data-key"))
        page.fill("#verdict-form input[name=by]", "rita")
        for sel, value in extra.items():
            page.fill(sel, value)
        _submit(page, button, f"/jobs/{jid}/review")
        assert page.locator("#review-item").get_attribute("data-key") not in keys  # the next item is shown
    assert len(set(keys)) == 3

    rep = _report(jid)
    assert rep["verdicts"] == before + 3 and "rita" in rep["reviewers"]
    n_shown = page.locator("#ag-n").inner_text()
    assert str(rep["overall"]["n"]) in n_shown

    # skip: the next item in the queue, nothing stored
    shown = page.locator("#review-item").get_attribute("data-key")
    with page.expect_navigation():
        page.click("#skip")
    assert page.locator("#review-item").get_attribute("data-key") != shown
    assert _report(jid)["verdicts"] == before + 3
    page.screenshot(path=str(screenshots / "review.png"), full_page=True)
    page.screenshot(path="/tmp/review_page.png", full_page=True)
    if rep["disagreements"]:
        assert page.locator("#disagreements").count() == 1
        assert "lists <b>numbers</b>" in page.locator("#disagreements").inner_text() or \
            keys[0] not in [d["item_key"] for d in rep["disagreements"]]
    assert page.watch.problems == []
