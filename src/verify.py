"""`make verify`: reproduce the committed pipeline from nothing and compare it, byte for byte, with dvc.lock.

Clones HEAD into a temporary folder, deletes its dvc.lock, runs `dvc repro --force` there with an
empty DVC cache and a throwaway MLflow store, and compares every output's hash with the one the
commit's dvc.lock records, then the two locks' text: `rm dvc.lock; dvc repro` must leave git
clean. Prints "reproduced: N outputs identical", or each output that differs with its old and new
hash (and, for a folder whose old manifest is in this repository's DVC cache, the files in it
that differ). Exits 1 when anything differs, so CI fails on a dvc.lock that does not match its
code and on a result that cannot be reproduced.
"""

if __name__ == "__main__":  # first, before the heavy imports below (see src/infra/startup.py)
    from src.infra import startup

    startup.begin()

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from src.errors import clean_exit

ROOT = Path(__file__).resolve().parents[1]


def lock_entries(lock: dict) -> dict[str, str]:
    """'stage: out path' (and 'stage: deps/params') -> recorded value, for everything a lock pins."""
    entries: dict[str, str] = {}
    for stage, record in (lock.get("stages") or {}).items():
        for kind in ("deps", "outs"):
            for item in record.get(kind) or []:
                entries[f"{kind[:-1]} {item['path']}"] = item.get("md5", "?")
        for file, values in (record.get("params") or {}).items():
            entries[f"params {stage} ({file})"] = json.dumps(values, sort_keys=True)
    return entries


def _dir_manifest(root: Path, md5: str) -> dict[str, str] | None:
    """relpath -> md5 of a DVC folder output, from the DVC cache under `root`, if it is there."""
    manifest = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    if not manifest.is_file():
        return None
    return {entry["relpath"]: entry["md5"] for entry in json.loads(manifest.read_text())}


def compare(old: dict[str, str], new: dict[str, str]) -> list[tuple[str, str, str]]:
    """(entry, old, new) for every entry whose recorded value differs, in order."""
    return [
        (k, old.get(k, "absent"), new.get(k, "absent"))
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k)
    ]


def reproduce(clone: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # stages call `python`
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{clone.parent / 'mlflow.db'}"  # not the project's store
    return subprocess.run(["dvc", "repro", "--force"], cwd=clone, env=env, capture_output=True, text=True)


def main() -> int:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    print(f"verify: reproducing commit {commit.stdout.strip()} from nothing (uncommitted changes are not part of it)")
    with tempfile.TemporaryDirectory(prefix="verify-") as folder:
        clone = Path(folder) / "repo"
        subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True)
        committed = (clone / "dvc.lock").read_text()
        (clone / "dvc.lock").unlink()  # from nothing: the lock too
        done = reproduce(clone)
        if done.returncode != 0:
            print(f"verify: `dvc repro --force` failed:\n{done.stdout}{done.stderr}", file=sys.stderr)
            return 1
        reproduced = (clone / "dvc.lock").read_text()
        old, new = lock_entries(yaml.safe_load(committed)), lock_entries(yaml.safe_load(reproduced))
        differ = compare(old, new)
        outputs = [k for k in new if k.startswith("out ")]
        if not differ and reproduced != committed:
            print("NOT reproduced: dvc.lock records the same hashes, but `dvc repro` from nothing writes it in "
                  "another order or form; commit the one it writes (rm dvc.lock && dvc repro)")  # fmt: skip
            return 1
        if not differ:
            print(f"reproduced: {len(outputs)} outputs identical ({', '.join(k[4:] for k in outputs)})")
            return 0
        print(f"NOT reproduced: {len(differ)} of {len(new)} recorded entries differ from the committed dvc.lock:")
        for entry, before, after in differ:
            print(f"  {entry}: committed {before}, reproduced {after}")
            if before.endswith(".dir") and after.endswith(".dir"):
                old_files, new_files = _dir_manifest(ROOT, before), _dir_manifest(clone, after)
                if old_files and new_files:
                    for name, file_before, file_after in compare(old_files, new_files):
                        print(f"    {name}: committed {file_before}, reproduced {file_after}")
        return 1


if __name__ == "__main__":
    with clean_exit():
        status = main()
    sys.exit(status)
