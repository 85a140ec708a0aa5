"""`python tests/stage_files.py RECORD MODULE ARGS...`: run MODULE as `python -m MODULE ARGS...` would,
then write to RECORD (JSON) every file it imported, and every file it opened for reading.

The import closure is read from `sys.modules` at exit, so modules imported lazily, deep inside the
run (a backend chosen by name, a framework imported inside a function), are in it too; the files
opened come from Python's audit hook for `open`, so a file read as data (a CSV, a model's code
logged as a file) is in it as well.
"""

import atexit
import json
import os
import runpy
import sys

record, module, *args = sys.argv[1:]
read: set[str] = set()


def _on_open(event: str, arguments: tuple) -> None:
    if event != "open" or not isinstance(arguments[0], str):
        return
    path, mode, flags = arguments
    writes = any(c in (mode or "") for c in "wax+") or (mode is None and flags & (os.O_WRONLY | os.O_RDWR))
    if not writes:
        read.add(os.path.abspath(path))


def _write_record() -> None:
    imported = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
    with open(record, "w") as out:
        json.dump({"imported": sorted(f for f in imported if f), "read": sorted(read)}, out)


sys.addaudithook(_on_open)
atexit.register(_write_record)
sys.argv = [module, *args]
sys.path.insert(0, os.getcwd())  # as `python -m` has it
runpy.run_module(module, run_name="__main__", alter_sys=True)
