"""Atomic output: a conversion killed or failing part way leaves the previous model.py and
weights as they were, and no temporary files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from protocaffe import atomic, cli
from protocaffe.backend import weights

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "examples" / "tinynet"


def convert_cli(out: Path, *extra: str) -> int:
    return cli.main(
        ["convert", str(TINY / "deploy.prototxt"), str(TINY / "tinynet.caffemodel"), "-o", str(out)]
        + list(extra)
    )


@pytest.fixture
def previous(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """An output folder holding an earlier conversion (a different net name, so that the new
    model.py would differ), and the bytes of its files."""
    out = tmp_path / "out"
    assert convert_cli(out) == 0
    model = out / "model.py"  # still protocaffe's (its header), so convert may replace it
    model.write_text(model.read_text().replace("class TinyNet", "class PreviousNet"))
    (out / "model.safetensors").write_bytes(b"previous weights")
    return out, {p.name: p.read_bytes() for p in out.iterdir()}


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_sigkill_while_writing_leaves_the_previous_files(
    previous: tuple[Path, dict[str, bytes]],
) -> None:
    """Kill -9 a CLI run while it writes the weights (after it has started writing them)."""
    out, before = previous
    script = textwrap.dedent(f"""
        import sys, time
        from protocaffe import cli
        from protocaffe.backend import weights

        real = weights.write_state_to

        def slow(path, state, fmt, progress=None):
            real(path, state, fmt, progress)  # the bytes are written to the unnamed file ...
            print("written", flush=True)
            time.sleep(60)  # ... and the run is killed before it publishes them

        weights.write_state_to = slow
        sys.exit(cli.main(["convert", {str(TINY / "deploy.prototxt")!r},
                           {str(TINY / "tinynet.caffemodel")!r}, "-o", {str(out)!r}]))
        """)
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "written"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert snapshot(out) == before  # same names (so no debris) and same bytes


@pytest.mark.parametrize("anonymous", [True, False], ids=["O_TMPFILE", "named-temp"])
def test_failure_mid_write_leaves_the_previous_files(
    previous: tuple[Path, dict[str, bytes]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    anonymous: bool,
) -> None:
    out, before = previous
    if not anonymous:  # the fallback for systems without O_TMPFILE
        monkeypatch.setattr(atomic, "_anonymous_file", lambda directory: None)

    def failing(path: Path, state: object, fmt: str, progress: object = None) -> None:
        with open(path, "wb") as partial:
            partial.write(b"half of the weights")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(weights, "write_state_to", failing)
    assert convert_cli(out) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert snapshot(out) == before


def test_a_successful_run_replaces_both_files(previous: tuple[Path, dict[str, bytes]]) -> None:
    out, before = previous
    assert convert_cli(out) == 0
    after = snapshot(out)
    assert sorted(after) == ["model.manifest.txt", "model.py", "model.safetensors"]
    assert after["model.py"] != before["model.py"]
    assert after["model.safetensors"] != before["model.safetensors"]
    assert (out / "model.py").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
