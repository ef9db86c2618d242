"""Inference-time strategies: spend more compute per request instead of (or on top of) training.

What
----
Strategies are functions registered by name (`@register_strategy`), each turning a batch of chat prompts into
one answer per prompt and reporting the tokens it generated for it (every sample and every phase: that is
the request's inference cost):

- `greedy`: one greedy completion (temperature 0). The base row of `rft strategies`.
- `best_of_n` (`n`, `selector`, `temperature`): n sampled completions per prompt (seeded), then a selector
  (`@register_selector`) picks one:
  * `majority`: majority vote over the extracted answers (`rft.extraction`, the job's pattern; with no pattern
    the whole completion, whitespace-stripped, is the answer). An answer that does not extract (no match: "")
    does not vote. Ties go to the answer whose first vote came from the earliest sample (samples are drawn in
    a fixed, seeded order, so the rule is deterministic); the completion returned is that earliest sample.
    When no sample has an answer, sample 0 is returned (and it grades as the wrong answer it is).
    Deployable: it reads no reference.
  * `grader`: grades every sample with the job's grader and returns the highest score (ties: the earliest
    sample; unscored samples rank below any score; all unscored: sample 0). The grader reads the reference
    answer, so this is an UPPER BOUND (an oracle), not something a deployment can do; `uses_reference` says
    so and every table and report labels it. It needs the rows, so the server and `rft batch` refuse it.
- `reasoning` (`budget`, `answer_tokens`): two greedy generations. Phase 1 (think): the prompt's last user
  message gets `THINK_INSTRUCTION` appended and generation is capped at `budget` tokens. Phase 2 (answer): the
  original messages, then the thinking as an assistant turn, then a user turn `ANSWER_INSTRUCTION`; capped at
  `answer_tokens` (default: the request's max_new_tokens). The phase-2 text is the answer that is extracted
  and graded; tokens of both phases count as its cost.

A strategy is written as a spec string: `greedy`, `best_of_n:n=8,selector=majority`,
`reasoning:budget=64` (`parse_strategy`, errors list the valid names and options). The same strings work in
`rft eval --strategy`, a batch/server request's `"rft": {"strategy": "..."}` extension (rft.openai_chat), and
the `rft strategies` table (rft.strategies).

Simplified: strategies run on whole batches with the engine's own batching (the n samples of a prompt share
its prefill); the reasoning strategy's thinking is greedy; majority vote compares extracted strings exactly
(after stripping whitespace), so "56" and "56.0" are different answers.

How to run: `rft eval smollm2-135m-instruct --data builtin:arithmetic --grader g.json --extract '-?\\d+'
--strategy best_of_n:n=4,selector=majority`; tests: `tests/test_inference_strategies.py`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

from rft.config import ExtractionConfig
from rft.engine import SamplingParams
from rft.errors import RftError, did_you_mean
from rft.types import Completion

if TYPE_CHECKING:
    from rft.graders import Grader

THINK_INSTRUCTION = ("Think step by step about how to solve this. Write out your reasoning only; "
                     "you will be asked for the final answer afterwards.")
ANSWER_INSTRUCTION = "Now give your final answer only."
MAX_N = 128  # samples per request, as OpenAI's n
MAX_BUDGET = 32768


# --------------------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class StrategySpec:
    """A strategy and its options (see the module docstring for what each one means)."""

    name: str = "greedy"
    n: int = 1  # best_of_n: samples per request
    selector: str | None = None  # best_of_n: a registered selector
    temperature: float = 1.0  # best_of_n: sampling temperature
    budget: int | None = None  # reasoning: thinking tokens at most
    answer_tokens: int | None = None  # reasoning: answer tokens at most (None: the request's max_new_tokens)

    @property
    def label(self) -> str:
        if self.name == "best_of_n":
            return f"best_of_{self.n}/{self.selector}"
        if self.name == "reasoning":
            return f"reasoning_{self.budget}"
        return self.name

    @property
    def uses_reference(self) -> bool:
        """True when the strategy reads the reference answer (an upper bound, not deployable)."""
        return self.selector is not None and SELECTORS[self.selector].uses_reference

    def text(self) -> str:
        """The spec string that parses back to this spec."""
        if self.name == "best_of_n":
            t = "" if self.temperature == 1.0 else f",temperature={self.temperature:g}"
            return f"best_of_n:n={self.n},selector={self.selector}{t}"
        if self.name == "reasoning":
            a = "" if self.answer_tokens is None else f",answer_tokens={self.answer_tokens}"
            return f"reasoning:budget={self.budget}{a}"
        return self.name


_OPTIONS = {"greedy": {}, "best_of_n": {"n": int, "selector": str, "temperature": float},
            "reasoning": {"budget": int, "answer_tokens": int}}


def parse_strategy(text: str | StrategySpec | None, *, param: str = "--strategy") -> StrategySpec:
    """`greedy` | `best_of_n:n=N,selector=majority|grader[,temperature=T]` | `reasoning:budget=B[,answer_tokens=A]`."""
    if isinstance(text, StrategySpec):
        return check_spec(text, param=param)
    if text is None or not str(text).strip():
        return StrategySpec()
    name, _, opts = str(text).strip().partition(":")
    name = name.strip()
    if name not in STRATEGIES:
        raise RftError(f"{param}: unknown strategy '{name[:60]}'{did_you_mean(name, sorted(STRATEGIES))}",
                       hint=f"strategies: {', '.join(sorted(STRATEGIES))}; e.g. best_of_n:n=4,selector=majority, "
                            "reasoning:budget=64")
    allowed = _OPTIONS.get(name, {})
    kw: dict[str, Any] = {"name": name}
    for part in filter(None, (p.strip() for p in opts.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in allowed:
            opts_text = ", ".join(f"{k}=..." for k in allowed) or "none"
            raise RftError(f"{param}: '{part[:60]}' is not an option of strategy {name}{did_you_mean(key, list(allowed))}",
                           hint=f"options of {name}: {opts_text}")
        try:
            kw[key] = allowed[key](value.strip())
        except ValueError:
            raise RftError(f"{param}: {name} option {key} must be a {allowed[key].__name__}, got '{value[:40]}'") from None
    return check_spec(StrategySpec(**kw), param=param)


def check_spec(spec: StrategySpec, *, param: str = "--strategy") -> StrategySpec:
    """The spec with its defaults filled in, or an RftError naming what is out of range."""
    if spec.name not in STRATEGIES:
        raise RftError(f"{param}: unknown strategy '{spec.name}'{did_you_mean(spec.name, sorted(STRATEGIES))}")
    if spec.name == "best_of_n":
        if not 1 <= spec.n <= MAX_N:
            raise RftError(f"{param}: best_of_n needs 1 <= n <= {MAX_N}, got {spec.n}")
        if spec.selector is None:
            raise RftError(f"{param}: best_of_n needs a selector ({', '.join(sorted(SELECTORS))}), "
                           "e.g. best_of_n:n=4,selector=majority")
        if spec.selector not in SELECTORS:
            raise RftError(f"{param}: unknown selector '{spec.selector}'{did_you_mean(spec.selector, sorted(SELECTORS))}",
                           hint=f"selectors: {', '.join(sorted(SELECTORS))}")
        if not 0 < spec.temperature <= 2:
            raise RftError(f"{param}: best_of_n temperature must be in (0, 2], got {spec.temperature}")
    if spec.name == "reasoning":
        if spec.budget is None or not 1 <= spec.budget <= MAX_BUDGET:
            raise RftError(f"{param}: reasoning needs a thinking budget 1 <= budget <= {MAX_BUDGET}, "
                           f"e.g. reasoning:budget=64 (got {spec.budget})")
        if spec.answer_tokens is not None and not 1 <= spec.answer_tokens <= MAX_BUDGET:
            raise RftError(f"{param}: reasoning answer_tokens must be in [1, {MAX_BUDGET}], got {spec.answer_tokens}")
    return spec


# --------------------------------------------------------------------------------------------- outputs
@dataclass(frozen=True)
class StrategyOutput:
    """One request's answer: `completion` is what is returned and graded; `tokens` every token generated for it."""

    completion: Completion
    tokens: int
    phase_tokens: dict[str, int] = field(default_factory=dict)  # think/answer or samples
    candidates: tuple[str, ...] = ()  # best_of_n: every sample's text, in sample order
    answers: tuple[str | None, ...] = ()  # best_of_n: what the selector compared (extracted answers / scores)
    selected: int | None = None  # best_of_n: index of the returned sample
    selection: dict[str, Any] = field(default_factory=dict)  # the selector's account (votes, scores, rule)
    thinking: str | None = None  # reasoning: the phase-1 text

    def record(self) -> dict[str, Any]:
        """JSON-ready details for an eval item or a response's `rft` field."""
        d: dict[str, Any] = {"tokens": self.tokens, "phase_tokens": dict(self.phase_tokens)}
        if self.candidates:
            d |= {"candidates": list(self.candidates), "selected": self.selected, "selection": self.selection}
        if self.thinking is not None:
            d["thinking"] = self.thinking
        return d


@dataclass
class StrategyContext:
    """What a strategy may use besides the engine: decoding caps, the answer extraction and, for selectors that
    read the reference, the grader and the rows (prompt i's row is rows[i])."""

    max_new_tokens: int = 64
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    seed: int | None = 0
    constraint: Any = None  # a decoding constraint (response_format) for every generation that answers
    grader: Grader | None = None
    rows: Sequence[dict] | None = None
    tools: Sequence[list | None] | None = None


Strategy = Callable[[Any, Sequence[list[dict]], StrategySpec, StrategyContext], list[StrategyOutput]]
STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str):
    def deco(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn
    return deco


def _generate(engine, prompts, params: SamplingParams, ctx: StrategyContext):
    if ctx.tools and any(ctx.tools):  # only then: engines without tool support keep working
        return engine.generate(list(prompts), params, tools=list(ctx.tools))
    return engine.generate(list(prompts), params)


@register_strategy("greedy")
def greedy(engine, prompts, spec: StrategySpec, ctx: StrategyContext) -> list[StrategyOutput]:
    outs = _generate(engine, prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=ctx.max_new_tokens,
                                                     constraint=ctx.constraint), ctx)
    return [StrategyOutput(completion=o[0], tokens=len(o[0].token_ids), phase_tokens={"answer": len(o[0].token_ids)})
            for o in outs]


@register_strategy("best_of_n")
def best_of_n(engine, prompts, spec: StrategySpec, ctx: StrategyContext) -> list[StrategyOutput]:
    sel = SELECTORS[spec.selector]
    if sel.uses_reference and (ctx.grader is None or ctx.rows is None):
        raise RftError(f"selector '{spec.selector}' grades the samples against the reference answer, which only an "
                       "evaluation has", hint="use selector=majority to serve requests")
    outs = _generate(engine, prompts, SamplingParams(n=spec.n, temperature=spec.temperature,
                                                     max_new_tokens=ctx.max_new_tokens, seed=ctx.seed,
                                                     constraint=ctx.constraint), ctx)
    results = []
    for i, comps in enumerate(outs):
        comps = list(comps)
        row = ctx.rows[i] if ctx.rows is not None else None
        idx, answers, info = sel.fn(comps, ctx, row)
        tokens = sum(len(c.token_ids) for c in comps)
        results.append(StrategyOutput(completion=comps[idx], tokens=tokens, phase_tokens={"samples": tokens},
                                      candidates=tuple(c.text for c in comps), answers=tuple(answers), selected=idx,
                                      selection=info))
    return results


def think_messages(messages: list[dict]) -> list[dict]:
    """Phase 1 of `reasoning`: the last user message with THINK_INSTRUCTION appended."""
    last = dict(messages[-1])
    last["content"] = f"{last.get('content', '')}\n\n{THINK_INSTRUCTION}"
    return [*messages[:-1], last]


def answer_messages(messages: list[dict], thinking: str) -> list[dict]:
    """Phase 2 of `reasoning`: the original messages, the thinking as the assistant's turn, ANSWER_INSTRUCTION."""
    return [*messages, {"role": "assistant", "content": thinking}, {"role": "user", "content": ANSWER_INSTRUCTION}]


@register_strategy("reasoning")
def reasoning(engine, prompts, spec: StrategySpec, ctx: StrategyContext) -> list[StrategyOutput]:
    ctx1 = replace(ctx, tools=None)  # the thinking phase calls no tools
    think = _generate(engine, [think_messages(p) for p in prompts],
                      SamplingParams(n=1, temperature=0.0, max_new_tokens=int(spec.budget)), ctx1)
    thoughts = [o[0] for o in think]
    answer_cap = spec.answer_tokens or ctx.max_new_tokens
    answers = _generate(engine, [answer_messages(p, t.text) for p, t in zip(prompts, thoughts)],
                        SamplingParams(n=1, temperature=0.0, max_new_tokens=answer_cap, constraint=ctx.constraint), ctx)
    out = []
    for t, a in zip(thoughts, answers):
        nt, na = len(t.token_ids), len(a[0].token_ids)
        out.append(StrategyOutput(completion=a[0], tokens=nt + na, phase_tokens={"think": nt, "answer": na},
                                  thinking=t.text))
    return out


def run_strategy(engine, prompts: Sequence[list[dict]], spec: StrategySpec | str | None,
                 ctx: StrategyContext | None = None) -> list[StrategyOutput]:
    """One StrategyOutput per prompt (see the module docstring)."""
    spec = parse_strategy(spec)
    return STRATEGIES[spec.name](engine, prompts, spec, ctx or StrategyContext())


# --------------------------------------------------------------------------------------------- selectors
Selection = tuple[int, list, dict]  # (index of the chosen sample, what was compared per sample, account)


@dataclass(frozen=True)
class Selector:
    fn: Callable[[list[Completion], StrategyContext, dict | None], Selection]
    uses_reference: bool


SELECTORS: dict[str, Selector] = {}


def register_selector(name: str, *, uses_reference: bool):
    def deco(fn):
        SELECTORS[name] = Selector(fn, uses_reference)
        return fn
    return deco


def answer_of(text: str, extraction: ExtractionConfig) -> str | None:
    """The answer a sample votes for: its extracted answer (stripped), or the whole stripped text when there is
    no extraction pattern; None when there is none (no match, or an empty text)."""
    from rft.extraction import extract

    a = extract(text, extraction) if extraction.pattern else text
    a = (a or "").strip()
    return a or None


def majority_vote(answers: Sequence[str | None]) -> tuple[int, str | None, dict[str, int]]:
    """(index of the sample returned, the winning answer or None, votes per answer).

    None answers do not vote. The most votes wins; among tied answers, the one whose first vote came earliest;
    the sample returned is the first one with the winning answer. No votes at all: (0, None, {})."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0, None, {}
    first = {}
    for i, a in enumerate(answers):
        if a is not None and a not in first:
            first[a] = i
    best = max(votes.values())
    winner = min((a for a, v in votes.items() if v == best), key=lambda a: first[a])
    return first[winner], winner, dict(votes)


@register_selector("majority", uses_reference=False)
def _majority(comps: list[Completion], ctx: StrategyContext, row: dict | None) -> Selection:
    answers = [answer_of(c.text, ctx.extraction) for c in comps]
    idx, winner, votes = majority_vote(answers)
    rule = "no sample had an answer: sample 0" if winner is None else "most votes; ties: earliest first vote"
    return idx, answers, {"selector": "majority", "winner": winner, "votes": votes, "rule": rule}


def best_score(scores: Sequence[float | None]) -> int:
    """Index of the highest score; ties: the earliest; None ranks below any score; all None: 0."""
    best_i, best = 0, None
    for i, s in enumerate(scores):
        if s is not None and (best is None or s > best):
            best_i, best = i, s
    return best_i


@register_selector("grader", uses_reference=True)
def _grader(comps: list[Completion], ctx: StrategyContext, row: dict | None) -> Selection:
    from rft.extraction import sample_from_text
    from rft.graders import grade_many

    samples = [sample_from_text(c.text, ctx.extraction, finish_reason=c.finish_reason) for c in comps]
    grades = grade_many(ctx.grader, samples, [row] * len(comps))
    scores = [g.score for g in grades]
    idx = best_score(scores)
    return idx, scores, {"selector": "grader", "scores": scores, "upper_bound": True,
                         "rule": "highest grader score (reads the reference: an upper bound); ties: earliest sample"}
