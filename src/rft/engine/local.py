"""Local transformers engine: batched generation with a KV cache, written out so no work is wasted.

What it does, per call:
- renders each chat prompt with the model's chat template and tokenizes it;
- groups prompts by length into batches of at most `max_batch_size` sequences, left-padded;
- prefills each *unique* prompt once and repeats its KV cache `n` times (the n completions of one prompt
  share the prefill);
- decodes token by token; rows that finished (EOS, a stop string, or `max_new_tokens`) are dropped from the
  batch and its KV cache, so finished sequences cost nothing;
- samples with temperature / top-k / top-p from a seeded `torch.Generator` (engine/sampling.py) and returns,
  for every token, log p under the temperature-scaled distribution (before truncation), which is what the
  GRPO loss recomputes as the old policy.

Single requests also have `generate_predicted` / `generate_ids_predicted` (predicted outputs: a user-supplied
draft verified several tokens per forward, same output as without it) and `stream` (text deltas as tokens
are produced); both run the one-sequence loop in `engine/predicted.py`.

Constrained decoding: with `params.constraint` (OpenAI's response_format, engine/constrain.py) every sequence
gets its own grammar matcher and each draw is masked to the tokens its grammar allows; predicted outputs then
decode without drafts. Without a constraint no mask is computed. Tools: `generate(..., tools=[...])` renders
each prompt with its tools (engine/tools.py).

Backends: on CUDA, Llama-family models (llama, qwen2, qwen3, mistral) run on `cuda_decode.StaticDecoder` (a
static KV cache, eager prefill, the decode step replayed as one CUDA graph; backend "cuda_graph"; weights synced
device to device). On CPU, Llama-family models run on `fast_llama.FastDecoder` (packed weights in the compute dtype, a
preallocated KV cache; in bf16 on CPU its forward runs on the C kernels of `cpu_kernels`); other architectures
fall back to the transformers forward with a DynamicCache (`decoder.HFDecoder`). All three implement
`decoder.Decoder` and keep their place in a `decoder.DecoderState`.
Compute dtype: on CPUs with fast bf16 matrix units, generation runs in bf16 on a copy of the weights,
refreshed from the fp32 master weights with `sync_weights()` after each optimizer step.
The backend, compute dtype and the model's attention implementation (transformers' "sdpa" as rft loads models)
are logged when the engine is built.
Simplifications: no paged attention or continuous batching across calls; one device. The CUDA path has not been
run on a GPU by the session that wrote it (see bench/gpu_check.sh).
"""

from __future__ import annotations

import logging
import time
from typing import Iterator, Sequence

import torch

from rft.engine import constrain, cuda_decode, fast_llama, predicted
from rft.engine.decoder import Decoder, HFDecoder
from rft.engine.protocol import GenerationStats, SamplingParams
from rft.engine.sampling import eos_ids, make_generator, sample_next, stop_text
from rft.engine.tools import render_with_tools
from rft.types import Completion

log = logging.getLogger(__name__)


def render_prompt(tokenizer, messages: list[dict], tools: list | None = None) -> list[int]:
    """Chat-template token ids for a prompt ending in a user turn, with the assistant header appended.
    `tools` (OpenAI function tools) go to the template, or into the documented fallback system block when the
    template ignores them (engine/tools.py)."""
    if tools:
        return render_with_tools(tokenizer, messages, tools)
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(out, dict) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    return list(out)


class LocalEngine:
    """Batched generation on a local transformers causal LM (see module docstring).

    `compute_dtype` is the dtype generation runs in (default: the model's). With the fast decoder the
    engine keeps its own packed copy of the weights in that dtype; call `sync_weights()` after every
    optimizer step so rollouts use the current policy.
    """

    def __init__(self, model, tokenizer, *, compute_dtype: torch.dtype | None = None, max_batch_size: int = 64,
                 fast: bool | None = None, static: bool | None = None, cuda_graphs: bool = True):
        """static: use the static-cache decoder (`cuda_decode.StaticDecoder`; default: on CUDA for the
        architectures it supports, never on CPU unless asked); cuda_graphs=False keeps its decode step eager."""
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.compute_dtype = compute_dtype or next(model.parameters()).dtype
        self.max_batch_size = max_batch_size
        self.eos = eos_ids(tokenizer, model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos)
        use_static = (self.device.type == "cuda" and cuda_decode.supports(model)) if static is None else static
        use_fast = not use_static and (fast_llama.supports(model) if fast is None else fast)
        if use_static:
            self.backend = "cuda_graph" if self.device.type == "cuda" and cuda_graphs else "static"
            self.decoder: Decoder = cuda_decode.StaticDecoder(model, self.compute_dtype, graphs=cuda_graphs)
        elif use_fast:
            self.backend = "fast"
            self.decoder = fast_llama.FastDecoder(model, self.compute_dtype)
        else:
            self.backend = "transformers"
            self.decoder = HFDecoder(model, self.compute_dtype)
        # the attention the model's own forward (training, the transformers fallback) runs: logged, not changed
        self.attn_implementation = getattr(getattr(model, "config", None), "_attn_implementation", None)
        log.info("engine: backend %s, compute dtype %s, device %s, model attention %s", self.backend,
                 str(self.compute_dtype).removeprefix("torch."), self.device, self.attn_implementation)
        self.last_stats = GenerationStats()

    def sync_weights(self) -> None:
        """Refresh the engine's copy of the weights from the model (after each optimizer step)."""
        self.decoder.sync()

    # -- generation --------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[list[dict]], params: SamplingParams, *,
                 tools: Sequence[list | None] | None = None) -> list[list[Completion]]:
        """`tools`: per prompt, the OpenAI function tools it offers (or None); see engine/tools.py."""
        tl = list(tools) if tools is not None else [None] * len(prompts)
        ids = [render_prompt(self.tokenizer, m, t) for m, t in zip(prompts, tl)]
        return self.generate_ids(ids, params)

    def generate_ids(self, prompt_ids: Sequence[list[int]], params: SamplingParams) -> list[list[Completion]]:
        t0 = time.perf_counter()
        gen = make_generator(params, self.device)
        n = max(1, params.n)
        per_batch = max(1, self.max_batch_size // n)  # unique prompts per batch; each becomes n rows
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))  # similar lengths together
        results: list[list[Completion] | None] = [None] * len(prompt_ids)
        completion_tokens = 0
        for start in range(0, len(order), per_batch):
            chunk = order[start : start + per_batch]
            outs = self._generate_batch([list(prompt_ids[i]) for i in chunk], n, params, gen)
            for j, i in enumerate(chunk):
                results[i] = outs[j * n : (j + 1) * n]
                completion_tokens += sum(len(c.token_ids) for c in results[i])
        self.last_stats = GenerationStats(
            prompt_tokens=sum(len(p) for p in prompt_ids) * n,
            completion_tokens=completion_tokens,
            seconds=time.perf_counter() - t0,
        )
        return results  # type: ignore[return-value]

    # -- predicted outputs and streaming (single request, see engine/predicted.py) ----------------------
    def generate_predicted(self, messages: list[dict], params: SamplingParams, prediction: str) -> Completion:
        """One completion (n = 1) for a chat prompt, using `prediction` as draft tokens. The output is
        distributed as without a prediction (greedy: the same tokens); the completion reports how many
        prediction tokens were accepted and rejected."""
        return self.generate_ids_predicted(render_prompt(self.tokenizer, messages), params,
                                           self.prediction_ids(prediction))

    def generate_ids_predicted(self, prompt_ids: list[int], params: SamplingParams,
                               prediction_ids: list[int]) -> Completion:
        t0 = time.perf_counter()
        out = None
        for _, out in predicted.run(self, list(prompt_ids), params, list(prediction_ids)):
            pass
        assert out is not None
        self.last_stats = GenerationStats(
            prompt_tokens=len(prompt_ids), completion_tokens=len(out.token_ids), seconds=time.perf_counter() - t0,
            extra={"accepted_prediction_tokens": out.accepted_prediction_tokens,
                   "rejected_prediction_tokens": out.rejected_prediction_tokens},
        )
        return out

    def stream(self, messages: list[dict], params: SamplingParams,
               prediction: str | None = None) -> Iterator[tuple[str, Completion | None]]:
        """Single request (n = 1): yields (text_delta, None) as tokens are produced, then ("", completion)
        once. The deltas concatenate to `completion.text`. Without a prediction the tokens (and, with a seed,
        the samples) are those `generate` returns for the same request."""
        prompt_ids = render_prompt(self.tokenizer, messages)
        pred_ids = self.prediction_ids(prediction) if prediction else []
        deltas = predicted.TextDeltas(self.tokenizer, tuple(params.stop))
        t0 = time.perf_counter()
        for toks, done in predicted.run(self, prompt_ids, params, pred_ids):
            if done is None:
                d = deltas.push(toks)
                if d:
                    yield d, None
                continue
            d = deltas.finish(done.text)
            if d:
                yield d, None
            self.last_stats = GenerationStats(prompt_tokens=len(prompt_ids), completion_tokens=len(done.token_ids),
                                              seconds=time.perf_counter() - t0)
            yield "", done

    def prediction_ids(self, prediction: str) -> list[int]:
        """The draft tokens of a prediction: its text tokenized without special tokens."""
        if not prediction:
            return []
        out = self.tokenizer(prediction, add_special_tokens=False)["input_ids"]
        return [int(t) for t in out]

    def _generate_batch(self, prompts: list[list[int]], n: int, params: SamplingParams, gen) -> list[Completion]:
        dev = self.device
        P = len(prompts)
        L = max(len(p) for p in prompts)
        input_ids = torch.full((P, L), self.pad_id, dtype=torch.long, device=dev)  # [P, L]
        attn = torch.zeros((P, L), dtype=torch.long, device=dev)  # [P, L]
        for i, p in enumerate(prompts):
            input_ids[i, L - len(p) :] = torch.tensor(p, dtype=torch.long)
            attn[i, L - len(p) :] = 1
        dec = self.decoder
        shared = 0
        if self.backend == "fast" and P > 1:
            # Prompts usually share a system prompt: prefill it once (layout [prefix | padding | suffix]).
            shared = _common_prefix(prompts, max_len=min(len(p) for p in prompts) - 1)
            if shared >= 8:
                for i, p in enumerate(prompts):
                    input_ids[i, :shared] = torch.tensor(p[:shared], dtype=torch.long)
                    input_ids[i, shared : L - len(p) + shared] = self.pad_id
                    attn[i, :shared] = 1
                    attn[i, shared : L - len(p) + shared] = 0
            else:
                shared = 0
        logits, state = dec.prefill(input_ids, attn, params.max_new_tokens, shared_prefix=shared)  # [P, V]
        if n > 1:
            state = dec.repeat(state, n)
            logits = logits.repeat_interleave(n, dim=0)  # [B, V]
        B = P * n
        active = list(range(B))  # row r of the running batch holds sequence active[r]
        done = [False] * B
        toks: list[list[int]] = [[] for _ in range(B)]
        lps: list[list[float]] = [[] for _ in range(B)]
        finish = ["length"] * B
        texts: list[str | None] = [None] * B
        stop = tuple(params.stop)
        # A constraint: one matcher (parser state) per sequence; unconstrained calls skip all of this.
        guide = constrain.guide_for(self) if params.constraint is not None else None
        matchers = guide.matchers(params.constraint, B) if guide is not None else None
        for step in range(params.max_new_tokens):
            allowed = guide.allowed([matchers[s] for s in active], logits.shape[-1], logits.device) if guide else None  # [b, V]
            tok, lp = sample_next(logits, params, gen, allowed)  # [b], [b]
            n_live = 0
            for s, t, l in zip(active, tok.tolist(), lp.tolist()):
                if done[s]:
                    continue
                toks[s].append(t)
                lps[s].append(l)
                if matchers is not None:
                    guide.advance(matchers[s], t)
                if t in self.eos:
                    finish[s], done[s] = "stop", True
                elif stop and (cut := stop_text(self.tokenizer, toks[s], stop)) is not None:
                    finish[s], done[s], texts[s] = "stop", True, cut
                n_live += not done[s]
            if n_live == 0 or step + 1 == params.max_new_tokens:
                break
            # Drop finished rows once they are a quarter of the batch: compaction copies the cache,
            # so doing it for every single finished row would cost more than it saves.
            # (A static-shape decoder keeps every row: its step is one fixed-shape CUDA graph.)
            if getattr(dec, "compacts", True) and len(active) - n_live >= max(1, len(active) // 4):
                keep = [r for r, s in enumerate(active) if not done[s]]
                rows = torch.tensor(keep, dtype=torch.long, device=dev)
                state = dec.select(state, rows)
                tok = tok[rows]
                active = [active[r] for r in keep]
            logits = dec.decode(tok, state)  # [b, V]
        outs = []
        for s in range(B):
            text = texts[s] if texts[s] is not None else self.tokenizer.decode(toks[s], skip_special_tokens=True)
            outs.append(Completion(text=text, token_ids=tuple(toks[s]), logprobs=tuple(lps[s]),
                                   finish_reason=finish[s], prompt_tokens=len(prompts[s // n])))
        return outs


def _common_prefix(seqs: list[list[int]], max_len: int) -> int:
    n = 0
    first = seqs[0]
    while n < max_len and all(s[n] == first[n] for s in seqs[1:]):
        n += 1
    return n


def best_cpu_dtype() -> torch.dtype:
    """bf16 where the CPU has native bf16 matrix support (AMX or AVX512-BF16), else fp32."""
    try:
        caps = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover
        caps = ""
    if "AMX" in caps.upper() or _cpu_flag("avx512_bf16") or _cpu_flag("amx_bf16"):
        return torch.bfloat16
    return torch.float32


def _cpu_flag(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return flag in line.split()
    except OSError:
        pass
    return False
