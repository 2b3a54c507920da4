"""The exporter bounds glibc's malloc arenas at start-up, unless MALLOC_ARENA_MAX is set."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CODE = "from exporter.app.service import limit_malloc_arenas; print(limit_malloc_arenas())"


def run(env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_arenas_bounded_unless_the_environment_says():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert run(env) == "True"
    assert run(env | {"MALLOC_ARENA_MAX": "8"}) == "False"
