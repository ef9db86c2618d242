"""Fused CPU kernels for the fast decoder (bf16 decode glue), compiled from `cpu_kernels.c` on first use.

The C source is compiled with the system C compiler (`$CC`, else `cc`) for this CPU (`-march=native`) into
`<cache>/kernels/<hash>.so`, keyed by the source, the flags, the compiler and the CPU's feature flags, so a
cache shared between machines never runs code built for another CPU. It is a plain shared library (no
Python or torch headers; it builds in about a second) called through ctypes on tensors' data pointers.

When no compiler is available, or `RFT_CPU_KERNELS=0`, `load()` returns None and the decoder uses its
PyTorch path; the first failure is logged once with the compiler's message.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_SRC = Path(__file__).with_name("cpu_kernels.c")
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared"]
_OPENMP = ["-fopenmp"]  # tried first; without it the attention kernel runs on one thread
_lock = threading.Lock()
_lib: "Kernels | None | bool" = False  # False: not tried yet


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc)


def build(cache: Path | None = None) -> Path:
    """Compile the kernels (if not cached) and return the shared library's path. Raises RuntimeError with the
    compiler's output when compilation fails."""
    from rft.home import cache_dir

    cc = _compiler()
    if cc is None:
        raise RuntimeError(f"no C compiler found (tried {os.environ.get('CC') or 'cc'}; set CC)")
    src = _SRC.read_bytes()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"C compiler {cc} does not run: {e}") from e
    key = hashlib.sha256(b"\0".join([src, " ".join(_FLAGS + _OPENMP).encode(), version.encode(),
                                     _cpu_id().encode(), platform.machine().encode()])).hexdigest()[:20]
    out_dir = (cache or cache_dir()) / "kernels"
    out = out_dir / f"cpu_kernels-{key}.so"
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        err = ""
        for extra in (_OPENMP, []):
            proc = subprocess.run([cc, *_FLAGS, *extra, "-o", tmp, str(_SRC), "-lm"], capture_output=True, text=True,
                                  timeout=300)
            if proc.returncode == 0:
                break
            err = proc.stderr.strip()[-2000:]
        else:
            raise RuntimeError(f"compiling {_SRC.name} with {cc} failed:\n{err}")
        os.replace(tmp, out)  # atomic: concurrent builders each publish a complete file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


class Kernels:
    """ctypes bindings; arguments are torch tensors (checked contiguous, right dtype) and Python numbers."""

    def __init__(self, path: Path):
        lib = ctypes.CDLL(str(path))
        p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
        lib.rft_add_rmsnorm.argtypes = [p, p, p, p, i64, i64, f32]
        lib.rft_silu_mul.argtypes = [p, p, i64, i64]
        lib.rft_attention.argtypes = [p, p, p, p, p, i64, i64, p, i64, i64, i64, i64, i64, i64, i64, f32, p, p, i64]
        lib.rft_attention_workspace.argtypes = [i64, i64, i64, i64]
        lib.rft_attention_workspace.restype = i64
        lib.rft_has_gemm.argtypes = []
        lib.rft_has_gemm.restype = ctypes.c_int
        lib.rft_pack_vnni.argtypes = [p, p, i64, i64]
        lib.rft_pack_vnni.restype = None
        lib.rft_gemm_bf16.argtypes = [p, i64, i64, p, i64, p, p, ctypes.c_int]
        lib.rft_gemm_bf16.restype = None
        #: the bf16 GEMM is compiled in (the CPU has AVX512-BF16)
        self.has_gemm = bool(lib.rft_has_gemm())
        for f in (lib.rft_add_rmsnorm, lib.rft_silu_mul, lib.rft_attention):
            f.restype = None
        self.lib = lib
        self.path = path

    def add_rmsnorm(self, x: torch.Tensor, y: torch.Tensor | None, w: torch.Tensor, out: torch.Tensor, eps: float):
        """x [..., E] fp32 (updated in place: x += y), y [..., E] bf16 or None, w [E] bf16 -> out [..., E] bf16."""
        E = x.shape[-1]
        _check(x, torch.float32), _check(w, torch.bfloat16), _check(out, torch.bfloat16)
        if y is not None:
            _check(y, torch.bfloat16)
            assert y.numel() == x.numel()
        assert out.numel() == x.numel() and w.numel() == E
        self.lib.rft_add_rmsnorm(x.data_ptr(), y.data_ptr() if y is not None else None, w.data_ptr(),
                                 out.data_ptr(), x.numel() // E, E, eps)

    def silu_mul(self, gu: torch.Tensor, out: torch.Tensor):
        """gu [..., 2I] bf16 (gate | up) -> out [..., I] bf16 = silu(gate) * up."""
        _check(gu, torch.bfloat16), _check(out, torch.bfloat16)
        I = out.shape[-1]
        assert gu.shape[-1] == 2 * I and gu.numel() == 2 * out.numel()
        self.lib.rft_silu_mul(gu.data_ptr(), out.data_ptr(), out.numel() // I, I)

    def pack(self, w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """W [N, K] bf16 -> the GEMM's packed layout (a flat bf16 tensor; N % 16 == 0, K even). Reuses `out`."""
        _check(w, torch.bfloat16)
        N, K = w.shape
        if N % 16 or K % 2:
            raise ValueError(f"pack: weight {tuple(w.shape)} needs rows % 16 == 0 and an even number of columns")
        if out is None or out.numel() != N * K:
            out = torch.empty((N * K,), dtype=torch.bfloat16)
        self.lib.rft_pack_vnni(w.data_ptr(), out.data_ptr(), N, K)
        return out

    def gemm(self, x: torch.Tensor, packed: torch.Tensor, n_out: int, bias: torch.Tensor | None = None,
             out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        """x [..., K] bf16 @ W^T (+ bias fp32 [N]) with W packed by `pack` -> [..., N] in out_dtype (bf16/fp32)."""
        if not self.has_gemm:
            raise RuntimeError("the bf16 GEMM needs a CPU with AVX512-BF16")
        _check(x, torch.bfloat16), _check(packed, torch.bfloat16)
        K = x.shape[-1]
        assert packed.numel() == n_out * K
        if bias is not None:
            _check(bias, torch.float32)
            assert bias.numel() == n_out
        y = torch.empty((*x.shape[:-1], n_out), dtype=out_dtype)
        self.lib.rft_gemm_bf16(x.data_ptr(), x.numel() // K, K, packed.data_ptr(), n_out,
                               bias.data_ptr() if bias is not None else None, y.data_ptr(), out_dtype == torch.float32)
        return y

    def workspace(self, n_heads: int, n_kv: int, head_dim: int, slots: int, threads: int | None = None) -> torch.Tensor:
        """Scratch for `attention` with up to `slots` cache slots attended: one slice per thread."""
        n = threads or torch.get_num_threads()
        ws = self.lib.rft_attention_workspace(n_heads, n_kv, head_dim, slots)
        out = torch.empty((n * ws,), dtype=torch.float32)
        if out.data_ptr() % 64:  # torch's CPU allocator aligns to 64 bytes; keep the kernel's contract anyway
            out = torch.empty((n * ws + 16,), dtype=torch.float32)
            off = (-out.data_ptr() % 64) // 4
            out = out[off : off + n * ws]
        return out

    def attention(self, qkv, cos, sin, kc, vc, valid, t: int, n_heads: int, n_kv: int, scale: float, out,
                  scratch=None):
        """qkv [b, m, (H+2K)*D] bf16, cos/sin [b, m, D] fp32, kc/vc [b, K, Tmax, D] bf16 (one layer's cache,
        written at slots [t, t+m)), valid [b, Tmax] bool -> out [b, m, H*D] bf16. See cpu_kernels.c."""
        b, m = qkv.shape[0], qkv.shape[1]
        Kc, Tmax, D = kc.shape[1], kc.shape[2], kc.shape[3]
        assert Kc == n_kv and kc.shape[0] == b and vc.shape == kc.shape and valid.shape[0] == b
        assert t + m <= Tmax and valid.shape[1] >= t + m
        assert qkv.shape[-1] == (n_heads + 2 * n_kv) * D and out.shape[-1] == n_heads * D
        assert cos.shape == (b, m, D) and sin.shape == cos.shape
        if scratch is None:
            scratch = self.workspace(n_heads, n_kv, D, t + m)
        ws = self.lib.rft_attention_workspace(n_heads, n_kv, D, t + m)
        assert scratch.numel() >= ws and scratch.data_ptr() % 64 == 0, "scratch too small or not 64-byte aligned"
        for a, dt in ((qkv, torch.bfloat16), (cos, torch.float32), (sin, torch.float32), (kc, torch.bfloat16),
                      (vc, torch.bfloat16), (valid, torch.bool), (out, torch.bfloat16), (scratch, torch.float32)):
            _check(a, dt)
        self.lib.rft_attention(qkv.data_ptr(), cos.data_ptr(), sin.data_ptr(), kc.data_ptr(), vc.data_ptr(),
                               Kc * Tmax * D, Tmax, valid.data_ptr(), valid.shape[1], b, m, t, n_heads, n_kv, D,
                               scale, out.data_ptr(), scratch.data_ptr(), scratch.numel() // ws)


def _check(a: torch.Tensor, dtype: torch.dtype) -> None:
    if a.dtype != dtype or not a.is_contiguous() or a.device.type != "cpu":
        raise ValueError(f"cpu kernel argument: want a contiguous {dtype} CPU tensor, got {a.dtype} "
                         f"{tuple(a.shape)} contiguous={a.is_contiguous()} on {a.device}")


def load() -> Kernels | None:
    """The compiled kernels, or None (no compiler, compile error, or RFT_CPU_KERNELS=0). Built once per process."""
    global _lib
    if os.environ.get("RFT_CPU_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    with _lock:
        if _lib is False:
            try:
                _lib = Kernels(build())
            except Exception as e:  # noqa: BLE001 - any failure means: use the PyTorch path
                log.warning("fused CPU kernels unavailable, using the PyTorch decode path: %s", e)
                _lib = None
        return _lib  # type: ignore[return-value]
