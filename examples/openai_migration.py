"""Client code written for OpenAI's hosted fine-tuning, run against `rft serve`: only `base_url` and `api_key` differ.

Start the server in one terminal, then run this in another:

    export RFT_API_TOKEN=$(python -c "import secrets; print(secrets.token_urlsafe(32))")
    rft serve --model smollm2-135m-instruct            # http://127.0.0.1:8000, the dashboard at /
    python examples/openai_migration.py                 # uploads, trains, chats, grades and runs a batch

`RFT_EXAMPLE_MODEL` and `RFT_EXAMPLE_STEPS` (default: the embedded model, 10 steps, a few minutes on a laptop CPU)
change the model and the length of the run. Everything else is OpenAI's own API, as the `openai` SDK sends it.
"""

import json
import os
import random
import time

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("RFT_BASE_URL", "http://127.0.0.1:8000/v1"),  # was: OpenAI's default
                api_key=os.environ["RFT_API_TOKEN"])                                      # was: OPENAI_API_KEY


def arithmetic(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b, op = rng.randint(0, 9), rng.randint(0, 9), rng.choice("+-*")
        rows.append({"messages": [{"role": "user", "content": f"What is {a} {op} {b}? Answer with just the number."}],
                     "answer": str(eval(f"{a}{op}{b}"))})  # noqa: S307 - our own digits and operator
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


# 1. files ------------------------------------------------------------------------------------------------------
train = client.files.create(file=("train.jsonl", arithmetic(200, seed=1)), purpose="fine-tune")
val = client.files.create(file=("val.jsonl", arithmetic(50, seed=2)), purpose="fine-tune")

# 2. a reinforcement fine-tuning job, OpenAI's body as it is --------------------------------------------------------
grader = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "operation": "eq"}
job = client.fine_tuning.jobs.create(
    model=os.environ.get("RFT_EXAMPLE_MODEL", "smollm2-135m-instruct"),
    training_file=train.id, validation_file=val.id, suffix="arith", seed=0,
    method={"type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": {"eval_interval": 5}}},
    # rft's own settings, where OpenAI has none: the SDK sends extra_body as part of the JSON body
    extra_body={"rft": {"train": {"max_steps": int(os.environ.get("RFT_EXAMPLE_STEPS", "10"))}}},
)
while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
    print(job.status, job.model_extra.get("rft", {}).get("step"))
    time.sleep(5)
print(job.status, job.fine_tuned_model, job.error)
for e in reversed(client.fine_tuning.jobs.list_events(job.id, limit=10).data):
    print("event:", e.message)
for c in client.fine_tuning.jobs.checkpoints.list(job.id).data:
    print("checkpoint:", c.step_number, c.fine_tuned_model_checkpoint, c.metrics)

# 3. chat with the fine-tuned model by the name the job reported ------------------------------------------------------
r = client.chat.completions.create(model=job.fine_tuned_model, temperature=0,
                                   messages=[{"role": "user", "content": "What is 7 * 8? Answer with just the number."}])
print("chat:", r.choices[0].message.content)

# 4. a grader, run as OpenAI runs it --------------------------------------------------------------------------------
print("grader:", client.fine_tuning.alpha.graders.run(grader=grader, model_sample="56", item={"answer": "56"}).reward)

# 5. a batch from an uploaded file ------------------------------------------------------------------------------------
requests = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": job.fine_tuned_model, "max_tokens": 8,
                      "messages": [{"role": "user", "content": f"What is {i} + {i}? Answer with just the number."}]}}
            for i in range(5)]
batch_file = client.files.create(file=("requests.jsonl", "".join(json.dumps(q) + "\n" for q in requests).encode()),
                                 purpose="batch")
batch = client.batches.create(input_file_id=batch_file.id, endpoint="/v1/chat/completions", completion_window="24h")
while (batch := client.batches.retrieve(batch.id)).status not in ("completed", "failed", "cancelled", "expired"):
    time.sleep(2)
print("batch:", batch.status, batch.request_counts)
for line in client.files.content(batch.output_file_id).text.splitlines():
    out = json.loads(line)
    print(out["custom_id"], out["response"]["body"]["choices"][0]["message"]["content"])
