"""Real Caffe as a persistent subprocess: one pycaffe process runs every case of a session.

The process runs tests/caffe_fuzz/oracle_driver.py under the oracle's own Python (it has pycaffe
and numpy 1.x, which the project's environment must not need). It forks a child per case, so a
failed CHECK (SIGABRT) ends only that case. Start-up costs a second or two, once.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ORACLE = Path(os.environ.get("PROTOCAFFE_CAFFE_ORACLE", "/opt/caffe-oracle"))
PYTHON = ORACLE / "venv" / "bin" / "python"
DRIVER = Path(__file__).with_name("oracle_driver.py")


def available() -> bool:
    return PYTHON.exists()


@dataclass
class CaffeOutcome:
    """How real Caffe ended one case."""

    status: str  # ok | rejected (CHECK/FATAL, SIGABRT) | crashed (other signal) | error | timeout
    message: str = ""
    seconds: float = 0.0
    layers: list[dict[str, Any]] = field(default_factory=list)  # Caffe's layers, splits included
    outputs: list[str] = field(default_factory=list)
    shapes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.status == "ok"


class Oracle:
    """A running oracle driver. Use as a context manager, or call close()."""

    def __init__(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONNOUSERSITE": "1",
            "PYTHONPATH": str(ORACLE / "install" / "python"),
            "LD_LIBRARY_PATH": str(ORACLE / "install" / "lib"),
            "GLOG_minloglevel": "2",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
        }
        self._process = subprocess.Popen(
            [str(PYTHON), "-u", str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        hello = self._read()
        self.layer_types: frozenset[str] = frozenset(hello["layer_types"])
        self.schema: dict[str, frozenset[str]] = {
            name: frozenset(fields) for name, fields in hello["schema"].items()
        }

    def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Caffe oracle driver ({DRIVER}) ended unexpectedly")
        result: dict[str, Any] = json.loads(line)
        return result

    def run_many(self, cases: Iterable[Path]) -> list[CaffeOutcome]:
        """Run each case directory (see oracle_driver.py for what it holds), in order."""
        assert self._process.stdin is not None
        cases = list(cases)
        # A window of requests ahead keeps the driver busy without filling both pipes (which
        # would deadlock: each side blocked writing to the other).
        window = 32
        sent = 0
        outcomes: list[CaffeOutcome] = []
        for case in cases:
            while sent < len(cases) and sent < len(outcomes) + window:
                self._process.stdin.write(f"{cases[sent]}\n")
                sent += 1
            self._process.stdin.flush()
            raw = self._read()
            assert raw["case"] == str(case), (raw, case)
            outcome = CaffeOutcome(
                status=raw["status"], message=raw.get("message", ""), seconds=raw["seconds"]
            )
            if outcome.accepted:
                outcome.layers = raw["layers"]
                outcome.outputs = raw["outputs"]
                outcome.shapes = raw["shapes"]
            outcomes.append(outcome)
        return outcomes

    def run(self, case: Path) -> CaffeOutcome:
        return self.run_many([case])[0]

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> Oracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
