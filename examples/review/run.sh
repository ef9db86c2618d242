#!/usr/bin/env bash
# Review and replay, end to end (issue 18): train with the planted-bug grader, review 30 samples (verdicts from a
# file, loaded through the CLI), replay the fixed grader over what was stored, explain the final checkpoint.
# See examples/review/README.md.
#   bash examples/review/run.sh                 (from anywhere; RFT_HOME as usual; outputs in examples/review/out/)
#   TRAIN_JSON=out/train.json bash examples/review/run.sh    (skip training: review/replay/explain that job again)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT_DIR:-examples/review/out}
mkdir -p "$out"
rft=${RFT:-rft}
py=${PYTHON:-python}

if [ -z "${TRAIN_JSON:-}" ]; then
    $py examples/review/make_data.py                           # data/train.jsonl (400 rows), data/validation.jsonl (40)
    # sed: the first run on a fresh RFT_HOME prints a "preparing <model>" line on stdout before the JSON
    $rft train examples/review/job.yaml --json | sed -n '/^{/,$p' > "$out/train.json"
    TRAIN_JSON=$out/train.json
fi
JOB=$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['id'])" "$TRAIN_JSON")
CKPT=$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['fine_tuned_model_checkpoint'])" "$TRAIN_JSON")

# 30 items of the review queue, judged by the arithmetic (a scripted stand-in for a person), stored via the CLI
$rft review "$JOB" -n 30 --queue --json > "$out/queue.json"
$py examples/review/reviewer.py "$out/queue.json" --out "$out/verdicts.jsonl"
$rft review "$JOB" --verdicts "$out/verdicts.jsonl" --by "scripted-reviewer (examples/review/reviewer.py)"
$rft review "$JOB" --report | tee "$out/report.txt"
$rft review "$JOB" --report --json > "$out/report.json"

$rft replay "$JOB" --grader examples/review/fixed_grader.json | tee "$out/replay.txt"
$rft explain "$CKPT" | tee "$out/explain.txt"
$rft explain "$CKPT" --json > "$out/explain.json"
$rft lineage "$CKPT" --no-verify | tee "$out/lineage.txt"
