"""string_check and text_similarity, table-driven from OpenAI's documented semantics, plus template paths."""

import pytest

from rft.errors import RftError
from rft.graders import GraderContext, build, make_sample, validate

ITEM = {
    "answer": "Paris",
    "nested": {"city": {"name": "Paris"}, "list": ["a", {"b": "deep"}]},
    "tags": ["x", "y"],
    "number": 4,
    "obj": {"k": 1},
}


def sc(op, input_="{{sample.output_text}}", reference="{{item.answer}}", context=None):
    return build({"type": "string_check", "name": "t", "input": input_, "reference": reference, "operation": op},
                 context=context)


@pytest.mark.parametrize(
    "op, output, expected",
    [
        ("eq", "Paris", 1.0),
        ("eq", "paris", 0.0),  # case-sensitive
        ("eq", "Paris ", 0.0),  # exact: no trimming
        ("ne", "Paris", 0.0),
        ("ne", "London", 1.0),
        ("ne", "paris", 1.0),
        ("like", "The capital is Paris.", 1.0),  # input contains reference
        ("like", "the capital is paris.", 0.0),  # case-sensitive
        ("like", "Par", 0.0),  # reference longer than input: not contained
        ("ilike", "THE CAPITAL IS PARIS", 1.0),
        ("ilike", "the capital is paris.", 1.0),
        ("ilike", "London", 0.0),
    ],
)
def test_string_check_operations(op, output, expected):
    r = sc(op).grade(make_sample(output), ITEM)
    assert r.score == expected and r.error is None


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{{item.nested.city.name}}", "Paris"),
        ("{{ item.nested.list[1].b }}", "deep"),
        ("{{item.tags[0]}}-{{item.tags[1]}}", "x-y"),
        ("{{item.number}}", "4"),  # non-strings render as JSON
        ("{{item.obj}}", '{"k":1}'),
        ("{{sample.output_json.answer}}", "Paris"),
        ("{{sample.choices[0].message.content}}", '{"answer": "Paris"}'),
    ],
)
def test_nested_template_paths(template, expected):
    g = sc("eq", input_=template, reference=expected)
    r = g.grade(make_sample('{"answer": "Paris"}'), ITEM)
    assert r.score == 1.0, r


@pytest.mark.parametrize(
    "template, kind",
    [
        ("{{item.missing}}", "invalid_variable_error"),
        ("{{item.nested.city.zip}}", "invalid_variable_error"),
        ("{{item.tags[5]}}", "invalid_variable_error"),
        ("{{sample.output_json.answer}}", "sample_parse_error"),  # output is not JSON
    ],
)
def test_unresolvable_variables_are_unscored_not_zero(template, kind, fake_time):
    fake_time.step = 0.25  # every clock reading moves time on by 0.25 s
    r = sc("eq", input_=template, context=GraderContext(clock=fake_time.clock)).grade(make_sample("not json"), ITEM)
    assert r.score is None and r.error == kind
    assert r.latency_s == 0.25  # measured on the failure path too: one reading at the start, one at the end


def test_string_check_validation_errors():
    problems = validate({"type": "string_check", "input": "{{item.a}}", "reference": "{{foo.bar}}", "operation": "neq", "extra": 1})
    text = "\n".join(str(p) for p in problems)
    assert "operation must be one of eq, ne, like, ilike" in text
    assert "bad template variable" in text
    assert "unknown field 'extra'" in text
    with pytest.raises(RftError):
        build({"type": "string_check", "input": "x"})


# --- text_similarity ----------------------------------------------------------------------------------------

def ts(metric, **extra):
    return build({"type": "text_similarity", "name": "t", "input": "{{sample.output_text}}", "reference": "{{item.ref}}",
                  "evaluation_metric": metric, **extra})


METRICS = ["fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l", "cosine"]
REF = "the quick brown fox jumps over the lazy dog"


@pytest.mark.parametrize("metric", METRICS)
def test_identical_scores_one_and_unrelated_scores_low(metric):
    g = ts(metric)
    same = g.grade(make_sample(REF), {"ref": REF})
    close = g.grade(make_sample("the quick brown fox jumps over the lazy cat"), {"ref": REF})
    far = g.grade(make_sample("zebra quantum 42 teapot"), {"ref": REF})
    # METEOR's fragmentation penalty keeps even an identical sentence just under 1 (0.9993 here).
    assert same.score == pytest.approx(1.0, abs=1e-3 if metric == "meteor" else 1e-6)
    assert 0.0 <= far.score < close.score < 1.0 + 1e-9
    assert far.score < 0.45  # character-level fuzzy_match gives ~0.39 to unrelated English


@pytest.mark.parametrize("metric", METRICS)
def test_empty_strings(metric):
    g = ts(metric)
    assert g.grade(make_sample(""), {"ref": ""}).score == 1.0
    assert g.grade(make_sample(""), {"ref": "x"}).score == 0.0


def test_known_values_from_the_libraries():
    # fuzzy_match is rapidfuzz fuzz.ratio / 100: "abcd" vs "abce" -> 2*3/8 = 0.75
    assert ts("fuzzy_match").grade(make_sample("abcd"), {"ref": "abce"}).score == pytest.approx(0.75)
    # rouge_1 F1: 2 of 3 unigrams shared both ways -> P = R = 2/3
    assert ts("rouge_1").grade(make_sample("a b c"), {"ref": "a b d"}).score == pytest.approx(2 / 3)
    # rouge_2: bigrams {ab, bc} vs {ab, bd}: 1 of 2 -> 0.5
    assert ts("rouge_2").grade(make_sample("a b c"), {"ref": "a b d"}).score == pytest.approx(0.5)
    # rouge_l: LCS "a b" of 3 tokens each
    assert ts("rouge_l").grade(make_sample("a x b"), {"ref": "a b y"}).score == pytest.approx(2 / 3)


def test_bleu_matches_sacrebleu():
    import sacrebleu

    hyp, ref = "the cat sat on a mat today", "the cat sat on the mat"
    assert ts("bleu").grade(make_sample(hyp), {"ref": ref}).score == pytest.approx(sacrebleu.sentence_bleu(hyp, [ref]).score / 100)


def test_meteor_uses_stems_without_wordnet():
    from rft.graders.text_similarity import similarity, wordnet_available

    stemmed = similarity("meteor", "the cats jumped", "the cat jumps")
    assert stemmed > similarity("meteor", "the dogs walked", "the cat jumps")
    if not wordnet_available():  # offline: synonyms are not matched, exact+stem only
        assert similarity("meteor", "a big house", "a large house") < similarity("meteor", "a large house", "a large house")


def test_cosine_is_semantic():
    from rft.graders.text_similarity import similarity

    assert similarity("cosine", "A man is playing a guitar.", "Someone plays the guitar.") > \
        similarity("cosine", "A man is playing a guitar.", "The stock market fell sharply.") + 0.3


def test_pass_threshold_does_not_change_the_score():
    g = ts("fuzzy_match", pass_threshold=0.8)
    r = g.grade(make_sample("abcd"), {"ref": "abce"})
    assert r.score == pytest.approx(0.75) and g.passed(r.score) is False
    assert g.passed(0.8) is True


def test_text_similarity_validation():
    problems = validate({"type": "text_similarity", "input": "a", "reference": "b", "evaluation_metric": "rouge"})
    assert any("unknown evaluation_metric 'rouge'" in p.message for p in problems)
    problems = validate({"type": "text_similarity", "input": "a", "reference": "b", "evaluation_metric": "bleu", "pass_threshold": "hi"})
    assert any("pass_threshold must be a number" in p.message for p in problems)
    assert validate({"type": "text_similarity", "input": "a", "reference": "b", "evaluation_metric": "rouge_l"}) == []
