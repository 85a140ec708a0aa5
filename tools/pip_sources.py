"""Print the package sources pip is configured with, as options for `uv pip install`.

`make setup` installs the lock with uv, from wherever pip would install it: the find-links,
index-url and extra-index-url that `pip config list` shows (config files and PIP_* variables).
With none configured, both use PyPI.
"""

import shlex
import subprocess
import sys

SOURCES = ("find-links", "index-url", "extra-index-url")


def main() -> None:
    # check: were pip's config unreadable, uv would quietly install from PyPI alone (on a machine whose
    # CPU build of torch is in a local find-links folder, that is a several-GB CUDA build instead)
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    options: list[str] = []
    for line in listed.splitlines():  # e.g. global.extra-index-url='file:///a file:///b'
        name, _, quoted = line.partition("=")
        key = name.rsplit(".", 1)[-1]
        if key not in SOURCES:
            continue
        for value in " ".join(shlex.split(quoted)).split():
            option = f"--{key}={value}"
            if option not in options:
                options.append(option)
    print(" ".join(options))


if __name__ == "__main__":
    main()
