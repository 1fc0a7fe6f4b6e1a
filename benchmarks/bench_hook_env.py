"""How big is a pre-commit hook's environment, and how long does it take to set up?

A hook (`.pre-commit-hooks.yaml`, `language: python`) gets a venv with the repository
installed: protocaffe and its dependencies, no torch. This builds the same (tests/light_install.py:
`pip wheel . --no-deps`, a fresh venv, `pip install` of the wheel from pip's configured index),
prints its size as `du` counts it and the largest packages, and times one `convert --check`
there. Target (issue 16): at most 150 MB.

    python benchmarks/bench_hook_env.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from light_install import make_light_env  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="protocaffe-hook-env-") as work:
        light = make_light_env(Path(work))
        size = light.size_bytes()
        print(f"hook environment: {size / 2**20:.0f} MB (du -s), limit 150 MB")
        print(f"  pip wheel . --no-deps: {light.wheel_seconds:.1f} s")
        print(f"  venv + pip install of the wheel: {light.install_seconds:.1f} s")
        site = next((light.folder / "lib").glob("python*/site-packages"))
        sizes = subprocess.run(
            ["du", "-sk", *[str(p) for p in site.iterdir() if p.is_dir()]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        largest = sorted((int(k), Path(p).name) for k, p in (line.split("\t") for line in sizes))
        for kib, name in reversed(largest[-6:]):
            print(f"  {name}: {kib / 1024:.1f} MB")
        tiny = REPO / "examples" / "tinynet"
        args = [str(tiny / "deploy.prototxt"), str(tiny / "tinynet.caffemodel")]
        out = Path(work) / "out"
        command = [str(light.protocaffe), "convert", *args, "-o", str(out), "-q"]
        subprocess.run(command, check=True)
        start = time.perf_counter()
        subprocess.run([*command, "--check"], check=True)
        print(f"  convert --check (tinynet, with weights): {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
