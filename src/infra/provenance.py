"""Where a run's results came from: the code's version (git commit, or a digest of the tree), the CPU
and the BLAS that did the arithmetic."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from src import datafiles
from src.infra.lifecycle import owner_tags
from src.stores import CODE_ROOT


def provenance_tags() -> dict[str, str]:
    """Whether the project differs from its commit (MLflow's own `mlflow.source.git.commit` names the
    commit), the locked packages, the machine, and who runs it (`owner_tags`)."""
    _, dirty = _git_state(CODE_ROOT)  # the code that ran, which in a DVC temp run is the copy
    return {
        "git_dirty": str(dirty).lower(),
        "numpy_version": metadata.version("numpy"),
        "torch_version": metadata.version("torch"),
        "requirements_md5": _md5_or_unknown(CODE_ROOT / "requirements.lock"),
        "cpu": _cpu_model(),
        "blas": _blas(),
        **owner_tags(),
    }


# Files the pipeline writes after training, from its results: they differ from the commit
# whenever a result does, but no result depends on them, so they do not make a run "dirty".
# (params.yaml is written by the `params` stage too, but every result depends on it.)
PIPELINE_RESULTS = ("dvc.lock", "metrics.json")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def _git_state(root: Path) -> tuple[str, bool]:
    """The commit at HEAD, and whether any file that can change a result differs from it."""
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        changed = _git(root, "status", "--porcelain", "--untracked-files=all").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    return commit, any(line[3:].strip('"') not in PIPELINE_RESULTS for line in changed)


def code_version() -> str:
    """The code that runs: the commit at HEAD, plus, when the tree is dirty, a digest of its uncommitted
    changes (edits to tracked files and untracked files' contents), so that two different edits of one
    commit never pass for the same code. A resumed sweep reuses a job's run only for the same version."""
    commit, dirty = _git_state(CODE_ROOT)
    if not dirty:
        return commit
    digest = hashlib.sha256()
    try:
        excluded = [f":(exclude){name}" for name in PIPELINE_RESULTS]
        digest.update(_git(CODE_ROOT, "diff", "HEAD", "--binary", "--", ".", *excluded).encode())
        for name in _git(CODE_ROOT, "ls-files", "--others", "--exclude-standard", "-z").split("\0"):
            if name and (CODE_ROOT / name).is_file():
                digest.update(name.encode() + b"\0" + (CODE_ROOT / name).read_bytes())
    except (OSError, subprocess.CalledProcessError):
        return "unknown"  # no git to ask: the code cannot be told apart
    return f"{commit}+{digest.hexdigest()[:16]}"


def _md5_or_unknown(path: Path) -> str:
    try:
        return datafiles.md5(path)
    except OSError:
        return "unknown"


def _cpu_model() -> str:
    """The CPU's model name, as Linux reports it: the numpy backend's bits may depend on nothing
    else, and a BLAS kernel's do."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown")
    except OSError:
        return platform.processor() or "unknown"


def _blas() -> str:
    """The BLAS library numpy loaded, its version and the kernel it chose for this CPU."""
    from threadpoolctl import threadpool_info

    found = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(f"{i['internal_api']} {i['version']} {i.get('architecture', '')}".strip() for i in found) or "none"
