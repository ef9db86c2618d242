"""Sandbox for user-supplied Python grader code: a pool of reusable worker processes with OS-level limits.

What it does
------------
`SandboxPool.run(source, sample, item)` runs `grade(sample, item)` from `source` and returns a `SandboxResult`
(a float, or why there is none). Each pool slot is a *worker* ("zygote") process that is started once and reused:

1. The worker starts as `python -I worker.py --worker` in its own session, with stdin on /dev/null, a scrubbed
   environment (no API keys, tokens, `HF_TOKEN`; only PATH, HOME, TMPDIR, LANG and thread-count variables) and
   a private scratch directory as its working directory.
2. Where the kernel allows (root, or unprivileged user namespaces), it enters new network, PID, mount, IPC and
   UTS namespaces and pivots into a fresh root: a read-only tmpfs in which only the directories Python needs
   are bind-mounted read-only (/usr, the interpreter's prefix, the venv's site-packages, the dynamic-linker
   cache), plus a fresh /proc for its own PID namespace, a minimal /dev, and size-limited tmpfs at /scratch
   (the working directory) and /tmp. When started as root it then drops to an unprivileged uid that is unique
   to the pool slot; otherwise it drops every capability. `no_new_privs` is set either way.
3. The worker executes the grader module's top level once (imports, constants) and caches it by sha256.
4. Each call forks a fresh child from the worker. The child gets RLIMIT_CPU (per call, so it never
   accumulates), RLIMIT_AS (memory, default 2 GB), RLIMIT_NPROC (processes), RLIMIT_FSIZE (file size) and
   RLIMIT_CORE=0, closes the worker's control pipes, and calls `grade`. Its stdout/stderr (Python-level and
   raw fd 1/2 writes) go to pipes that the worker drains, keeping the first `output_bytes` of each and
   counting the rest. The result travels over a separate pipe as JSON; exit codes and printed text never count.
5. The worker enforces the wall-clock limit (default 120 s). When the call ends or times out, every other
   process in the sandbox is SIGKILLed (`kill(-1)` from PID 1 of the namespace catches double-forked,
   `setsid` daemons too), the scratch directories are emptied, and the worker is ready for the next call.
   The parent keeps a second, longer deadline: a worker that does not answer (its top level hung, it was
   killed) is killed as a whole (its process group and its namespace's PID 1) and replaced, so the pool size
   is restored. A hung grader costs one timeout for its own sample; the other pool slots keep working.

What it protects against (namespace mode, which is what Linux with root or user namespaces gives)
-----------------------------------------------------------------------------------------------------
Infinite loops and blocking calls (wall clock + CPU limit), memory bombs (RLIMIT_AS: allocations fail with
MemoryError, reported as a runtime error), fork bombs (RLIMIT_NPROC, counted per slot uid when started as
root), orphaned and daemonised descendants (killed with the namespace), output floods (captured output is
capped; the parent never holds more than the cap), network access (an empty network namespace: even
127.0.0.1 is unreachable, DNS fails), reading host files (the dataset, checkpoints, ~/.ssh, /etc/passwd and
/proc of other processes are simply not in the sandbox's filesystem), writing outside the scratch
directories (the root is read-only), Python-level escapes (`sys.modules['os'].system`, `ctypes`,
`__subclasses__` walks all run, but inside the same OS boundary), and state leaking between samples (each
call is a fresh fork; scratch is emptied).

What it does not protect against
--------------------------------
- Kernel exploits: there is no seccomp filter, so the whole syscall surface is reachable. Run untrusted
  graders in a VM or a container runtime such as gVisor when that matters.
- CPU use by several sandboxes at once is not throttled (no cgroups); only per-call CPU time is capped.
- RLIMIT_AS bounds address space, not resident memory of the whole sandbox: a grader that forks up to the
  process limit can use up to nproc x memory. tmpfs scratch counts against host memory (bounded by its size).
- Without root, RLIMIT_NPROC counts all processes of the invoking user, so it is set to the user's current
  count plus `nproc` (best effort).
- The result channel is a pipe inside the grader's own process: code that `grade()` itself executes (for
  example model-written code run with `exec`) can forge the score. Run such code in a subprocess from grade().
- The module top level runs once per worker, inside the sandbox but under the parent's deadline only.

Fallback ("basic" mode) when namespaces are not permitted (e.g. a container without CAP_SYS_ADMIN and with
user namespaces disabled, or macOS): the same process model, rlimits, scrubbed environment, scratch cwd and
output caps, plus a Python-level `socket` block installed before user code runs. That block is not a
boundary: `ctypes`, `subprocess` and `os.system` reach the network; the host filesystem is readable and
writable with the invoking user's rights; `setsid` daemons escape the per-call kill. `SandboxPool.isolation`
reports which protections are active, and the test-suite skips (naming the limitation) what it cannot check.

Layout
------
- `protocol.py`: `SandboxLimits`, `SandboxResult`, the scrubbed environment and the message framing (stdlib only).
- `worker.py`: the program that runs inside the sandbox (`python -I worker.py --worker CONFIG`): namespace
  setup, privilege drop, rlimits, the fork-per-call loop (stdlib only; it loads `protocol.py` by path).
- `pool.py`: the parent side: `SandboxPool`, and `SharedPools` (the pools of one `GraderContext`).

How to run
----------
    from rft.graders.sandbox import SandboxPool, SandboxLimits
    pool = SandboxPool(size=2, limits=SandboxLimits(timeout_s=5))
    print(pool.run("def grade(sample, item):\\n    return 1.0\\n", {"output_text": "x"}, {}))
    print(pool.isolation)
    pool.close()

Python graders get their pool from the `GraderContext` they are built with (`sandbox`, `sandbox_workers`).
Benchmark: `python bench/grader_throughput.py`. Tests: `pytest tests/graders/test_grader_sandbox.py`.
"""

from rft.graders.sandbox.pool import SandboxPool, SandboxUnavailable, SharedPools, close_all_pools, describe_isolation
from rft.graders.sandbox.protocol import MAX_SOURCE_BYTES, SandboxLimits, SandboxResult, source_sha256

__all__ = ["MAX_SOURCE_BYTES", "SandboxLimits", "SandboxPool", "SandboxResult", "SandboxUnavailable", "SharedPools",
           "close_all_pools", "describe_isolation", "source_sha256"]
