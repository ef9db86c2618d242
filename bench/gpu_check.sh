#!/usr/bin/env bash
# One short prepared GPU check (< 5 minutes on an H100): rft vs TRL GRPO step time on random models of the
# SmolLM2-135M shape and ~0.5B, same job, same GPU. Run on a lent GPU machine from the repository root:
#   bash bench/gpu_check.sh
# The machine's image has torch/transformers/peft/accelerate; TRL and datasets come from wheels carried in
# bench/wheels/ (fill it here first: pip download -d bench/wheels --no-deps trl datasets ... ; see bench/README.md).
set -u
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
python -c "import rft" 2>/dev/null || pip install -q --no-deps -e . >/dev/null 2>&1 || true
for dep in pydantic typer rich safetensors pyyaml; do python -c "import $dep" 2>/dev/null || echo "missing $dep"; done
if ls bench/wheels/*.whl >/dev/null 2>&1; then
  pip install -q --no-index --find-links bench/wheels trl datasets 2>&1 | tail -2
fi
FW=rft; python -c "import trl, datasets" 2>/dev/null && FW=rft,trl || echo "TRL not importable: rft only"
timeout 270 python bench/gpu_check.py --frameworks "$FW" --sizes 135m,500m --steps 5 --warmup 2 "$@"
