"""Sandbox conformance, cases S1-S11 of shared/reference/reliability-tests.md section 2.

Cases that need OS isolation this machine cannot give (no namespaces, or root without a uid drop) are
skipped with the limitation named; none is passed silently. S7 and S10 live in test_grader_python.py.
"""

from __future__ import annotations

import os
import socket
import textwrap
import threading
import time

import pytest

from rft.graders import build, grade_many, make_sample
from rft.graders.sandbox import SandboxLimits, SandboxPool, describe_isolation

pytestmark = pytest.mark.timeout(120)


def G(code: str) -> str:
    return textwrap.dedent(code).lstrip()


def need(pool, *keys):
    iso = pool.isolation
    missing = [k for k in keys if not iso.get(k)]
    if missing:
        pytest.skip(f"this machine cannot enforce it: sandbox lacks {', '.join(missing)} ({describe_isolation(iso)})")


def host_pids_with(marker: str) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        out.append(int(d))
            except OSError:
                pass
    return out


def host_pids_of_uid(uid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    out.append(int(d))
            except OSError:
                pass
    return out


@pytest.fixture(scope="module")
def basic_pool():
    pool = SandboxPool(size=2, limits=SandboxLimits(timeout_s=2.0, memory_mb=768, output_bytes=4096, isolation="basic"), grace_s=2.0)
    yield pool
    pool.close()


def test_reports_what_it_enforces(sandbox_pool):
    iso = sandbox_pool.isolation
    assert iso["mode"] in ("namespaces", "basic")
    assert iso["network_namespace"] or iso["socket_block"]
    print("sandbox isolation:", describe_isolation(iso))


# --- S1: infinite loops and blocking calls ------------------------------------------------------------------

BLOCKERS = {
    "busy_loop": "while True:\n        pass",
    "sleep": "import time; time.sleep(1e6)",
    "input": "return float(input() or 0) if False else float(len(input()))",
    "event_wait": "import threading; threading.Event().wait()",
}


@pytest.mark.parametrize("name", list(BLOCKERS))
def test_s1_blocking_costs_one_timeout(sandbox_pool, name):
    body = BLOCKERS[name]
    if name == "input":
        res = sandbox_pool.run(f"def grade(sample, item):\n    {body}\n", {}, {}, timeout_s=1.0)
        # stdin is /dev/null: input() fails at once with EOFError instead of blocking.
        assert res.status == "error" and "EOFError" in res.error
        return
    assert sandbox_pool.run("def grade(s, i):\n    return 1.0\n", {}, {}).value == 1.0  # a warm worker to count
    before = dict(sandbox_pool.stats)
    res = sandbox_pool.run(f"def grade(sample, item):\n    {body}\n", {}, {}, timeout_s=1.0)
    # The worker enforced the wall clock itself (not the parent's longer deadline, which would have killed and
    # replaced the worker): it answered "timeout" after at least the limit, and it is still the same worker.
    assert res.status == "timeout" and "1 s wall-clock limit" in res.error, res
    assert res.seconds >= 0.9
    ok = sandbox_pool.run("def grade(s, i):\n    return 1.0\n", {}, {})
    assert ok.value == 1.0  # the next sample is graded, by a worker that survived
    assert sandbox_pool.stats["workers_replaced"] == before["workers_replaced"]
    assert sandbox_pool.stats["workers_started"] == before["workers_started"]


def test_s1_cpu_time_limit(sandbox_pool):
    # A CPU limit below the wall clock: the child is killed by RLIMIT_CPU, not by the timeout.
    before = dict(sandbox_pool.stats)
    res = sandbox_pool.run("def grade(s, i):\n    while True:\n        pass\n", {}, {}, timeout_s=10.0, cpu_s=1.0)
    assert res.status == "cpu_limit", res  # a wall-clock kill would say "timeout"
    assert "more than 1 s of CPU time" in res.error
    assert sandbox_pool.stats["timeouts"] == before["timeouts"]


def test_s1_python_grader_timeout_is_a_server_error(python_sandbox, grader_context):
    r = build({"type": "python", "source": "def grade(s, i):\n    while True:\n        pass\n"}, context=grader_context).grade(make_sample("x"), {})
    assert r.score is None and r.error == "python_grader_server_error" and r.details.startswith("timeout:")


def test_s1_basic_mode_timeout(basic_pool):
    res = basic_pool.run("def grade(s, i):\n    while True:\n        pass\n", {}, {}, timeout_s=1.0)
    assert res.status == "timeout"
    assert basic_pool.run("def grade(s, i):\n    return 2.0\n", {}, {}).value == 2.0


# --- S2: memory bombs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    "x = bytearray(10**11)",
    "x = []\n    while True:\n        x.append(bytearray(10**7))",
])
def test_s2_memory_bomb(sandbox_pool, body):
    # A generous wall clock: filling 768 MB takes seconds on a loaded machine, and what is tested is the memory
    # limit (a timeout here would be the machine's speed, not the sandbox's behaviour).
    res = sandbox_pool.run(f"def grade(sample, item):\n    {body}\n    return 1.0\n", {}, {}, timeout_s=60.0)
    assert res.status == "error" and "MemoryError" in res.error and "memory limit" in res.error, res
    assert sandbox_pool.run("def grade(s, i):\n    return 1.0\n", {}, {}).value == 1.0  # the worker is healthy


# --- S3: process bombs and orphans -------------------------------------------------------------------------------

def test_s3_process_limit(sandbox_pool):
    need(sandbox_pool, "uid_dropped")  # as root without a uid drop RLIMIT_NPROC is not enforced
    res = sandbox_pool.run(G("""
        import os, time
        def grade(sample, item):
            n = 0
            try:
                while n < 10000:
                    if os.fork() == 0:
                        time.sleep(100)
                        os._exit(0)
                    n += 1
            except OSError:
                return float(n)
            return -1.0
    """), {}, {})
    assert res.status == "ok" and 0 < res.value < 64, res
    uid = sandbox_pool.isolation["uid"]
    time.sleep(0.05)
    assert len(host_pids_of_uid(uid)) <= sandbox_pool.size  # only the workers themselves are left


def test_s3_fork_bomb(sandbox_pool):
    need(sandbox_pool, "uid_dropped")
    res = sandbox_pool.run("import os\ndef grade(s, i):\n    while True:\n        os.fork()\n", {}, {}, timeout_s=3.0)
    assert res.status in ("error", "timeout"), res
    assert sandbox_pool.run("def grade(s, i):\n    return 1.0\n", {}, {}).value == 1.0


ORPHANS = G("""
    import os, subprocess, multiprocessing, time
    def grade(sample, item):
        marker = item["marker"]
        subprocess.Popen(["sleep", marker])                        # a plain child
        if os.fork() == 0:                                         # a double-forked, setsid daemon
            os.setsid()
            if os.fork() == 0:
                os.execvp("sleep", ["sleep", marker])
            os._exit(0)
        p = multiprocessing.get_context("fork").Process(target=time.sleep, args=(1000,))
        p.start()
        time.sleep(0.3)
        return 1.0 if item.get("return") else time.sleep(100)
""")


@pytest.mark.parametrize("returns", [True, False], ids=["after_return", "after_timeout"])
def test_s3_no_descendants_survive(sandbox_pool, returns):
    need(sandbox_pool, "pid_namespace")
    marker = f"{4000 + (os.getpid() % 1000)}.{int(returns)}517"
    res = sandbox_pool.run(ORPHANS, {}, {"marker": marker, "return": returns}, timeout_s=1.5)
    assert res.status == ("ok" if returns else "timeout"), res
    assert host_pids_with(marker) == []


def test_s3_basic_mode_kills_setsid_daemons(basic_pool):
    marker = f"{5000 + (os.getpid() % 1000)}.733"
    res = basic_pool.run(ORPHANS, {}, {"marker": marker, "return": True}, timeout_s=2.0)
    assert res.status == "ok", res
    deadline = time.monotonic() + 2
    while host_pids_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host_pids_with(marker) == []


# --- S4: no network -------------------------------------------------------------------------------------------------

@pytest.fixture
def local_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    accepted = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                accepted.append(1)
                conn.close()
            except OSError:
                pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    t.join(2)
    srv.close()


NET_PROBE = G("""
    import socket, subprocess, sys
    def grade(sample, item):
        blocked = 0
        try:                                   # the host's loopback (a dashboard/API port)
            s = socket.create_connection(("127.0.0.1", item["port"]), timeout=1)
            s.close()
        except OSError:
            blocked += 1
        try:                                   # is there any route? (UDP connect sends no packet)
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.connect(("192.0.2.1", 53))
        except OSError:
            blocked += 1
        try:
            socket.getaddrinfo("localhost", 80)
        except OSError:
            blocked += 1
        # the same from a child interpreter (the Python-level socket block does not reach it)
        code = f"import socket; socket.create_connection(('127.0.0.1', {item['port']}), timeout=1)"
        rc = subprocess.run([sys.executable, "-c", code], capture_output=True).returncode
        blocked += rc != 0
        return float(blocked)
""")


def test_s4_no_network(sandbox_pool, local_server):
    need(sandbox_pool, "network_namespace")
    port, accepted = local_server
    res = sandbox_pool.run(NET_PROBE, {}, {"port": port}, timeout_s=10)
    assert res.status == "ok" and res.value == 4.0, res
    assert accepted == []
    ifaces = sandbox_pool.run("import socket\ndef grade(s, i):\n    return float(len(socket.if_nameindex()))\n", {}, {})
    assert ifaces.value == 1.0  # loopback only, and it is down


def test_s4_basic_mode_blocks_python_sockets_only(basic_pool, local_server):
    port, accepted = local_server
    res = basic_pool.run(NET_PROBE, {}, {"port": port}, timeout_s=10)
    assert res.status == "ok" and res.value >= 3.0  # Python-level socket calls are refused ...
    pytest.xfail("basic mode: a child interpreter (subprocess, ctypes) still reaches the network "
                 f"(probe blocked {res.value:g}/4, the host server saw {len(accepted)} connection(s))")


# --- S5: filesystem and secrets ------------------------------------------------------------------------------------

def test_s5_host_files_and_secrets_are_out_of_reach(sandbox_pool, tmp_path, monkeypatch):
    need(sandbox_pool, "mount_namespace")
    answer_key = tmp_path / "answers.jsonl"
    answer_key.write_text('{"answer": "42"}\n')
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setenv("HF_TOKEN", "hf_sandbox_secret_123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-sandbox-secret-456")
    # A fresh pool, so its workers start with the secrets in the parent's environment.
    with SandboxPool(size=1, limits=sandbox_pool.limits) as pool:
        probe = G("""
            import os
            def grade(sample, item):
                leaks = []
                for path in item["paths"]:
                    try:
                        with open(path, "rb") as f:
                            leaks.append(path + ": " + f.read(40).decode("latin-1"))
                    except OSError:
                        pass
                for d in item["dirs"]:
                    try:
                        leaks.append(d + ": " + ",".join(os.listdir(d)))
                    except OSError:
                        pass
                env = dict(os.environ)
                for k in ("HF_TOKEN", "OPENAI_API_KEY"):
                    if k in env:
                        leaks.append("env " + k)
                for p in ("/proc/self/environ", "/proc/1/environ", f"/proc/{item['parent']}/environ"):
                    try:
                        data = open(p, "rb").read()
                        if b"secret" in data:
                            leaks.append(p)
                    except OSError:
                        pass
                for target in item["writes"]:
                    try:
                        with open(target, "w") as f:
                            f.write("x")
                        leaks.append("wrote " + target)
                    except OSError:
                        pass
                with open("scratch_ok.txt", "w") as f:       # the scratch directory is writable
                    f.write("fine")
                print(*leaks, sep=chr(10))
                return float(len(leaks))
        """)
        item = {
            "paths": [str(answer_key), str(ckpt / "model.safetensors"), "/etc/passwd", "/etc/shadow",
                      os.path.abspath("pyproject.toml")] + [os.path.expanduser(p) for p in (
                      "~/.ssh/id_rsa", "~/.netrc", "~/.bash_history", "~/.cache/huggingface/token", "~/.git-credentials")],
            # The home directory itself may show the read-only interpreter (e.g. ~/.pyenv); its secrets must not.
            "dirs": [os.path.expanduser(d) for d in ("~/.ssh", "~/.cache", "~/.config")] + [str(tmp_path), os.path.abspath("src"), os.path.abspath("tests")],
            "parent": os.getpid(),
            "writes": [str(tmp_path / "written_by_grader"), "/usr/written_by_grader", "/written_by_grader"],
        }
        res = pool.run(probe, {}, item)
        assert res.status == "ok", res
        assert res.value == 0.0, f"leaks:\n{res.stdout}"
        assert not (tmp_path / "written_by_grader").exists()


def test_s5_scratch_is_emptied_between_calls(sandbox_pool):
    writer = "import os\ndef grade(s, i):\n    open('left_behind', 'w').write('x')\n    open('/tmp/left_behind', 'w').write('x') if os.path.isdir('/tmp') else None\n    return 1.0\n"
    reader = "import os\ndef grade(s, i):\n    return float(len(os.listdir('.')))\n"
    for _ in range(sandbox_pool.size + 1):  # reach every worker
        assert sandbox_pool.run(writer, {}, {}).value == 1.0
        assert sandbox_pool.run(reader, {}, {}).value == 0.0


def test_s5_environment_is_scrubbed_even_in_basic_mode(basic_pool):
    res = basic_pool.run("import os\ndef grade(s, i):\n    return float(sorted(os.environ) == sorted(i['allowed']))\n",
                         {}, {"allowed": ["PATH", "LANG", "LC_ALL", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED", "OMP_NUM_THREADS",
                                          "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "MALLOC_ARENA_MAX",
                                          "HOME", "TMPDIR"]})
    assert res.value == 1.0, res


# --- S6: Python-level escapes ------------------------------------------------------------------------------------

ESCAPES = {
    "sys_modules_os_system": "import sys\nsys.modules['os'].system('touch ' + m)",
    "importlib_os_open": "import importlib\nimportlib.import_module('os').open(m, 0o101)",
    "subclasses_walk": "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0].__init__.__globals__['system']('touch ' + m)",
    "ctypes_libc": "import ctypes\nctypes.CDLL(None).system(('touch ' + m).encode())",
    "loader_load_module": "import math, warnings\nwarnings.simplefilter('ignore')\nos_ = math.__loader__.load_module('posix')\nos_.close(os_.open(m, 0o101))",
    "builtins_open": "__builtins__['open'](m, 'w').close() if isinstance(__builtins__, dict) else __builtins__.open(m, 'w').close()",
    "chroot_escape": "import ctypes, os\nlibc = ctypes.CDLL(None)\nos.makedirs('x', exist_ok=True)\nlibc.chroot(b'x')\n[os.chdir('..') for _ in range(50)]\nlibc.chroot(b'.')\nopen(m, 'w').close()",
}


@pytest.mark.parametrize("name", list(ESCAPES))
def test_s6_escapes_stay_inside(sandbox_pool, tmp_path, name):
    need(sandbox_pool, "mount_namespace")
    marker = str(tmp_path / f"marker_{name}")
    code = "def grade(sample, item):\n    m = item['marker']\n    try:\n" + textwrap.indent(ESCAPES[name], "        ") + \
        "\n    except Exception:\n        pass\n    return 1.0\n"
    res = sandbox_pool.run(code, {}, {"marker": marker})
    assert res.status == "ok", res  # the code ran ...
    assert not os.path.exists(marker)  # ... and nothing appeared on the host


# --- S8: output floods ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    "print('x' * 10**8)",
    "import os\n    os.write(1, b'y' * 10**7)\n    os.write(2, b'z' * 10**7)",
    "import sys\n    for _ in range(10**5):\n        sys.stdout.write('w' * 100 + '\\n')",
])
def test_s8_output_is_capped(sandbox_pool, body):
    res = sandbox_pool.run(f"def grade(sample, item):\n    {body}\n    return 1.0\n", {}, {}, timeout_s=20)
    cap = sandbox_pool.limits.output_bytes
    assert res.status == "ok" and res.value == 1.0, res
    assert res.stdout_truncated or res.stderr_truncated
    assert len(res.stdout) <= cap + 200 and len(res.stderr) <= cap + 200
    assert "[output truncated" in (res.stdout + res.stderr)


# --- S9: reward hacking by control flow -----------------------------------------------------------------------------

@pytest.mark.parametrize("body, kind", [
    ("import sys\n    print('ALL TESTS PASSED')\n    sys.exit(0)", "python_grader_runtime_error"),
    ("import os\n    print('ALL TESTS PASSED', flush=True)\n    os._exit(0)", "python_grader_server_error"),
    ("import builtins\n    builtins.AssertionError = Exception\n    assert False, 'tests failed'", "python_grader_runtime_error"),
    ("raise SystemExit(0)", "python_grader_runtime_error"),
    ("raise KeyboardInterrupt", "python_grader_runtime_error"),
])
def test_s9_only_the_result_channel_scores(python_sandbox, body, kind, grader_context):
    r = build({"type": "python", "source": f"def grade(sample, item):\n    {body}\n"}, context=grader_context).grade(make_sample("x"), {})
    assert r.score is None and r.error == kind, r


# --- S11: one pathological sample in a batch ----------------------------------------------------------------------------

def test_s11_one_hung_sample_costs_one_timeout(python_sandbox, grader_context):
    pool = python_sandbox
    timeout = pool.limits.timeout_s
    source = G("""
        def grade(sample, item):
            if item["i"] == 17:
                while True:
                    pass
            return float(item["i"] % 2)
    """)
    g = build({"type": "python", "source": source}, context=grader_context)
    items = [{"i": i} for i in range(256)]
    before = dict(pool.stats)
    results = grade_many(g, [make_sample("x")] * 256, items, max_workers=pool.size)
    assert results[17].error == "python_grader_server_error" and results[17].details.startswith("timeout:")
    assert f"{timeout:g} s wall-clock limit" in results[17].details  # the worker's own limit, not the parent's deadline
    assert all(r.score == float(i % 2) for i, r in enumerate(results) if i != 17)
    # What one hung sample cost, counted rather than timed: one timeout, one call each, no worker lost or restarted.
    assert pool.stats["timeouts"] - before["timeouts"] == 1
    assert pool.stats["calls"] - before["calls"] == 256
    assert pool.stats["workers_replaced"] == before["workers_replaced"]
    # The pool is whole again: every slot answers, and none had to be started afresh.
    started = pool.stats["workers_started"]
    fast = grade_many(g, [make_sample("x")] * 8, [{"i": 1}] * 8, max_workers=pool.size)
    assert all(r.score == 1.0 for r in fast)
    assert pool.stats["workers_started"] == started and pool.stats["timeouts"] - before["timeouts"] == 1


def test_hung_module_top_level_replaces_the_worker():
    with SandboxPool(size=1, limits=SandboxLimits(timeout_s=1.0), grace_s=0.5) as pool:
        res = pool.run("while True:\n    pass\ndef grade(s, i):\n    return 1.0\n", {}, {})
        assert res.status == "timeout" and "replaced" in res.error
        assert pool.stats["workers_replaced"] == 1
        assert pool.run("def grade(s, i):\n    return 3.0\n", {}, {}).value == 3.0
        assert pool.stats["workers_started"] == 2


def test_dead_worker_is_replaced(sandbox_pool):
    with SandboxPool(size=1, limits=SandboxLimits(timeout_s=2.0)) as pool:
        assert pool.run("def grade(s, i):\n    return 1.0\n", {}, {}).value == 1.0
        w = pool._idle[0]
        os.kill(w.ns_pid or w.proc.pid, 9)
        w.proc.wait(5)
        assert pool.run("def grade(s, i):\n    return 2.0\n", {}, {}).value == 2.0
        assert pool.stats["workers_started"] == 2


def test_worker_outlives_the_thread_that_started_it():
    # Regression: PR_SET_PDEATHSIG fires when the parent *thread* exits; a worker started from a grade_many
    # thread must survive that thread.
    for mode in ("auto", "basic"):
        with SandboxPool(size=1, limits=SandboxLimits(timeout_s=2.0, isolation=mode)) as pool:
            t = threading.Thread(target=lambda: pool.run("def grade(s, i):\n    return 1.0\n", {}, {}))
            t.start()
            t.join()
            time.sleep(0.2)
            assert pool.run("def grade(s, i):\n    return 2.0\n", {}, {}).value == 2.0
            assert pool.stats["workers_started"] == 1, mode


def test_unprivileged_user_namespace_path(local_server):
    """The path a non-root developer gets: a user namespace, capabilities dropped instead of a uid change."""
    with SandboxPool(size=1, limits=SandboxLimits(timeout_s=2.0)) as pool:
        pool._force_userns = os.geteuid() == 0
        iso = pool.isolation
        if iso["mode"] != "namespaces":
            pytest.skip(f"this machine cannot enforce it: user namespaces unavailable ({describe_isolation(iso)})")
        assert iso["capabilities_dropped"] or iso["uid_dropped"]
        port, accepted = local_server
        assert pool.run(NET_PROBE, {}, {"port": port}, timeout_s=10).value == 4.0 and accepted == []
        probe = G("""
            import ctypes, os
            def grade(sample, item):
                ok = 0
                for target in ("/usr/x", "/x", item["host_file"]):
                    try:
                        open(target, "w").close()
                    except OSError:
                        ok += 1
                ok += ctypes.CDLL(None).mount(b"tmpfs", b"/usr", b"tmpfs", 0, None) != 0   # no capabilities left
                ok += not os.path.exists(item["host_file"].rsplit("/", 1)[0])
                return float(ok)
        """)
        host_file = os.path.abspath("tests/graders/should_not_exist_userns")
        assert pool.run(probe, {}, {"host_file": host_file}).value == 5.0
        assert not os.path.exists(host_file)
        assert pool.run("def grade(s, i):\n    while True:\n        pass\n", {}, {}, timeout_s=1.0).status == "timeout"


# --- disk: file size and scratch size ------------------------------------------------------------------------------

def test_file_size_limit(sandbox_pool):
    fsize = sandbox_pool.limits.fsize_mb
    res = sandbox_pool.run(G(f"""
        def grade(sample, item):
            with open("big.bin", "wb") as f:
                for _ in range({fsize} + 8):
                    f.write(b"0" * 2**20)
            return 1.0
    """), {}, {})
    assert res.status == "error" and "File too large" in res.error, res


def test_scratch_space_is_bounded(sandbox_pool):
    need(sandbox_pool, "mount_namespace")  # size-limited tmpfs scratch
    n = sandbox_pool.limits.scratch_mb // sandbox_pool.limits.fsize_mb + 2
    res = sandbox_pool.run(G(f"""
        def grade(sample, item):
            for i in range({n}):
                with open(f"part{{i}}.bin", "wb") as f:
                    for _ in range({sandbox_pool.limits.fsize_mb} - 1):
                        f.write(b"0" * 2**20)
            return 1.0
    """), {}, {})
    assert res.status == "error" and "No space left" in res.error, res


def test_extra_sys_path_is_importable(tmp_path):
    pkg = tmp_path / "mygraderlib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("def normalise(s):\n    return s.strip().lower()\n")
    for d in (tmp_path, pkg):  # a root-started sandbox runs as an unprivileged uid: it needs o+rx
        d.chmod(0o755)
    with SandboxPool(size=1, limits=SandboxLimits(timeout_s=2.0), extra_sys_path=[str(tmp_path)]) as pool:
        res = pool.run("from mygraderlib import normalise\ndef grade(s, i):\n    return float(normalise(' A ') == 'a')\n", {}, {})
        assert res.value == 1.0, res
