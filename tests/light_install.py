"""A fresh virtual environment with protocaffe's wheel and nothing else: no torch.

This is what a `.pre-commit-hooks.yaml` hook gets (pre-commit makes a venv and installs the
repository into it). Shared by tests/test_light_install.py, which runs the codegen commands
there, and benchmarks/bench_hook_env.py, which prints its size and set-up time for the README.
Packages come from pip's configured index (the local mirror on CI machines).
"""

from __future__ import annotations

import subprocess
import sys
import time
import venv
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LightEnv:
    folder: Path
    python: Path
    protocaffe: Path
    wheel_seconds: float  # pip wheel . --no-deps
    install_seconds: float  # venv + pip install of the wheel and its dependencies

    def size_bytes(self) -> int:
        """What `du -s` counts: the blocks the environment takes on disk."""
        done = subprocess.run(
            ["du", "-sk", str(self.folder)], capture_output=True, text=True, check=True
        )
        return int(done.stdout.split()[0]) * 1024


def _pip(python: Path | str, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )


def make_light_env(work: Path) -> LightEnv:
    """Build the wheel (`pip wheel . --no-deps`), then a venv in `work`/env with the wheel
    installed (`pip install dist/*.whl`): protocaffe's own dependencies, no torch."""
    dist = work / "dist"
    start = time.perf_counter()
    _pip(sys.executable, "wheel", str(REPO), "--no-deps", "-w", str(dist))
    built = time.perf_counter()
    (wheel,) = dist.glob("protocaffe-*.whl")
    folder = work / "env"
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    _pip(python, "install", str(wheel))
    done = time.perf_counter()
    return LightEnv(folder, python, folder / "bin" / "protocaffe", built - start, done - built)
