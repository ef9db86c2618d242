"""How the strategy table is shown: the terminal table at 80 columns (no line too wide, no number wrapped or cut,
columns dropped or merged by width, precision by the number of items) and the Pareto plot's label placement (no
two label boxes intersect, computed with the figure's renderer; moved labels get a leader line; the
recommendation is marked)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from rich.console import Console

from rft.cli.strategies_cmd import _sig, print_strategy_table, strategy_cells, strategy_table
from rft.strategies.report import draw_pareto, place_labels
from rft.strategies.stats import recommend


def _row(label, kind, acc, ci, d, dci, tok, s1k, usd, p50, p95, ub=False, train=None):
    r = {"label": label, "kind": kind, "status": "ok", "upper_bound": ub, "accuracy": acc, "accuracy_ci95": ci,
         "vs_base": {"mean": d, "ci95": dci, "method": "paired bootstrap"}, "tokens_per_request": tok,
         "tokens_per_1k": tok * 1000, "seconds_per_1k": s1k, "usd_per_1k": usd,
         "latency": {"p50_s": p50, "p95_s": p95, "n": 16}}
    if train:
        r["training"] = {"seconds": train, "tokens": 123456}
    return r


def _table(n_items=100):
    rows = [_row("base", "inference", 0.41, [0.318, 0.508], 0.0, [0.0, 0.0], 9.8, 61.2, 0.0017, 0.212, 0.388),
            _row("reasoning_32", "reasoning", 0.40, [0.309, 0.498], -0.01, [-0.08, 0.06], 41.3, 240.7, 0.0067, 0.93, 1.41),
            _row("reasoning_128", "reasoning", 0.43, [0.337, 0.528], 0.02, [-0.06, 0.10], 137.9, 801.5, 0.0223, 2.98, 4.87),
            _row("best_of_4/majority", "best_of_n", 0.45, [0.355, 0.548], 0.04, [-0.03, 0.11], 39.2, 118.3, 0.0033, 0.41, 0.77),
            _row("best_of_4/grader", "best_of_n", 0.63, [0.532, 0.718], 0.22, [0.13, 0.31], 39.2, 118.3, 0.0033, 0.43, 0.75, ub=True),
            _row("best_of_8/majority", "best_of_n", 0.46, [0.364, 0.558], 0.05, [-0.02, 0.12], 78.4, 201.0, 0.0056, 0.69, 1.12),
            _row("best_of_8/grader", "best_of_n", 0.74, [0.647, 0.816], 0.33, [0.24, 0.42], 78.4, 201.0, 0.0056, 0.70, 1.15, ub=True),
            _row("sft", "trained", 0.52, [0.423, 0.615], 0.11, [0.02, 0.20], 8.1, 55.0, 0.0015, 0.19, 0.35, train=412.3),
            _row("dpo", "trained", 0.47, [0.374, 0.568], 0.06, [-0.02, 0.14], 9.2, 58.9, 0.0016, 0.20, 0.37, train=1290.4),
            _row("grpo", "trained", 0.55, [0.452, 0.644], 0.14, [0.05, 0.23], 9.0, 57.7, 0.0016, 0.20, 0.36, train=2840.9),
            {"label": "failed_row", "kind": "trained", "status": "failed", "reason": "boom"}]
    rows[0]["vs_base"]["method"] = "the base itself"
    t = {"id": "strat-test", "job": "examples/quickstart.yaml", "n_items": n_items, "rows": rows}
    t["recommendation"] = recommend([r for r in rows if r["status"] == "ok"])
    return t


def _render(res, width):
    con = Console(width=width, file=StringIO(), color_system=None)
    print_strategy_table(res, title=f"strategies for {res['job']} ({res['n_items']} items)", console=con)
    return con.file.getvalue().splitlines()


# ------------------------------------------------------------------------------------------- terminal table
def test_table_at_80_columns_fits_and_keeps_every_number_whole():
    res = _table()
    lines = _render(res, 80)
    assert max(len(x) for x in lines) <= 80, "\n".join(lines)
    cells = strategy_cells(res)
    by_label = {r["label"]: c for r, c in zip([r for r in res["rows"] if r["status"] == "ok"], cells)}
    for label, c in by_label.items():
        # the row's own line holds its label and every number shown at this width, whole
        line = next(x for x in lines if x.startswith(c["strategy"] + " "))
        for key in ("acc", "vs_base", "train_s", "tok_req", "usd_1k", "lat"):
            assert c[key] in line, (label, key, c[key], line)
    # hand-checked cells: percent without decimals for 100 items; CI bounds signed only when negative
    assert by_label["sft"]["acc"] == "52 [42, 62]" and by_label["sft"]["vs_base"] == "+11 [2, 20]"
    assert by_label["reasoning_32"]["vs_base"] == "-1 [-8, 6]" and by_label["base"]["vs_base"] == "(base)"
    assert by_label["best_of_8/grader"]["strategy"] == "best_of_8/grader*"
    assert by_label["reasoning_128"]["usd_1k"] == "0.022" and by_label["base"]["lat"] == "212/388"
    assert by_label["grpo"]["train_s"] == "2841" and by_label["base"]["train_s"] == "-"
    text = "\n".join(lines)
    assert "* upper bound, not deployable" in text
    assert "not shown at this width: s per 1k req" in text  # merged p50/p95, dropped s/1k; said so
    assert "failed_row" not in text  # failed rows are printed below by the command, not in the table


def test_wide_console_shows_every_column_and_narrow_drops_columns_not_digits():
    res = _table()
    wide = "\n".join(_render(res, 200))
    assert "not shown" not in wide and "s per" in wide and "p95" in wide
    _, left_out = strategy_table(res, 200)
    assert left_out == []
    narrow = _render(res, 60)
    assert max(len(x) for x in narrow) <= 60
    for c in strategy_cells(res):
        assert any(c["acc"] in x for x in narrow) and any(c["usd_1k"] in x for x in narrow)
    _, left_out = strategy_table(res, 60)
    assert "train s" in left_out and "p95 ms" in left_out


def test_a_column_empty_in_every_row_takes_no_room():
    res = _table()
    res["rows"] = [r for r in res["rows"] if r["kind"] != "trained"]  # no training: "train s" is "-" everywhere
    lines = _render(res, 80)
    text = "\n".join(lines)
    assert max(len(x) for x in lines) <= 80 and "train" not in text  # neither shown nor reported as left out
    assert "not shown at this width: s per 1k req (see" in text and "tokens" in text and "p50/p95" in text
    assert "not shown" not in "\n".join(_render(res, 90))  # the 9 columns freed make the full layout fit at 90


def test_precision_follows_the_number_of_items():
    res = _table(n_items=2000)
    c = strategy_cells(res)
    assert c[0]["acc"] == "41.0 [31.8, 50.8]" and c[1]["vs_base"] == "-1.0 [-8.0, 6.0]"
    assert [_sig(x) for x in (0.000123, 0.0223, 1.234, 12.34, 0.0, None)] == \
        ["0.00012", "0.022", "1.2", "12", "0", "-"]


def test_the_recommended_row_is_bold():
    res = _table()
    t, _ = strategy_table(res, 80)
    assert res["recommendation"]["label"] == "sft"
    styles = [row.style for row in t.rows]
    assert styles[7] == "bold" and styles.count("bold") == 1


# ------------------------------------------------------------------------------------------- Pareto plot
def test_place_labels_hand_computed():
    # three 10-high boxes on one spot; the lowest point's label stays, the next go up by 12 (10 + 2 * gap 1),
    # then down... step 2: second label: first free shift is +12; third: -12 (|-12| < +24)
    boxes = [(0, 0, 20, 10)] * 3
    assert place_labels(boxes, [0.0, 1.0, 2.0], step=2.0, gap=1.0) == [0.0, 12.0, -12.0]
    # inside bounds when it can: a label may not go below y=0, so the third goes up instead
    assert place_labels(boxes, [0.0, 1.0, 2.0], step=2.0, gap=1.0, bounds=(-5, -1, 100, 100)) == [0.0, 12.0, 24.0]
    # an obstacle (a marker at y 5..8) pushes a label off it: free from +8 up or -5 down; -5 is nearer
    assert place_labels([(0, 0, 20, 10)], [0.0], obstacles=[(5, 5, 8, 8)], step=1.0, gap=0.0) == [-5.0]


def test_pareto_labels_of_near_identical_points_do_not_intersect(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    rows = [_row(f"strategy_{i}", "trained" if i % 2 else "inference", 0.5 + 0.001 * i, [0.4, 0.6], 0.0,
                 [0.0, 0.0], 10.0, 60.0, 0.002 + 1e-6 * i, 0.2, 0.3, ub=(i == 3)) for i in range(7)]
    rows.append(_row("far", "inference", 0.99, [0.95, 1.0], 0.0, [0.0, 0.0], 10.0, 60.0, 0.004, 0.2, 0.3))
    table = {"job": "synthetic", "n_items": 50, "rows": rows, "recommendation": recommend(rows)}
    assert table["recommendation"]["label"] == "far"
    fig, labels = draw_pareto(table)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = [Text.get_window_extent(a, renderer) for a in labels]
        assert [a.get_text() for a in labels][:4] == ["strategy_0", "strategy_1", "strategy_2",
                                                     "strategy_3 (upper bound)"]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                assert not boxes[i].overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
        # a label moved off its place (4 points above its point) has a leader line, an unmoved one has none;
        # seven labels on one spot cannot all stay
        moved = [abs(a.xyann[1] - 4) * fig.dpi / 72 > 1.0 for a in labels]
        assert [a.arrow_patch is not None for a in labels] == moved and sum(moved[:7]) >= 6
        # the recommendation: its label is bold and a green ring is drawn around its point
        far = next(a for a in labels if a.get_text() == "far")
        assert far.get_fontweight() == "bold"
        rings = [c for c in fig.axes[0].collections
                 if hasattr(c, "get_sizes") and len(c.get_sizes()) and c.get_sizes()[0] == 380]
        assert len(rings) == 1 and tuple(rings[0].get_offsets()[0]) == pytest.approx((0.004, 0.99))
    finally:
        plt.close(fig)


def test_pareto_plot_writes_a_png(tmp_path):
    from rft.strategies.report import pareto_plot

    p = pareto_plot(_table(), tmp_path / "pareto.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


def test_rft_strategies_prints_the_table_within_80_columns(tmp_path, tiny_model_dir):
    from clitools import run_rft
    from jobspecs import tiny_job_file

    job = tiny_job_file(tmp_path, tiny_model_dir, learnability={"enabled": False})
    r = run_rft("strategies", str(job), "--only", "best_of_n", "--n", "2", "--latency-items", "1",
                "-o", str(tmp_path / "t"), env={"COLUMNS": "80"}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert max(len(x) for x in lines) <= 80, r.stdout
    table = json.loads((tmp_path / "t" / "table.json").read_text())
    for row in table["rows"]:
        name = row["label"] + ("*" if row["upper_bound"] else "")
        line = next(x for x in lines if x.startswith(name + " "))
        lo, hi = row["accuracy_ci95"]
        assert f"{row['accuracy'] * 100:.0f} [{lo * 100:.0f}, {hi * 100:.0f}]" in line, line
    assert any(x.startswith("* upper bound") for x in lines) and any(x.startswith("recommended: ") for x in lines)
