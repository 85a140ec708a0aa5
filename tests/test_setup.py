"""`make setup` installs with uv from the package sources pip is configured with."""

import os
import subprocess
import sys

from tests.conftest import ROOT


def _sources(env: dict[str, str]) -> list[str]:
    plain = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    done = subprocess.run([sys.executable, "tools/pip_sources.py"], cwd=ROOT, env={**plain, **env},
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.split()


def test_pip_s_sources_become_uv_options_once_each():
    env = {
        "PIP_CONFIG_FILE": os.devnull,  # no config files: only the variables below
        "PIP_FIND_LINKS": "/srv/wheels",
        "PIP_INDEX_URL": "https://mirror.example/simple",
        "PIP_EXTRA_INDEX_URL": "file:///srv/a/simple file:///srv/b/simple",
        "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",  # not a source: left to uv's own settings
    }
    assert sorted(_sources(env)) == sorted([
        "--find-links=/srv/wheels",
        "--index-url=https://mirror.example/simple",
        "--extra-index-url=file:///srv/a/simple",
        "--extra-index-url=file:///srv/b/simple",
    ])  # fmt: skip


def test_with_nothing_configured_uv_gets_no_options_and_uses_pypi():
    assert _sources({"PIP_CONFIG_FILE": os.devnull}) == []
