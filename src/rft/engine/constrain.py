"""Grammar-constrained decoding: OpenAI's `response_format` (and tool-call formats) as a logits mask.

    c = from_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": {...}}})
    params = SamplingParams(..., constraint=c)     # every engine path (generate, stream) then honours it
    guide = Guide(tokenizer, vocab_size)           # once per engine: the tokenizer's token table for the matcher
    ms = guide.matchers(c, count)                  # one matcher (parser state) per sequence
    allowed = guide.allowed(ms_of_rows, V)         # [b, V] bool: the tokens each row's grammar permits next
    guide.advance(m, tok)                          # after the draw

`Constraint` is a small frozen value (the grammar as text), so `SamplingParams` stays hashable and requests with
the same constraint still batch together. The sampler (engine/sampling.py) draws from the masked logits but
reports log p of the drawn token under the *unmasked* temperature-scaled distribution, as it does for top-k and
top-p truncation: that is the quantity the GRPO loss recomputes from the model, so old and new policy agree
and the update teaches the model itself to produce the format. A sequence whose grammar is complete can only
draw EOS; a completion cut by `max_new_tokens` or a stop string can still be unfinished JSON (graders then see
`sample_parse_error`).

Which library, and why: llguidance (guidance-ai, MIT, Rust with Python bindings, no runtime dependencies,
~8 MB installed). Compared on this CPU with SmolLM2's 49k-vocabulary fast tokenizer (bench/constrained_mask.py,
median of 5 runs, 40-token answer): llguidance 0.10 ms/token for mask + apply + advance (0.3 s one-off to
read the tokenizer, under 1 ms per grammar); xgrammar 0.14 ms/token, but its wheel requires triton
(~1 GB) and apache-tvm-ffi even on a CPU-only install, and it accepted `not`, `uniqueItems` and `if/then`
without enforcing them; outlines-core 0.37 ms/token, and it has no offline constructor from an in-memory
Hugging Face tokenizer (its `Vocabulary.from_pretrained` downloads from the hub; we had to rebuild the byte
vocabulary by hand) and compiles schemas to a regex (no recursive `$ref`). JSON Schema coverage on a 22-case
probe: llguidance 19 (refuses `not`, `uniqueItems`, `if/then` with an error naming them), xgrammar 22
"compiled" (3 silently unenforced), outlines-core 19. All three are maintained (monthly releases); llguidance
also takes Lark grammars (used for the tool-call format) and rolls back tokens.

Simplified: JSON is generated in one canonical layout (`", "` and `": "` separators, no other whitespace),
which keeps random or weak models from padding with whitespace until `max_new_tokens`; `strict: false` is
enforced like `strict: true`; schema keywords llguidance does not implement are a user error, never ignored.
Run its tests: `.venv/bin/python -m pytest -q tests/test_engine_constrained.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rft.errors import Problem, RftError

# The canonical JSON layout generated under a constraint (see the module docstring).
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")


@dataclass(frozen=True)
class Constraint:
    """What a sequence must match. `grammar` is an llguidance grammar (its JSON text); `kind` says where it came
    from ("json_schema", "json_object" or "tool_call"); `name` is the schema's name, for messages."""

    kind: str
    grammar: str
    name: str = ""


def _err(message: str, field: str) -> RftError:
    """An RftError that names the field: "field 'response_format.type': ..." (and carries it as a Problem)."""
    return RftError(str(Problem(message, field=field)), problems=[])


def _llguidance():
    try:
        import llguidance
    except ImportError:  # pragma: no cover - a dependency of rft; a broken install says so plainly
        raise RftError("constrained decoding needs the 'llguidance' package: pip install llguidance") from None
    return llguidance


def response_format_problems(rf: Any, where: str = "response_format") -> list[tuple[str, str]]:
    """(field, message) for every shape problem of an OpenAI `response_format` (no grammar compilation)."""
    if rf is None:
        return []
    if not isinstance(rf, dict):
        return [(where, f"'{where}' must be an object like {{\"type\": \"json_schema\", \"json_schema\": {{...}}}}")]
    t = rf.get("type")
    if t not in RESPONSE_FORMAT_TYPES:
        return [(f"{where}.type", f"'{where}.type' must be one of {', '.join(RESPONSE_FORMAT_TYPES)}, got {str(t)[:60]!r}")]
    extra = sorted(str(k) for k in rf if k not in ("type", "json_schema"))
    out = [(f"{where}.{k}", f"unknown field '{where}.{k}'") for k in extra[:1]]
    if t == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict):
            return out + [(f"{where}.json_schema", f"'{where}.json_schema' must be an object with 'name' and 'schema'")]
        name = js.get("name")
        if not isinstance(name, str) or not name:
            out.append((f"{where}.json_schema.name", f"'{where}.json_schema.name' must be a non-empty string"))
        if "schema" in js and not isinstance(js["schema"], dict):
            out.append((f"{where}.json_schema.schema", f"'{where}.json_schema.schema' must be a JSON Schema object"))
        if "strict" in js and js["strict"] is not None and not isinstance(js["strict"], bool):
            out.append((f"{where}.json_schema.strict", f"'{where}.json_schema.strict' must be a boolean"))
        bad = sorted(str(k) for k in js if k not in ("name", "schema", "strict", "description"))
        out += [(f"{where}.json_schema.{k}", f"unknown field '{where}.json_schema.{k}'") for k in bad[:1]]
    elif "json_schema" in rf:
        out.append((f"{where}.json_schema", f"'{where}.json_schema' is only allowed with type json_schema"))
    return out


def from_response_format(rf: dict | None, where: str = "response_format") -> Constraint | None:
    """The constraint for an OpenAI `response_format` (None for none or `{"type": "text"}`). Raises RftError,
    with `field` set, for a malformed value or a schema the decoder cannot enforce."""
    problems = response_format_problems(rf, where)
    if problems:
        field, msg = problems[0]
        raise _err(msg, field)
    if rf is None or rf["type"] == "text":
        return None
    if rf["type"] == "json_object":
        return _compile_schema(json.dumps({"type": "object"}), "json_object", "", f"{where}")
    js = rf["json_schema"]
    schema = js.get("schema") or {}
    try:
        text = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise _err(f"'{where}.json_schema.schema' is not JSON: {e}", f"{where}.json_schema.schema") from None
    return _compile_schema(text, "json_schema", js.get("name") or "", f"{where}.json_schema.schema")


@lru_cache(maxsize=128)
def _compile_schema(schema_text: str, kind: str, name: str, where: str) -> Constraint:
    llg = _llguidance()
    try:
        grammar = llg.LLMatcher.grammar_from_json_schema(schema_text, defaults=dict(JSON_LAYOUT))
    except (ValueError, TypeError) as e:
        raise _err(f"not a usable JSON Schema: {e}", where) from None
    return Constraint(kind=kind, grammar=_checked(grammar, where), name=name)


def from_lark(lark: str, kind: str, where: str = "grammar") -> Constraint:
    """A constraint from a Lark grammar (llguidance's dialect; `%json {...}` embeds a JSON Schema)."""
    llg = _llguidance()
    return Constraint(kind=kind, grammar=_checked(llg.LLMatcher.grammar_from_lark(lark), where))


def _checked(grammar: str, where: str) -> str:
    is_error, messages = _llguidance().LLMatcher.validate_grammar_with_warnings(grammar, None)
    if is_error:
        raise _err(f"cannot be enforced while decoding: {'; '.join(messages)[:500]}", where)
    if messages:  # warnings are unenforced keywords: refuse rather than promise a format we would not keep
        raise _err(f"uses JSON Schema features the constrained decoder does not enforce: "
                   f"{'; '.join(messages)[:500]}", where)
    return grammar


class Guide:
    """The per-engine half: the tokenizer's token table (built once, ~0.3 s for a 49k vocabulary), a matcher
    per sequence, and the mask as a [b, V] bool tensor."""

    def __init__(self, tokenizer, vocab_size: int | None = None):
        import torch

        llg = _llguidance()
        import llguidance.hf

        n_vocab = max(len(tokenizer), int(vocab_size or 0))
        try:
            self.lltok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=n_vocab)
        except (ValueError, TypeError):  # a slow tokenizer, or a decoder llguidance cannot read (e.g. Fuse)
            self.lltok = llg.LLTokenizer(llguidance.TokenizerWrapper(_TokenTable(tokenizer, n_vocab)), n_vocab=n_vocab)
        self.n_vocab = self.lltok.vocab_size
        self.words = (self.n_vocab + 31) // 32
        self.eos = int(tokenizer.eos_token_id) if tokenizer.eos_token_id is not None else None
        self.executor = llg.LLExecutor(num_threads=max(1, min(4, torch.get_num_threads())))
        self.bits = (torch.ones((), dtype=torch.int64) << torch.arange(32)).to(torch.int32)  # [32] (bit 31 wraps negative)
        self._templates: dict[str, Any] = {}  # grammar -> a fresh matcher to copy (parsing the grammar once)

    def matchers(self, c: Constraint, count: int) -> list:
        """`count` independent matchers for `c` at its start state."""
        t = self._templates.get(c.grammar)
        if t is None:
            t = _llguidance().LLMatcher(self.lltok, c.grammar, log_level=0)
            if t.is_error():
                raise RftError(f"the {c.kind} constraint could not be loaded: {t.get_error()[:300]}")
            if len(self._templates) > 32:
                self._templates.clear()
            self._templates[c.grammar] = t
        return [t.deep_copy() for _ in range(count)]

    def allowed(self, matchers: list, V: int, device=None):
        """[len(matchers), V] bool: the tokens each matcher allows next. A matcher that allows nothing (it is
        stopped or broken) allows EOS, so its row can still end."""
        import torch
        import llguidance.torch as lt

        b = len(matchers)
        mask = torch.zeros((b, self.words), dtype=torch.int32)  # [b, W] one bit per token
        if b == 1:
            lt.fill_next_token_bitmask(matchers[0], mask, 0)
        else:
            lt.fill_next_token_bitmask_par(self.executor, [(m, i) for i, m in enumerate(matchers)], mask)
        allowed = ((mask[:, :, None] & self.bits) != 0).reshape(b, -1)  # [b, W*32]
        if allowed.shape[1] >= V:
            allowed = allowed[:, :V]  # [b, V]
        else:  # logits wider than the tokenizer: the extra ids are never allowed
            allowed = torch.cat([allowed, torch.zeros((b, V - allowed.shape[1]), dtype=torch.bool)], 1)
        empty = ~allowed.any(-1)  # [b]
        if bool(empty.any()) and self.eos is not None and self.eos < V:
            allowed[empty, self.eos] = True
        return allowed if device is None else allowed.to(device)

    @staticmethod
    def advance(matcher, token: int) -> None:
        """Feed the drawn token (a token outside the mask puts the matcher in its error state, never raises)."""
        matcher.consume_token(int(token))


class _TokenTable:
    """Any Hugging Face tokenizer as the token table llguidance's `TokenizerWrapper` reads: each id's text (as
    it decodes alone) and an encoder. Used only where llguidance cannot read the fast tokenizer's own JSON:
    byte-level BPE tokens that are partial UTF-8 decode to U+FFFD alone, so such (slow) tokenizers lose those
    tokens under a constraint."""

    def __init__(self, tokenizer, n_vocab: int):
        self._tok = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_token_id = tokenizer.bos_token_id
        special = set(int(i) for i in tokenizer.all_special_ids)
        self.tokens = []
        for i in range(n_vocab):
            if i >= len(tokenizer):
                special.add(i)
                self.tokens.append(f"<[{i}]>".encode())
            elif i in special:
                self.tokens.append(str(tokenizer.convert_ids_to_tokens(i)).encode())
            else:
                self.tokens.append(tokenizer.decode([i]).encode("utf-8", "surrogatepass"))
        self.special_token_ids = sorted(special)

    def __call__(self, text):
        if isinstance(text, bytes):
            raise TypeError("text only")  # TokenizerWrapper probes for byte input; we take str
        return self._tok(text, add_special_tokens=False)["input_ids"]


def guide_for(engine) -> Guide:
    """The engine's Guide, built on first use (so unconstrained engines never pay for it)."""
    g = getattr(engine, "_guide", None)
    if g is None:
        cfg = getattr(getattr(engine, "model", None), "config", None)
        g = Guide(engine.tokenizer, getattr(cfg, "vocab_size", None))
        engine._guide = g
    return g
