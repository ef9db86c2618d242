"""The python grader: validation before any run (S10), the score contract (S7), error kinds."""

import textwrap

import pytest

from rft.errors import RftError
from rft.graders import build, make_sample, validate


def src(code: str) -> str:
    return textwrap.dedent(code).lstrip()


def problems_of(source, **extra):
    return [p.message for p in validate({"type": "python", "source": source, **extra})]


# --- S10: rejected at validation time ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "source, fragment",
    [
        ("x" * (256 * 1024 + 1), "the limit is 262144 bytes"),
        ("def grade(sample, item):\n    return (\n", "syntax error at line"),
        ("def grade(sample, item)\n    return 1\n", "syntax error at line 1"),
        ("def score(sample, item):\n    return 1.0\n", "defines no top-level function grade"),
        ("class X:\n    def grade(self, sample, item):\n        return 1\n", "defines no top-level function grade"),
        ("def grade(sample):\n    return 1.0\n", "grade takes 1 positional argument"),
        ("def grade(a, b, c):\n    return 1.0\n", "requires 3 positional arguments"),
        ("def grade(a, b, *, strict):\n    return 1.0\n", "required keyword-only"),
        ("async def grade(sample, item):\n    return 1.0\n", "not async"),
        ("import definitely_not_a_module_xyz\ndef grade(s, i):\n    return 1.0\n", "module 'definitely_not_a_module_xyz' is not installed"),
        ("from .local import thing\ndef grade(s, i):\n    return 1.0\n", "relative imports"),
        (123, "must be a string"),
    ],
)
def test_validation_rejects(source, fragment):
    msgs = problems_of(source)
    assert any(fragment in m for m in msgs), msgs
    with pytest.raises(RftError):
        build({"type": "python", "source": source})


@pytest.mark.parametrize(
    "source",
    [
        "def grade(sample, item):\n    return 1.0\n",
        "def grade(sample, item, extra=None):\n    return 1.0\n",
        "def grade(*args):\n    return 1.0\n",
        "grade = lambda sample, item: 1.0\n",
        "import json, math\nfrom collections import Counter\ndef grade(sample, item):\n    return 1.0\n",
        "try:\n    import not_installed_xyz\nexcept ImportError:\n    pass\ndef grade(s, i):\n    return 0.0\n",
        "x" * 100 + "\n" if False else "def grade(s, i):\n    return 0.0\n" + "#" * (256 * 1024 - 40) + "\n",
    ],
)
def test_validation_accepts(source):
    assert len(source.encode()) <= 256 * 1024
    assert problems_of(source) == []


def test_image_tag_is_accepted_and_ignored():
    assert problems_of("def grade(s, i):\n    return 1.0\n", image_tag="2025-05-08") == []
    assert any("image_tag" in m for m in problems_of("def grade(s, i):\n    return 1.0\n", image_tag=5))


# --- S7: the score contract -------------------------------------------------------------------------------

CONTRACT = [
    ("return 0.25", 0.25, None),
    ("return 1", 1.0, None),  # an int is a number
    ("return 1e9", 1e9, None),  # python scores are not clipped (OpenAI gives them no range)
    ("return -3.5", -3.5, None),
    ("return 3.4e38", 3.4e38, None),  # the largest scores the float32 reward tensor still holds
    ("return -3.4028235e38", -3.4028235e38, None),
    ("return 1e39", None, "python_grader_runtime_error"),  # finite in Python, inf as float32: never a reward
    ("return -1e39", None, "python_grader_runtime_error"),
    ("return 3.4028236e38", None, "python_grader_runtime_error"),  # the first value that rounds to inf
    ("return 10 ** 400", None, "python_grader_runtime_error"),  # an int too large even for a float
    ("return None", None, "python_grader_runtime_error"),
    ("return float('nan')", None, "python_grader_runtime_error"),
    ("return float('inf')", None, "python_grader_runtime_error"),
    ("return '1.0'", None, "python_grader_runtime_error"),
    ("return True", None, "python_grader_runtime_error"),
    ("return [1.0]", None, "python_grader_runtime_error"),
    ("raise ValueError('bad sample')", None, "python_grader_runtime_error"),
    ("import sys; sys.exit(0)", None, "python_grader_runtime_error"),  # exit 0 is not a pass
    ("import os; os._exit(0)", None, "python_grader_server_error"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", None, "python_grader_server_error"),
]


@pytest.mark.parametrize("body, score, error", CONTRACT)
def test_score_contract(python_sandbox, body, score, error, grader_context):
    g = build({"type": "python", "source": f"def grade(sample, item):\n    {body}\n"}, context=grader_context)
    r = g.grade(make_sample("x"), {})
    assert (r.score, r.error) == (score, error), r.details
    assert r.latency_s > 0
    if error:
        assert r.details


def test_runtime_error_details_have_the_traceback_and_stderr(python_sandbox, grader_context):
    source = src("""
        import sys
        def helper(x):
            return 1 / x
        def grade(sample, item):
            print("debugging note", file=sys.stderr)
            return helper(item["zero"])
    """)
    r = build({"type": "python", "source": source}, context=grader_context).grade(make_sample("x"), {"zero": 0})
    assert r.error == "python_grader_runtime_error"
    assert "ZeroDivisionError" in r.details
    assert 'File "grader.py", line 3, in helper' in r.details
    assert "return 1 / x" in r.details  # source lines are shown
    assert "debugging note" in r.details
    assert "sandbox.py" not in r.details  # the sandbox's own frames are not shown


def test_module_that_fails_to_load(python_sandbox, grader_context):
    r = build({"type": "python", "source": "raise RuntimeError('at import')\ndef grade(s, i):\n    return 1.0\n"}, context=grader_context).grade(make_sample("x"), {})
    assert r.error == "python_grader_runtime_error" and "failed to load" in r.details and "at import" in r.details
    assert "sandbox.py" not in r.details and "grader.py\", line 1" in r.details


def test_sees_sample_and_item(python_sandbox, grader_context):
    source = src("""
        def grade(sample, item):
            assert sample["output_json"] == {"a": [1, 2]}
            assert sample["choices"][0]["message"]["content"] == sample["output_text"]
            return float(sample["output_json"]["a"][1] == item["want"])
    """)
    g = build({"type": "python", "source": source}, context=grader_context)
    assert g.grade(make_sample('{"a": [1, 2]}'), {"want": 2}).score == 1.0
    assert g.grade(make_sample('{"a": [1, 2]}'), {"want": 3}).score == 0.0


def test_state_does_not_leak_between_samples(python_sandbox, grader_context):
    source = src("""
        calls = []
        def grade(sample, item):
            calls.append(1)
            return float(len(calls))
    """)
    g = build({"type": "python", "source": source}, context=grader_context)
    assert [g.grade(make_sample("x"), {}).score for _ in range(4)] == [1.0] * 4


def test_module_top_level_runs_once_per_worker(python_sandbox, grader_context):
    # Imports at the top level are paid once per worker, not per sample.
    source = src("""
        import time
        LOADED_AT = time.time()
        def grade(sample, item):
            return LOADED_AT
    """)
    g = build({"type": "python", "source": source}, context=grader_context)
    values = {g.grade(make_sample("x"), {}).score for _ in range(6)}
    assert len(values) <= python_sandbox.size
