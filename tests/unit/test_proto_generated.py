"""The committed message modules are what `make proto` generates from the .proto files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROTO = Path(__file__).resolve().parents[2] / "exporter" / "sources" / "runtimes" / "proto"


def test_generated_modules_match_the_proto_files(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    names = ["cri.proto", "events.proto"]
    for name in names:
        shutil.copy(PROTO / name, tmp_path / name)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.", *names],
        cwd=tmp_path,
        check=True,
    )
    for name in names:
        for module in (name.replace(".proto", "_pb2.py"), name.replace(".proto", "_pb2.pyi")):
            assert (tmp_path / module).read_text() == (PROTO / module).read_text(), (
                f"{module} differs from its .proto: run `make proto`"
            )
