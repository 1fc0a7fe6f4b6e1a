"""How much of `protocaffe convert` (no weights) is protocaffe, and how much is black?

Converts the corpus ResNet-152 prototxt (670 layers) to model.py as a whole command, in a fresh
process each time, --repeat times. Inside each run, black.format_str is timed (wall and CPU);
everything else the command does, from interpreter start to exit (start-up, imports, parsing,
passes, emitting, Jinja2, ast.parse), is "protocaffe". Figures are medians over the runs.

    PYTHONPATH=src python benchmarks/bench_codegen.py [--repeat 5] [--profile]

Target (issue 4): protocaffe's part is at most 30% of black's, and torch is never imported.
CPU time is printed beside wall time because on a shared machine the wall clock mostly measures
the neighbours; black's import is shown on its own line, counted on protocaffe's side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run in the child: time black.format_str and `import black`, report as JSON on stderr's last line.
CHILD = r"""
import json, os, sys, time
start = time.process_time()
import black
black_import = time.process_time() - start
format_str = black.format_str
spent = {"wall": 0.0, "cpu": 0.0, "lines": 0}
def timed(source, *, mode):
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        out = format_str(source, mode=mode)
    finally:
        spent["wall"] += time.perf_counter() - wall
        spent["cpu"] += time.process_time() - cpu
    spent["lines"] += out.count("\n")
    return out
black.format_str = timed
from protocaffe import cli
exit_now = os._exit
def report_and_exit(status):
    print(json.dumps({
        "status": status, "black_import": black_import, "black_wall": spent["wall"],
        "black_cpu": spent["cpu"], "lines": spent["lines"],
        "torch": "torch" in sys.modules, "numpy": "numpy" in sys.modules,
    }), file=sys.stderr)
    sys.stderr.flush()
    exit_now(status)
os._exit = report_and_exit
if os.environ.get("BENCH_DEFAULT_GC"):  # --default-gc: leave the collector as Python sets it
    import gc
    gc.set_threshold = lambda *thresholds: None
cli.run()  # the console entry point: main, with its garbage collector settings and exit
"""


def find_shared() -> Path:
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "corpus").is_dir():
            return parent / "shared"
    sys.exit("cannot find shared/corpus next to the repository")


def child_env(scratch: Path) -> dict[str, str]:
    """The environment of an installed protocaffe: modules compiled once, then loaded from .pyc
    (an environment with PYTHONDONTWRITEBYTECODE would compile every module on every run)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    return env


def run_measured(prototxt: Path, out: Path, env: dict[str, str]) -> dict[str, float]:
    """One run, with the child's CPU time from its own rusage (user + system)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, "convert", str(prototxt), "-o", str(out), "-q"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    err = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        sys.exit(f"convert failed:\n{err}")
    report: dict[str, float] = json.loads(err.strip().splitlines()[-1])
    report["wall"] = wall
    report["cpu"] = usage.ru_utime + usage.ru_stime
    return report


def profile(prototxt: Path, out: Path) -> None:
    """cProfile of one in-process conversion, black's own functions folded into format_str."""
    import cProfile
    import pstats

    from protocaffe.cli import main

    profiler = cProfile.Profile()
    profiler.enable()
    main(["convert", str(prototxt), "-o", str(out), "-q"])
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(r"protocaffe|format_str", 25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--prototxt", type=Path, help="default: the corpus ResNet-152")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile")
    parser.add_argument(
        "--default-gc", action="store_true", help="without cli.run's garbage collector settings"
    )
    args = parser.parse_args()
    prototxt = args.prototxt or find_shared() / "corpus" / "resnet-152" / "deploy.prototxt"

    with tempfile.TemporaryDirectory(prefix="protocaffe-codegen-") as tmp:
        out = Path(tmp) / "out"
        env = child_env(Path(tmp))
        if args.default_gc:
            env["BENCH_DEFAULT_GC"] = "1"
        run_measured(prototxt, out, env)  # warm the page cache and write the .pyc files
        runs = [run_measured(prototxt, out, env) for _ in range(args.repeat)]
        if args.profile:
            profile(prototxt, out)

    def median(key: str) -> float:
        return statistics.median(float(r[key]) for r in runs)

    wall, cpu = median("wall"), median("cpu")
    black_wall, black_cpu = median("black_wall"), median("black_cpu")
    black_import = median("black_import")
    rest_wall, rest_cpu = wall - black_wall, cpu - black_cpu
    lines = int(runs[0]["lines"])
    print(f"{prototxt} -> model.py ({lines} lines), {args.repeat} runs, medians")
    print(f"cores: {os.cpu_count()}   load average: {os.getloadavg()[0]:.1f}")
    print(f"{'':34}{'wall s':>9}{'CPU s':>9}")
    print(f"{'whole command':34}{wall:9.3f}{cpu:9.3f}")
    speed = f"({lines / black_cpu:.0f} lines/s)"
    print(f"{'black.format_str':34}{black_wall:9.3f}{black_cpu:9.3f}   {speed}")
    print(f"{'protocaffe (everything else)':34}{rest_wall:9.3f}{rest_cpu:9.3f}")
    print(f"{'  of which: import black':34}{'':9}{black_import:9.3f}")
    wall_ratio, cpu_ratio = rest_wall / black_wall, rest_cpu / black_cpu
    print(f"protocaffe / black:  {wall_ratio:.2f} (wall)  {cpu_ratio:.2f} (CPU)   target <= 0.30")
    own_cpu = rest_cpu - black_import
    print(f"  counting `import black` as black's: {own_cpu / (black_cpu + black_import):.2f} (CPU)")
    print(f"torch imported: {any(r['torch'] for r in runs)}   numpy imported: "
          f"{any(r['numpy'] for r in runs)}")  # fmt: skip


if __name__ == "__main__":
    main()
