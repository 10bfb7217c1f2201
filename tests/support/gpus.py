"""A stand-in ``nvidia-smi`` for tests of GPU discovery."""

from __future__ import annotations

import stat
from pathlib import Path


def fake_nvidia_smi(directory: Path, body: str) -> Path:
    """An executable ``nvidia-smi`` shell script in ``directory`` (created) running ``body``."""
    directory.mkdir(exist_ok=True)
    program = directory / "nvidia-smi"
    program.write_text(f"#!/bin/sh\n{body}\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program
