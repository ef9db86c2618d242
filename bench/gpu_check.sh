#!/usr/bin/env bash
# The one prepared GPU check (issue 15), under 8 minutes on an H200 in all, every part under its own timeout:
#   1. the GPU unit tests of the CUDA decode path (tests/test_engine_cuda.py -m gpu: CUDA-graph replay against the
#      eager step, weight sync device to device)                                                   <= 75 s
#   2. bench/gpu_check.py: GRPO rft vs TRL (each with and without vLLM where vllm imports) on random
#      Qwen2.5-0.5B- and 1.5B-shaped models, 8 prompts x 8 completions x 256 tokens; one table + ratios,
#      JSON in $OUT/gpu_check.json                                                                 <= 390 s
# Run on the lent machine from the repository root, with bench/wheels carried (it is git-ignored; fill it here first,
# see bench/README.md):   bash bench/gpu_check.sh            (extra arguments go to gpu_check.py)
# The machine's image has torch, transformers, peft, accelerate, pyarrow, pandas; rft's pydantic/tenacity and TRL's
# trl/datasets/dill/multiprocess come from the wheels. vLLM does not fit the 64 MiB that travels, so unless the image
# has it, the vllm rows print "not run".
set -u
cd "$(dirname "$0")/.."
PY=python3
if ls bench/wheels/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site bench/wheels/*.whl \
    || echo "warning: installing bench/wheels failed"
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "note: bench/wheels is empty: pydantic (rft) and trl/datasets (TRL rows) may be missing"
fi
export PYTHONPATH="$PWD/src:$PYTHONPATH" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
echo "== 1. GPU tests of the CUDA decode path"
timeout 75 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_engine_cuda.py 2>&1 | tail -15
echo "== 2. GRPO rft vs TRL"
timeout 390 $PY bench/gpu_check.py --budget-s 360 "$@"
