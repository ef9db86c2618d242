"""The sandbox worker: the program that runs inside the sandboxed process (standard library only).

What: `python -I worker.py --worker CONFIG` enters the namespaces the kernel allows and builds the read-only
root (`_setup_namespaces`), drops privileges, sets the rlimits, then serves calls from the pool (`_Worker`):
load a grader module once per sha256, fork one child per call, enforce the wall clock, capture output, kill
every descendant and empty scratch afterwards. See the package docstring for what is and is not protected.

Simplified: Linux namespaces without seccomp or cgroups (see the package docstring).

Why standard library only: the pool runs this file as a script in isolated mode, where neither this
directory nor rft's source tree is on sys.path (and must not be: grader code would see them), and in namespace
mode only the interpreter and site-packages are mounted. Its one sibling, `protocol.py` (also stdlib only), is
loaded from its path before the sandbox is entered.
How to run: started by `rft.graders.sandbox.SandboxPool`; never by hand.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import json
import os
import platform
import select
import shutil
import signal
import sys
import time
import traceback


def _load_protocol():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "protocol.py")
    spec = importlib.util.spec_from_file_location("_rft_sandbox_protocol", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


_protocol = _load_protocol()
HEADER, MAX_MESSAGE, SCRUBBED_ENV = _protocol.HEADER, _protocol.MAX_MESSAGE, _protocol.SCRUBBED_ENV
send_message, recv_message = _protocol.send_message, _protocol.recv_message

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41}

class _Libc:
    def __init__(self) -> None:
        self.lib = ctypes.CDLL(None, use_errno=True)
        self.lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

    def check(self, rc: int, what: str) -> None:
        if rc != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"{what}: {os.strerror(e)}")

    def unshare(self, flags: int) -> None:
        self.check(self.lib.unshare(ctypes.c_int(flags)), "unshare")

    def mount(self, src, dst, fstype, flags, data=None) -> None:
        enc = lambda s: s.encode() if isinstance(s, str) else s  # noqa: E731
        self.check(self.lib.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {dst}")

    def umount2(self, target: str, flags: int) -> None:
        self.check(self.lib.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")

    def pivot_root(self, new: str, old: str) -> None:
        nr = _SYS_PIVOT_ROOT.get(platform.machine())
        if nr is None:
            raise OSError(errno.ENOSYS, f"pivot_root syscall number unknown for {platform.machine()}")
        self.check(self.lib.syscall(ctypes.c_long(nr), new.encode(), old.encode()), "pivot_root")

    def prctl(self, option: int, arg: int) -> None:
        self.check(self.lib.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0),
                                  ctypes.c_ulong(0), ctypes.c_ulong(0)), f"prctl {option}")

    def drop_all_capabilities(self) -> None:
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

        hdr = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
        data = (Data * 2)()
        self.check(self.lib.capset(ctypes.byref(hdr), data), "capset")


def _statvfs_lock_flags(path: str) -> int:
    """Mount flags a read-only bind remount must keep (inside a user namespace, dropping them is EPERM)."""
    try:
        f = os.statvfs(path).f_flag
    except OSError:
        return 0
    out = 0
    for st, ms in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC)):
        if f & st:
            out |= ms
    return out


def _bind_paths(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Host directories the sandboxed interpreter needs (plus `extra`), read-only."""
    paths = ["/usr", "/opt/conda"] if os.path.isdir("/opt/conda") else ["/usr"]
    for p in ("/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.isdir(p) and not os.path.islink(p):
            paths.append(p)
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths += prefixes
    # Other sys.path entries only when they are package directories: an editable install's source tree (rft's
    # own `src/`, a project checkout) is not exposed.
    for p in sys.path:
        if p and os.path.isdir(p) and os.path.basename(p.rstrip("/")) in ("site-packages", "dist-packages"):
            paths.append(p)
    paths += [p for p in extra if os.path.isdir(p)]
    # Keep only outermost directories.
    out: list[str] = []
    for p in sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)}, key=len):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def _setup_namespaces(cfg: dict, libc: _Libc, as_root: bool, scratch_mb: int) -> None:
    """Runs as PID 1 of a fresh PID namespace with CAP_SYS_ADMIN in its mount namespace: build the new root."""
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = cfg["host_dir"] + "/root"
    os.makedirs(root, exist_ok=True)
    libc.mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755")
    # Writable, size-limited scratch first, so that a read-only bind below /tmp (an extra_sys_path) lands on top.
    uid_opts = f",uid={cfg['uid']},gid={cfg['uid']}" if as_root else ""
    for d, mode in (("/scratch", "0700"), ("/tmp", "1777")):
        os.makedirs(root + d)
        libc.mount("tmpfs", root + d, "tmpfs", MS_NOSUID | MS_NODEV, f"size={scratch_mb}m,mode={mode}{uid_opts}")
    binds = _bind_paths(cfg.get("extra_sys_path") or ())
    for src in binds:
        dst = root + src
        os.makedirs(dst, exist_ok=True)
        libc.mount(src, dst, None, MS_BIND | MS_REC)
        libc.mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | _statvfs_lock_flags(src))
    for link in ("/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.islink(link) and not os.path.lexists(root + link):
            os.symlink(os.readlink(link), root + link)
    # Minimal /etc: the dynamic-linker cache (needed to load shared libraries by name), timezone, alternatives.
    os.makedirs(root + "/etc", exist_ok=True)
    for name in ("ld.so.cache", "ld.so.conf"):
        src = "/etc/" + name
        if os.path.isfile(src) and not src.startswith(tuple(b + "/" for b in binds)):
            open(root + src, "w").close()
            libc.mount(src, root + src, None, MS_BIND)
            libc.mount(None, root + src, None, MS_BIND | MS_REMOUNT | MS_RDONLY | _statvfs_lock_flags(src))
    for name in ("ld.so.conf.d", "alternatives"):
        src = "/etc/" + name
        if os.path.isdir(src):
            os.makedirs(root + src, exist_ok=True)
            libc.mount(src, root + src, None, MS_BIND)
            libc.mount(None, root + src, None, MS_BIND | MS_REMOUNT | MS_RDONLY | _statvfs_lock_flags(src))
    if os.path.islink("/etc/localtime"):
        os.symlink(os.readlink("/etc/localtime"), root + "/etc/localtime")
    # /dev: a few character devices bound from the host, shm, and the fd links.
    os.makedirs(root + "/dev", exist_ok=True)
    libc.mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID, "size=64k,mode=0755")
    for dev in ("null", "zero", "full", "random", "urandom"):
        open(root + "/dev/" + dev, "w").close()
        libc.mount("/dev/" + dev, root + "/dev/" + dev, None, MS_BIND)
    os.makedirs(root + "/dev/shm")
    libc.mount("tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, root + "/dev/" + name)
    os.makedirs(root + "/proc")
    libc.mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(root + "/.oldroot")
    libc.pivot_root(root, root + "/.oldroot")
    os.chdir("/")
    libc.umount2("/.oldroot", MNT_DETACH)
    os.rmdir("/.oldroot")
    libc.mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _set_limits(cfg: dict, *, nproc_base: int = 0) -> None:
    import resource

    def lim(which, soft, hard=None):
        hard = soft if hard is None else hard
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError):
            pass  # e.g. a hard limit already lower than ours: keep the stricter one

    mem = cfg["memory_mb"] * 1024 * 1024
    lim(resource.RLIMIT_AS, mem)
    lim(resource.RLIMIT_FSIZE, cfg["fsize_mb"] * 1024 * 1024)
    lim(resource.RLIMIT_CORE, 0)
    if hasattr(resource, "RLIMIT_NPROC"):
        lim(resource.RLIMIT_NPROC, nproc_base + cfg["nproc"])


def _world_traversable(paths: list[str]) -> bool:
    for p in paths:
        cur = p
        while cur and cur != "/":
            try:
                if not os.stat(cur).st_mode & 0o001:
                    return False
            except OSError:
                return False
            cur = os.path.dirname(cur)
    return True


def _count_user_processes(uid: int) -> int:
    n = 0
    try:
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/status") as f:
                        for line in f:
                            if line.startswith("Uid:"):
                                n += int(line.split()[1]) == uid
                                break
                except OSError:
                    pass
    except OSError:
        return 0
    return n


class _Capture:
    def __init__(self, cap: int):
        self.cap, self.buf, self.total = cap, bytearray(), 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap - len(self.buf)
        if room > 0:
            self.buf += data[:room]

    def text(self) -> str:
        s = self.buf.decode("utf-8", "replace")
        if self.total > len(self.buf):
            s += f"\n[output truncated: {self.total} bytes written, first {len(self.buf)} kept]"
        return s

    @property
    def truncated(self) -> bool:
        return self.total > len(self.buf)


class _Worker:
    """The zygote: loads grader modules, forks one child per call."""

    def __init__(self, cfg: dict, req_fd: int, resp_fd: int, isolation: dict):
        self.cfg, self.req_fd, self.resp_fd, self.isolation = cfg, req_fd, resp_fd, isolation
        self.modules: dict[str, dict] = {}
        self.sources: dict[str, str] = {}
        self.scratch = isolation["scratch"]
        self.is_pid1 = os.getpid() == 1

    def serve(self) -> None:
        send_message(self.resp_fd, {"op": "hello", "isolation": self.isolation})
        while True:
            msg = recv_message(self.req_fd)
            if msg is None or msg.get("op") == "exit":
                return
            t0 = time.monotonic()
            try:
                out = self.call(msg)
            except Exception as e:  # a bug in the worker itself, not in the grader
                out = {"status": "crash", "error": f"sandbox worker error: {e!r}", "traceback": traceback.format_exc()[-4000:]}
            out["id"] = msg.get("id")
            out["loaded"] = msg.get("sha") in self.modules
            out["seconds"] = time.monotonic() - t0
            send_message(self.resp_fd, out)

    # -- loading -------------------------------------------------------------------------------------------
    def load(self, sha: str, source: str) -> dict | None:
        """Execute the module top level once; returns an error dict or None."""
        import io

        class Sink(io.TextIOBase):  # top-level prints are discarded (and cannot fill memory)
            def write(self, s):
                return len(s)

        ns: dict = {"__name__": "grader", "__builtins__": __builtins__}
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = Sink()
        try:
            code = compile(source, "grader.py", "exec")
            exec(code, ns)  # noqa: S102 - this is the sandbox
        except BaseException as e:  # SystemExit and KeyboardInterrupt from the top level too
            return {"status": "error", "error": f"the grader module failed to load: {_exc_text(e)}",
                    "traceback": _user_traceback(e)}
        finally:
            sys.stdout, sys.stderr = saved
            os.chdir(self.scratch)
        if not callable(ns.get("grade")):
            return {"status": "error", "error": "the grader source defines no function grade(sample, item)"}
        self.modules[sha] = ns
        self.sources[sha] = source
        return None

    # -- one call --------------------------------------------------------------------------------------------
    def call(self, msg: dict) -> dict:
        sha = msg["sha"]
        if sha not in self.modules:
            if "source" not in msg:
                return {"status": "need_source"}
            err = self.load(sha, msg["source"])
            if err:
                return err
        grade = self.modules[sha]["grade"]
        timeout = float(msg.get("timeout") or self.cfg["timeout_s"])
        # Default CPU limit: the wall clock plus a second, so a single-threaded busy loop is reported as a timeout;
        # the CPU limit then only fires first for graders burning several cores at once.
        cpu = float(msg.get("cpu") or self.cfg["cpu_s"] or timeout + 1.0)
        cap = int(self.cfg["output_bytes"])
        res_r, res_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the call child
            try:
                os.close(res_r), os.close(out_r), os.close(err_r)
                os.close(self.req_fd), os.close(self.resp_fd)
                import linecache

                # Tracebacks show the grader's source lines.
                source = self.sources[sha]
                linecache.cache["grader.py"] = (len(source), None, source.splitlines(True), "grader.py")
                self._child(grade, msg.get("sample"), msg.get("item"), res_w, out_w, err_w, cpu)
            finally:
                os._exit(70)
        os.close(res_w), os.close(out_w), os.close(err_w)
        self._last_pgid = pid  # the child makes itself a process-group leader
        deadline = time.monotonic() + timeout
        outs = {out_r: _Capture(cap), err_r: _Capture(cap)}
        result = bytearray()
        open_fds = {res_r, out_r, err_r}
        status = None
        pidfd = None

        def read_ready(fds) -> None:
            """One read from each ready pipe: the result (kept up to MAX_MESSAGE) or captured output."""
            nonlocal result
            for fd in fds:
                data = os.read(fd, 1 << 16)
                if not data:
                    open_fds.discard(fd)
                elif fd == res_r:
                    if len(result) < MAX_MESSAGE:
                        result += data
                else:
                    outs[fd].feed(data)

        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                pidfd = None
        exited, wstatus, rusage = False, 0, None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                status = "timeout"
                break
            watch = list(open_fds) + ([pidfd] if pidfd is not None else [])
            r, _, _ = select.select(watch, [], [], min(left, 0.05 if pidfd is None else left))
            read_ready([fd for fd in r if fd != pidfd])
            if pidfd is None or pidfd in r or res_r not in open_fds:
                wpid, wstatus, rusage = os.wait4(pid, os.WNOHANG)
                if wpid == pid:
                    exited = True
                    break
        if pidfd is not None:
            os.close(pidfd)
        if not exited:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, wstatus, rusage = os.wait4(pid, 0)
        self._kill_all()
        # The child has exited: whatever it wrote is in the pipes. Drain them (descendants are dead by now,
        # so every write end is closed and EOF comes quickly).
        end = time.monotonic() + 1.0
        while open_fds and time.monotonic() < end:
            r, _, _ = select.select(list(open_fds), [], [], 0.1)
            read_ready(r)
        for fd in (res_r, out_r, err_r):
            os.close(fd)
        self._clean_scratch()
        out = {"stdout": outs[out_r].text(), "stderr": outs[err_r].text(),
               "stdout_truncated": outs[out_r].truncated, "stderr_truncated": outs[err_r].truncated}
        if status == "timeout":
            out.update(status="timeout", error=f"grade() did not return within the {timeout:g} s wall-clock limit; killed")
            return out
        parsed = _parse_child_result(bytes(result), pid)
        if parsed is not None:
            out.update(parsed)
            return out
        if os.WIFSIGNALED(wstatus):
            sig = os.WTERMSIG(wstatus)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            used = (rusage.ru_utime + rusage.ru_stime) if rusage is not None else 0.0
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and used >= cpu):
                out.update(status="cpu_limit", error=f"grade() used more than {cpu:g} s of CPU time; killed ({name})")
            else:
                out.update(status="crash", error=f"the grader process was killed by {name}")
        else:
            code = os.WEXITSTATUS(wstatus)
            out.update(status="crash", error=f"the grader process exited (code {code}) before grade() returned a result")
        return out

    def _child(self, grade, sample, item, res_w, out_w, err_w, cpu) -> None:
        import io
        import math
        import numbers
        import resource

        os.setpgid(0, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.close(out_w), os.close(err_w)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="replace", write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="replace", write_through=True)
        # Per-call CPU limit: the child's CPU clock starts at zero. SIGXCPU at the soft limit, SIGKILL at hard.
        soft = max(1, int(math.ceil(cpu)))
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
        except (ValueError, OSError):
            pass
        me = os.getpid()
        try:
            value = grade(sample, item)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                msg = {"status": "error", "error": f"grade() must return a float, got {type(value).__name__}: {_short_repr(value)}"}
            else:
                f = float(value)
                if math.isfinite(f):
                    msg = {"status": "ok", "value": f}
                else:
                    msg = {"status": "error", "error": f"grade() returned {f!r}; a score must be a finite number"}
        except MemoryError as e:
            msg = {"status": "error", "error": f"MemoryError: grade() exceeded the memory limit ({self.cfg['memory_mb']} MB address space)",
                   "traceback": _user_traceback(e)}
        except BaseException as e:  # SystemExit from sys.exit() is a failure, never a pass
            msg = {"status": "error", "error": _exc_text(e), "traceback": _user_traceback(e)}
        msg["pid"] = me
        try:
            sys.stdout.flush(), sys.stderr.flush()
        except Exception:
            pass
        try:
            send_message(res_w, msg)
        except Exception:
            pass

    def _kill_all(self) -> None:
        """Kill and reap everything the (already reaped) call child started."""
        if self.is_pid1:
            # PID 1 of the namespace: kill(-1) reaches every other process in it, daemons included. Repeat until
            # none is left, so a process forked while we were killing does not survive.
            while True:
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    wpid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return
                if wpid == 0:
                    time.sleep(0.001)
            return
        # Basic mode: the call child's process group, then (Linux) every process re-parented to us as the
        # child subreaper, which catches setsid() daemons that left the group.
        try:
            os.killpg(self._last_pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, TypeError):
            pass
        for _ in range(100):
            kids = _children_of(os.getpid())
            for k in kids:
                try:
                    os.kill(k, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            while True:
                try:
                    wpid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if wpid == 0:
                    break
            if not kids:
                break

    _last_pgid: int | None = None

    def _clean_scratch(self) -> None:
        dirs = [self.scratch] + (["/tmp", "/dev/shm"] if self.isolation.get("mount_namespace") else [])
        if not hasattr(self, "_binds"):
            # Read-only binds can sit below /tmp (a venv or checkout under /tmp): never walk into them. Walking
            # a read-only venv with rmtree after every call cost ~300 ms per call and deleted nothing.
            self._binds = _bind_paths(self.cfg.get("extra_sys_path") or ()) if self.isolation.get("mount_namespace") else []
        for d in dirs:
            try:
                for entry in os.scandir(d):
                    if any(b == entry.path or b.startswith(entry.path + "/") for b in self._binds):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            shutil.rmtree(entry.path, ignore_errors=True)
                        else:
                            os.unlink(entry.path)
                    except OSError:
                        pass
            except OSError:
                pass
        try:
            os.chdir(self.scratch)
        except OSError:
            pass


def _parse_child_result(data: bytes, pid: int) -> dict | None:
    """The first well-formed message written by the call child itself (not by a process it forked)."""
    pos = 0
    while pos + HEADER.size <= len(data):
        (n,) = HEADER.unpack_from(data, pos)
        body = data[pos + HEADER.size: pos + HEADER.size + n]
        pos += HEADER.size + n
        if len(body) < n:
            return None
        try:
            msg = json.loads(body)
        except ValueError:
            return None
        if isinstance(msg, dict) and msg.get("pid") == pid and msg.get("status") in ("ok", "error"):
            msg.pop("pid", None)
            if msg["status"] == "ok" and not isinstance(msg.get("value"), (int, float)):
                return None
            return msg
    return None


def _children_of(ppid: int) -> list[int]:
    """Pids whose parent is `ppid` (Linux /proc; empty elsewhere)."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for d in names:
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read()
            # "pid (comm) state ppid ...": comm may contain spaces and parentheses; split after the last ')'.
            fields = stat[stat.rindex(b")") + 2:].split()
            if int(fields[1]) == ppid:
                out.append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    return out


def _exc_text(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:
        text = "<exception message could not be rendered>"
    if len(text) > 2000:
        text = text[:2000] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _user_traceback(e: BaseException) -> str:
    """The traceback from the grader's frames on (the sandbox's own frame is dropped), tail only."""
    tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
    try:
        return _tail("".join(traceback.format_exception(type(e), e, tb)))
    except Exception:
        return _tail(traceback.format_exc())


def _tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def _short_repr(v) -> str:
    try:
        r = repr(v)
    except Exception:
        r = "<unrepresentable>"
    return r if len(r) <= 200 else r[:200] + "..."


def _block_sockets() -> None:
    """Basic mode only: make Python-level socket creation fail. Not a boundary (ctypes, subprocess bypass it)."""
    import socket

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "network access is disabled in the grader sandbox")

    class NoSocket(socket.socket):
        def __init__(self, *a, **k):
            denied()

    socket.socket = NoSocket  # type: ignore[misc]
    socket.create_connection = denied  # type: ignore[assignment]
    socket.getaddrinfo = denied  # type: ignore[assignment]
    socket.socketpair = denied  # type: ignore[assignment]


def _worker_main(argv: list[str]) -> None:
    cfg = json.loads(argv[0])
    req_fd, resp_fd = cfg["req_fd"], cfg["resp_fd"]
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if cfg.get("force_userns"):  # tests: take the unprivileged (user namespace) path even when root
        as_root = False
    isolation = {"mode": "basic", "network_namespace": False, "pid_namespace": False, "mount_namespace": False,
                 "uid_dropped": False, "capabilities_dropped": False, "socket_block": False, "reason": ""}
    use_ns = cfg["isolation"] in ("auto", "namespaces") and sys.platform.startswith("linux")
    uid = cfg["uid"]
    if use_ns:
        libc = _Libc()
        real_uid, real_gid = os.getuid(), os.getgid()
        try:
            flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
            if not as_root:
                flags |= CLONE_NEWUSER
            libc.unshare(flags)
            if not as_root:
                with open("/proc/self/setgroups", "w") as f:
                    f.write("deny")
                with open("/proc/self/uid_map", "w") as f:
                    f.write(f"0 {real_uid} 1")
                with open("/proc/self/gid_map", "w") as f:
                    f.write(f"0 {real_gid} 1")
        except OSError as e:
            if cfg["isolation"] == "namespaces":
                send_message(resp_fd, {"op": "fatal", "error": f"cannot create namespaces: {e}"})
                os._exit(3)
            use_ns = False
            isolation["reason"] = f"namespaces not permitted here ({e})"
        else:
            # The next fork becomes PID 1 of the new PID namespace. This process stays outside, tells the
            # parent the child's pid (so it can kill PID 1, which takes the whole namespace down), and waits.
            go_r, go_w = os.pipe()
            child = os.fork()
            if child:
                os.close(go_r)
                send_message(resp_fd, {"op": "pid", "pid": child})
                os.close(go_w)
                os.close(req_fd)
                os.close(resp_fd)
                signal.signal(signal.SIGTERM, lambda *a: (os.kill(child, signal.SIGKILL), os._exit(1)))
                while True:
                    try:
                        _, st = os.waitpid(child, 0)
                        break
                    except InterruptedError:
                        continue
                os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 1)
            os.close(go_w)
            os.read(go_r, 1)  # wait until the parent knows our pid
            os.close(go_r)
            try:
                _setup_namespaces(cfg, libc, as_root, cfg["scratch_mb"])
                isolation.update(mode="namespaces", network_namespace=True, pid_namespace=True, mount_namespace=True)
            except OSError as e:
                # Half-built mounts are not a safe state to fall back from: refuse, and let the parent decide.
                send_message(resp_fd, {"op": "fatal", "error": f"sandbox filesystem setup failed: {e}"})
                os._exit(3)
    if use_ns:
        scratch = "/scratch"
    else:
        scratch = cfg["host_dir"] + "/scratch"
        os.makedirs(scratch, exist_ok=True)
        if as_root:
            os.chown(scratch, uid, uid)
            os.chmod(scratch, 0o700)
    os.chdir(scratch)
    os.environ.clear()
    os.environ.update(SCRUBBED_ENV)
    os.environ.update(HOME=scratch, TMPDIR=scratch)
    if cfg.get("extra_sys_path"):
        sys.path[:0] = [p for p in cfg["extra_sys_path"] if p not in sys.path]
    nproc_base = 0
    # Import what the call child needs now: after the uid drop or pivot the files may be out of reach.
    import io, math, numbers, resource  # noqa: E401,F401

    if as_root and (use_ns or _world_traversable(_bind_paths(cfg.get("extra_sys_path") or ()))):
        # A slot-unique uid: RLIMIT_NPROC counts per uid, and files it creates are its own.
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        isolation["uid_dropped"] = True
    elif as_root:
        isolation["reason"] = "; ".join(filter(None, [isolation["reason"], "still root: the interpreter's files are not readable by other users"]))
    elif use_ns:
        _Libc().drop_all_capabilities()
        isolation["capabilities_dropped"] = True
        nproc_base = _count_user_processes(os.getuid())
    else:
        nproc_base = _count_user_processes(os.getuid())
    if sys.platform.startswith("linux"):
        libc = _Libc()
        opts = [(PR_SET_NO_NEW_PRIVS, 1)]
        if use_ns:
            # Our parent is the single-threaded intermediate process: die with it. (Not in basic mode: there the
            # parent is the rft process, and the death signal fires when the *thread* that started us exits.)
            opts.append((PR_SET_PDEATHSIG, signal.SIGKILL))
        else:
            opts.append((PR_SET_CHILD_SUBREAPER, 1))  # daemons that leave the call's group come back to us
        for opt, arg in opts:
            try:
                libc.prctl(opt, arg)
            except OSError:
                pass
    _set_limits(cfg, nproc_base=nproc_base)
    if not isolation["network_namespace"]:
        _block_sockets()
        isolation["socket_block"] = True
    isolation["scratch"] = scratch
    isolation["uid"] = os.getuid()
    _Worker(cfg, req_fd, resp_fd, isolation).serve()


if __name__ == "__main__" and len(sys.argv) >= 3 and sys.argv[1] == "--worker":
    _worker_main(sys.argv[2:])
