"""Frozen int8 base weights under LoRA (`rft.lora.quantize_base: int8`).

    n = quantize_lora_base(model)        after peft wrapped the model: every LoRA-wrapped linear's frozen base
                                         layer becomes an `Int8Linear` (int8 weights, one absmax scale per
                                         output row); returns how many were converted
    is_int8(layer) -> bool               a base layer stored that way
    Int8Linear                           that layer type (made on first use; bitsandbytes imports then)
    dense_weight(layer) -> Tensor        its dequantised weight, fp32 [out, in] (what the fast engine packs)
    n = dequantize_lora_base(model)      the reverse, in place: each int8 base layer back to an nn.Linear holding
                                         the dequantised weight (before merging the adapters for a checkpoint)
    quiet_bitsandbytes()                 silence bitsandbytes' CPU-backend import warning

What it stores: W8[o, i] = round(127 * W[o, i] / absmax_o) (int8) and absmax_o (fp32) per output row o, computed
by bitsandbytes from the weight cast to fp16 (its rule), i.e. 1 byte a parameter plus 4 bytes a row instead of
4 (fp32) or 2 (bf16). What it computes: weight-only int8 on every device and in both modes. `Int8Linear`
(bitsandbytes' Linear8bitLt whose forward always takes bitsandbytes' dequantising matmul, `MatMul8bitFp`, the
one its CPU backend uses for training) dequantises W~ = W8 * absmax / 127 into the input's dtype for each matmul;
the activations are not quantised (LLM.int8's int8 x int8 product, bitsandbytes' CUDA default, is not used:
rollouts and training must see one set of weights). So the forward differs from the fp32 layer by at most
|y_o - y~_o| <= (absmax_o / 254 + max_i |W[o, i]| * 2**-11) * sum_i |x_i| (half a quantisation step per weight
plus the fp16 cast), up to float rounding. The fast engine packs W~ (`dense_weight`) into its own compute-dtype
copy, so rollouts sample from the same weights the trainer differentiates.

Merging: int8 cannot hold W~ + B A, so `dequantize_lora_base` first turns every int8 base layer back into a dense
nn.Linear holding W~ (in the dtype of the model's other weights unless given), then peft merges the adapters
into it: the served checkpoint is a plain fp32/bf16 model (rft.checkpoint.dtype) whose weights are W~ + B A,
exactly the weights training saw. The original full-precision W is not kept (that is the saving); the
quantisation error is part of the served model.

Simplified: only the linears LoRA wraps are quantised (embeddings, norms and an untied LM head stay in
rft.train.weights_dtype); the scale is bitsandbytes' per-row absmax (no outlier columns kept apart); each matmul
dequantises its whole weight (a transient of one layer's size), which costs memory bandwidth on CUDA where
LLM.int8 would not; converting a layer holds its fp32 weight and the int8 copy at once, one layer at a time.
"""

from __future__ import annotations

import logging
import warnings

import torch

from rft.errors import RftError

_CLASS: list = []  # Int8Linear, made on first use (bitsandbytes is imported only when int8 is asked for)


def quiet_bitsandbytes() -> None:
    """bitsandbytes' CPU backend warns on import that an optional 4-bit GEMM kernel package is missing (rft uses
    no 4-bit kernels); peft imports bitsandbytes whenever it is installed. Call before either is imported."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def _bnb(field: str = "rft.lora.quantize_base"):
    quiet_bitsandbytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import bitsandbytes as bnb
    except ImportError:
        raise RftError(f"{field} is int8 but bitsandbytes is not installed",
                       hint="pip install 'rft[memory]' (bitsandbytes), or set rft.lora.quantize_base: none") from None
    return bnb


def _int8_class():
    """`Int8Linear`: Linear8bitLt whose forward is the weight-only dequantising matmul on every device."""
    if _CLASS:
        return _CLASS[0]
    bnb = _bnb()
    from bitsandbytes.autograd._functions import MatMul8bitFp

    class Int8Linear(bnb.nn.Linear8bitLt):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.weight.CB is not None:  # the int8 matrix and scales move to the layer's state on first use
                self.init_8bit_state()
            if self.bias is not None and self.bias.dtype != x.dtype:
                self.bias.data = self.bias.data.to(x.dtype)
            return MatMul8bitFp.apply(x, self.weight, None, self.bias, self.state)  # [..., out]

    Int8Linear.__module__, Int8Linear.__qualname__ = __name__, "Int8Linear"  # pickles by name (see __getattr__)
    _CLASS.append(Int8Linear)
    return Int8Linear


def __getattr__(name: str):
    if name == "Int8Linear":  # lets pickle (Ray, torch.save) find the class made on first use
        return _int8_class()
    raise AttributeError(name)


def _lora_layers(model):
    """(name, peft LoRA layer) for every module peft wrapped around a base layer."""
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")]


def is_int8(layer) -> bool:
    """Whether `layer` is an int8-stored base layer (`Int8Linear`, or any bitsandbytes Linear8bitLt with int8
    weights)."""
    w = getattr(layer, "weight", None)
    return (type(layer).__name__ in ("Int8Linear", "Linear8bitLt") and w is not None and w.dtype == torch.int8
            and hasattr(layer, "state"))


def _scale(layer) -> torch.Tensor:
    """The per-row absmax [out] (bitsandbytes moves it from the weight to the layer's state on the first forward)."""
    scb = getattr(layer.weight, "SCB", None)
    return scb if scb is not None else layer.state.SCB


def dense_weight(layer) -> torch.Tensor:
    """The dequantised weight of an int8 layer, fp32 [out, in]: W8 * absmax / 127 (bitsandbytes' own rule)."""
    scb = _scale(layer).float()  # [out]
    return layer.weight.data.float() * (scb.unsqueeze(1) * (1.0 / 127.0))  # [out, in]


def quantize_lora_base(model) -> int:
    """Replace the frozen base layer of every LoRA-wrapped nn.Linear in `model` (a peft model) by an int8
    `Int8Linear` on the same device; biases stay as they were. Returns the number of layers converted."""
    bnb, cls = _bnb(), _int8_class()
    n = 0
    for _, lora in _lora_layers(model):
        base = lora.base_layer
        if is_int8(base) or type(base) is not torch.nn.Linear:  # already int8, or a layer type LoRA wraps otherwise
            continue
        dev = base.weight.device
        q = cls(base.in_features, base.out_features, bias=base.bias is not None, has_fp16_weights=False,
                device="meta")
        q.weight = bnb.nn.Int8Params(base.weight.data.to("cpu", torch.float32), requires_grad=False,
                                     has_fp16_weights=False)
        q.bias = None if base.bias is None else torch.nn.Parameter(base.bias.data, requires_grad=False)
        q = q.to(dev)  # Int8Params quantises when it leaves the CPU-float state
        q.train(base.training)
        lora.base_layer = q
        n += 1
    if n:
        _own_cpu_memory(model)
    return n


def _own_cpu_memory(model) -> None:
    """Copy every remaining CPU parameter and buffer into memory of its own. transformers loads safetensors
    through one mapping of the file, which stays mapped, its pages resident (counted in the process's RSS), while
    any tensor from it lives: without this, the full-precision pages the conversion read stay resident after the
    layers that used them are gone (measured: 0.43 GiB on SmolLM2-135M). Costs one transient copy of the
    unconverted weights (embeddings, norms)."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.device.type == "cpu" and t.dtype != torch.int8 and t.numel():
                t.data = t.data.clone()


def dequantize_lora_base(model, dtype: torch.dtype | None = None) -> int:
    """Turn every int8 base layer in `model` back into an nn.Linear holding its dequantised weight in `dtype`
    (default: the dtype of the model's first floating-point parameter that is not an adapter), in place. Call
    on a copy before peft's merge_and_unload: the merged weights are then W~ + B A. Returns how many."""
    if dtype is None:
        dtype = next((p.dtype for n, p in model.named_parameters()
                      if p.is_floating_point() and "lora_" not in n), torch.float32)
    n = 0
    for _, lora in _lora_layers(model):
        base = lora.base_layer
        if not is_int8(base):
            continue
        dense = torch.nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                                device=base.weight.device, dtype=dtype)
        with torch.no_grad():
            dense.weight.copy_(dense_weight(base))
            if base.bias is not None:
                dense.bias.copy_(base.bias.data)
        dense.weight.requires_grad_(False)
        if dense.bias is not None:
            dense.bias.requires_grad_(False)
        dense.train(base.training)
        lora.base_layer = dense
        n += 1
    return n
