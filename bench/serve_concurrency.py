"""Does one large request stall the others? Small-request latency on `rft serve`, alone and next to a large one.

Starts `rft serve` in a subprocess on a free loopback port (by default on a tiny random 4-layer Llama with a
character-level tokenizer, built in a temporary folder, so a 4 MB prompt is 4 million tokens to count; or
`--model REF`). Then, in one run:

1. without: `--small` small chat requests one after another (max_tokens 8), each timed;
2. with: one large request (a single user message, the body just under the 4 MiB limit) sent from a thread,
   and small requests one after another for as long as it is in flight, each timed.

The large request is refused after tokenising (its prompt exceeds the context window: 400), which is exactly
the work that used to run on the event loop / engine thread and stall every completion. Prints the small
requests' latency (median, p90, max) side by side, and the large request's status and time. Timing is printed,
never asserted; absolute numbers drift on shared machines, compare the two columns of one run.

    .venv/bin/python bench/serve_concurrency.py [--model REF] [--small 20] [--large-mb 3.9] [--max-body-mb 4]
                                                [--url http://127.0.0.1:PORT]   (a server already running)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

SMALL = {"messages": [{"role": "user", "content": "What is 2+3?"}], "max_tokens": 8, "temperature": 0}


def tiny_model(out: Path) -> Path:
    """A random 4-layer Llama with a character-level ChatML tokenizer (as tests/conftest.py builds it)."""
    import string

    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = list(string.ascii_letters + string.digits + " .,?!+*-=\n'")
    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + chars)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<|im_start|>",
                                  eos_token="<|im_end|>", pad_token="<|im_end|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, max_body_mb: float) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("rft")
    proc = subprocess.Popen([str(exe), "serve", "--model", model, "--port", str(port), "--max-body-mb",
                             str(max_body_mb)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"rft serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("rft serve did not start within 600 s")


def timed(c: httpx.Client, body) -> tuple[float, int]:
    t = time.perf_counter()
    r = c.post("/v1/chat/completions", json=body) if not isinstance(body, bytes) else \
        c.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    return time.perf_counter() - t, r.status_code


def summary(xs: list[float]) -> str:
    if not xs:
        return "-"
    q = sorted(xs)
    p90 = q[min(len(q) - 1, int(round(0.9 * (len(q) - 1))))]
    return f"{statistics.median(q) * 1000:8.1f} {p90 * 1000:8.1f} {q[-1] * 1000:8.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="model reference to serve (default: a tiny random model built here)")
    ap.add_argument("--small", type=int, default=20, help="small requests in the 'without' run")
    ap.add_argument("--large-mb", type=float, default=3.9, help="size of the large request body in MiB")
    ap.add_argument("--max-body-mb", type=float, default=4.0)
    ap.add_argument("--url", help="measure a server that is already running instead of starting one")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            url, proc = args.url.rstrip("/"), None
        else:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proc = start_server(args.model or str(tiny_model(Path(tmp) / "tiny")), port, args.max_body_mb)
        try:
            with httpx.Client(base_url=url, timeout=600) as c:
                for _ in range(3):  # warm-up
                    timed(c, SMALL)
                alone = [timed(c, SMALL)[0] for _ in range(args.small)]

                n = int(args.large_mb * 1024 * 1024) - len(json.dumps({"messages": [{"role": "user", "content": ""}]}))
                text = ("lorem ipsum " * (n // 12 + 1))[:n]
                big = json.dumps({"messages": [{"role": "user", "content": text}]}).encode()
                large: dict = {}

                def send_large():
                    with httpx.Client(base_url=url, timeout=600) as c2:
                        large["seconds"], large["status"] = timed(c2, big)

                th = threading.Thread(target=send_large)
                th.start()
                time.sleep(0.05)  # let the large body start uploading first
                beside = []
                while th.is_alive() or not beside:
                    beside.append(timed(c, SMALL)[0])
                th.join()
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)

    shown = args.url or args.model or "tiny random Llama, character tokenizer (1 token per character)"
    print(f"server: {shown}")
    print(f"large request: {len(big) / 2**20:.2f} MiB body -> HTTP {large['status']} after {large['seconds']:.2f} s")
    print()
    print(f"{'small requests (ms)':<34} {'n':>4} {'median':>8} {'p90':>8} {'max':>8}")
    print(f"{'without the large request':<34} {len(alone):>4} {summary(alone)}")
    print(f"{'while the large one is processed':<34} {len(beside):>4} {summary(beside)}")
    if alone and beside:
        print(f"\nmedian ratio (with / without): {statistics.median(beside) / statistics.median(alone):.2f}x; "
              f"small requests answered while the large one was in flight: {len(beside)}")


if __name__ == "__main__":
    main()
