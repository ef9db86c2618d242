"""The training optimizers, chosen by `rft.optimizer.name` and `rft.train.weights_dtype`:

    make(name, params, lr=, betas=, weight_decay=) -> torch.optim.Optimizer

- `adamw`: torch's AdamW (fp32 moments, 8 bytes a parameter).
- `adamw_8bit`: bitsandbytes' blockwise-quantised 8-bit AdamW (2 bytes a parameter plus one fp32 scale per
  256 values; tensors under 4096 elements keep fp32 moments). It runs on CPU and CUDA. `Adam8bit` below only
  makes its state round-trip through the training state files: a restored `step` comes back as a 0-dim tensor
  and is turned into the int bitsandbytes keeps.
- bf16 weights (any trainable parameter that is not fp32) go through `SplitMaster`, a mixed-precision scheme
  that keeps an exact fp32 master copy for 2 extra bytes a parameter: the bf16 weight holds the master's upper
  16 bits (rounded to nearest) and the optimizer state holds the 16-bit remainder (`master_lo`, int16), so
  fp32 master = bits(weight) << 16 + master_lo. Each step rebuilds one parameter's fp32 master and fp32
  gradient at a time, runs the inner optimizer (adamw or adamw_8bit) on it, and splits the result again, so
  the fp32 copies never exist for more than one tensor at once; the join and the split work in place (one int32
  buffer each), so one step's temporaries are 12 bytes per element of the tensor being stepped with AdamW
  (28 with adamw_8bit, whose own step dominates). Training is then the fp32-master update; the
  forward sees the master rounded to bf16.

Every optimizer keeps its state in `optimizer.state[param]` as plain tensors keyed by the model's parameters,
which is what `rft.train.state` saves and restores, so exact resume holds for all of them.

Simplified: one param group; `SplitMaster` steps parameters one by one (a Python loop over tensors, not a
fused kernel); fp32 parameters mixed in with bf16 ones (LoRA adapters on a bf16 base) skip the split.
"""

from __future__ import annotations

import warnings

import torch

from rft.errors import RftError
from rft.models.quant import quiet_bitsandbytes  # noqa: F401 - one definition, used here and by rft.train.setup

OPTIMIZERS = ("adamw", "adamw_8bit")


def _bnb():
    quiet_bitsandbytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import bitsandbytes as bnb
    except ImportError:
        raise RftError("rft.optimizer.name is adamw_8bit but bitsandbytes is not installed",
                       hint="pip install bitsandbytes, or use rft.optimizer.name=adamw") from None
    return bnb


def _adam8bit_class():
    bnb = _bnb()

    class Adam8bit(bnb.optim.AdamW8bit):
        """bitsandbytes' AdamW8bit whose `step` may come back from a saved state as a tensor."""

        @torch.no_grad()
        def step(self, closure=None):
            for st in self.state.values():
                if torch.is_tensor(st.get("step")):
                    st["step"] = int(st["step"])
            return super().step(closure)

    return Adam8bit


def _inner(name: str, params, lr: float, betas, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, foreach=True)
    if name == "adamw_8bit":
        return _adam8bit_class()(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    raise RftError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def make(name: str, params: list, *, lr: float, betas, weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer over `params`: plain for fp32 parameters, `SplitMaster` around it if any is bf16."""
    if any(p.dtype != torch.float32 for p in params):
        return SplitMaster(params, name, lr=lr, betas=betas, weight_decay=weight_decay)
    return _inner(name, params, lr, betas, weight_decay)


# ------------------------------------------------------------------------------- the split fp32 master
def split_master(master: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 [*] -> (bf16 [*] the master rounded to nearest on its bit pattern, int16 [*] the remainder)."""
    bits = master.contiguous().view(torch.int32)  # [*]
    hi = (bits + 0x8000) >> 16  # [*] upper half, rounded: ties away from zero in magnitude
    lo = bits - (hi << 16)  # [*] in [-0x8000, 0x7fff]
    return hi.to(torch.int16).view(torch.bfloat16), lo.to(torch.int16)


def join_master(weight: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
    """(bf16 [*], int16 [*]) -> the exact fp32 master [*]."""
    hi = weight.contiguous().view(torch.int16).to(torch.int32)  # [*]
    return ((hi << 16) + lo.to(torch.int32)).view(torch.float32)  # [*]


class SplitMaster(torch.optim.Optimizer):
    """bf16 weights trained on an exact fp32 master split into the weight and a 16-bit remainder (module
    docstring). `param_groups` and `state` are keyed by the model's parameters; `state[p]` holds the inner
    optimizer's state for p plus `master_lo`."""

    def __init__(self, params, inner: str, *, lr: float, betas, weight_decay: float):
        params = list(params)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))
        # One fp32 stand-in per parameter: the inner optimizer's state is keyed by it; its data is filled for
        # the step of that one parameter only.
        self._shell = {p: torch.nn.Parameter(torch.empty(0, device=p.device), requires_grad=False) for p in params}
        self.inner = _inner(inner, list(self._shell.values()), lr, betas, weight_decay)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        g, ig = self.param_groups[0], self.inner.param_groups[0]
        for k in ("lr", "betas", "weight_decay"):  # the LR schedule sets them on this optimizer
            ig[k] = g[k]
        for p in g["params"]:
            if p.grad is None:
                continue
            self._step_one(p)
        return loss

    def _step_one(self, p) -> None:
        """One parameter's update. Temporaries, in bytes per element of p (bf16): the fp32 master (4, built in
        place), the fp32 gradient (4), the inner step's own (AdamW: one fp32 buffer, 4), then, with the gradient
        dropped, the split's one int32 buffer (4) written straight into the weight and the existing remainder:
        12 at most, where building them with out-of-place ops took 22-28 (measured: bench/memory.py, config bf16)."""
        shell, st = self._shell[p], self.state[p]
        self.inner.state[shell] = st  # one dict: whatever the inner optimizer keeps is saved with p
        fp32 = p.dtype == torch.float32
        lo = st.get("master_lo")
        shell.data = p.data if fp32 else (_join_master_(p.data, lo) if lo is not None else p.data.float())
        shell.grad = p.grad if fp32 else p.grad.float()
        self.inner.step()
        shell.grad = None
        if not fp32:
            if lo is None:
                lo = st["master_lo"] = torch.empty(p.shape, dtype=torch.int16, device=p.device)
            _split_master_into(shell.data, p.data, lo)
        shell.data = torch.empty(0, device=p.device)


def _join_master_(weight: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
    """`join_master` with one int32 buffer that becomes the fp32 master (no other temporaries)."""
    m = weight.contiguous().view(torch.int16).to(torch.int32)  # [*] the upper halves
    m.bitwise_left_shift_(16).add_(lo)  # [*] + the remainders (int16 promoted inside the add, no copy)
    return m.view(torch.float32)  # [*]


def _split_master_into(master: torch.Tensor, weight: torch.Tensor, lo: torch.Tensor) -> None:
    """`split_master` written into the existing bf16 `weight` and int16 `lo` (same values, bit for bit), with one
    int32 buffer; `master` is overwritten (it is rebuilt from the two halves at the next step)."""
    bits = master.contiguous().view(torch.int32)  # [*]
    hi = bits + 0x8000  # [*] the one temporary
    hi.bitwise_right_shift_(16)  # [*] upper half, rounded: ties away from zero in magnitude
    weight.view(torch.int16).copy_(hi)  # [*] int32 -> int16 keeps the low 16 bits: the upper half's bit pattern
    bits.sub_(hi.bitwise_left_shift_(16))  # [*] the remainder, in [-0x8000, 0x7fff]
    lo.copy_(bits)  # [*]
