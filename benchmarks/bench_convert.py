"""How fast and how lean is `protocaffe convert` on a VGG16-sized caffemodel?

Synthesises a seeded VGG16 caffemodel (about 553 MB, V1 layers with legacy 4-D dims, as the
published BVLC file is) from the corpus prototxt, streaming the blobs to disk a few MB at a time.
Then, side by side and each in its own process, times and measures the peak RSS of:

  1. `protocaffe convert` end to end (model.py + model.safetensors);
  2. the same command with the protobuf reader (`ParseFromString` + numpy) in place of the
     memory-mapped one, so the same safetensors writer;
  3. `cp` of the caffemodel;
  4. the BLAKE3 digest of the caffemodel, one thread: the manifest (model.manifest.txt) holds
     a BLAKE3 digest of every tensor, so hashing the whole file once is what it costs, the
     floor under (1) beside the copy;
  5. sha256 of the caffemodel with hashlib (OpenSSL), one thread: the manifest's digest
     before issue 17, for comparison.

Each is run --repeat times in turn; times are the median (and the best), RSS the largest. Big
files go to a temporary folder (default /tmp) and are removed at the end.

    PYTHONPATH=src python benchmarks/bench_convert.py [--repeat 3] [--keep]

Targets (issues 4 and 17): (1) takes at most 2x the time of (3) (goal 1.5x), at least 2x less
than (2), and its peak RSS is at most 0.2x the caffemodel's size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from protocaffe.errors import Reporter
from protocaffe.frontend.lower import build_graph
from protocaffe.frontend.prototxt import read_prototxt
from protocaffe.frontend.upgrade import V1_LAYER_TYPES
from protocaffe.layers import lookup

# The file's digest as the manifest computes it: chunks read into the cache, then hashed.
DIGEST = """
import sys
if sys.argv[2] == "blake3":
    from blake3 import blake3 as new
else:
    from hashlib import sha256 as new
digest, chunk = new(), bytearray(1 << 20)
with open(sys.argv[1], "rb", buffering=0) as source:
    while count := source.readinto(chunk):
        digest.update(memoryview(chunk)[:count])
"""


def find_shared() -> Path:
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "corpus").is_dir():
            return parent / "shared"
    sys.exit("cannot find shared/corpus next to the repository")


# -- synthesising the caffemodel, streaming ----------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, payload_len: int) -> bytes:
    return varint((number << 3) | 2) + varint(payload_len)


def text_field(number: int, text: str) -> bytes:
    data = text.encode()
    return field(number, len(data)) + data


def legacy_dims(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    padded = (1,) * (4 - len(shape)) + shape
    return padded[0], padded[1], padded[2], padded[3]


def blob_head(shape: tuple[int, ...]) -> tuple[bytes, int]:
    """A V1 BlobProto's bytes before its floats (legacy dims, packed data tag) and its length."""
    dims = b"".join(
        varint(((i + 1) << 3) | 0) + varint(d) for i, d in enumerate(legacy_dims(shape))
    )
    nbytes = 4 * int(np.prod(shape))
    head = dims + field(5, nbytes)
    return head, len(head) + nbytes


def float_chunks(rng: np.random.Generator, count: int, scale: float) -> Iterator[bytes]:
    step = 1 << 22
    for start in range(0, count, step):
        values = rng.standard_normal(min(step, count - start), dtype=np.float32)
        values *= np.float32(scale)
        yield values.tobytes()


def synthesise(prototxt: Path, path: Path, seed: int) -> int:
    """Write a seeded caffemodel for `prototxt` as V1 layers; returns its size in bytes."""
    graph = build_graph(read_prototxt(prototxt, Reporter()), Reporter(), {})
    v1_number = {v2: number for number, (_, v2) in V1_LAYER_TYPES.items() if v2}
    rng = np.random.default_rng(seed)
    with open(path, "wb") as out:
        out.write(text_field(1, graph.name))
        for node in graph.nodes:
            kind = lookup(node.op)
            assert kind is not None
            specs = kind.blobs(node.attrs, [v.shape for v in node.inputs])
            if not specs:
                continue
            heads = [blob_head(spec.shape) for spec in specs]
            body_head = text_field(4, node.name) + varint(5 << 3) + varint(v1_number[node.op])
            blobs_len = sum(len(field(6, n)) + n for _, n in heads)
            out.write(field(2, len(body_head) + blobs_len) + body_head)
            for spec, (head, n) in zip(specs, heads, strict=True):
                out.write(field(6, n) + head)
                count = int(np.prod(spec.shape))
                for chunk in float_chunks(rng, count, 1.0 / np.sqrt(spec.fan_in)):
                    out.write(chunk)
    return path.stat().st_size


# -- measuring ---------------------------------------------------------------------------------

# The slow reference reader lives with the tests (tests/caffemodel_protobuf.py).
TESTS = Path(__file__).resolve().parents[1] / "tests"
PROTOBUF_CONVERT = (
    "import sys\n"
    f"sys.path.insert(0, {str(TESTS)!r})\n"
    "import protocaffe.frontend.caffemodel as caffemodel\n"
    "from caffemodel_protobuf import read_caffemodel_protobuf\n"
    "caffemodel.read_caffemodel = read_caffemodel_protobuf\n"
    "from protocaffe.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


GNU_TIME = shutil.which("time", path="/usr/bin:/bin")


def child_env(scratch: Path) -> dict[str, str]:
    """The environment of an installed protocaffe: modules compiled once, then loaded from .pyc
    (an environment with PYTHONDONTWRITEBYTECODE would compile every module on every run)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    return env


def measure(command: list[str], scratch: Path, niceness: int = 0) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of one run of `command`.

    The RSS comes from GNU time (`%M`) when it is installed: a process's own rusage counts
    the RSS of whatever it was forked from (Linux keeps the high-water mark across exec), so
    measured from here every child would seem at least as big as this script.
    """
    os.sync()  # do not bill this run for the previous run's dirty pages
    report = scratch / "time.txt"
    if niceness:
        command = ["nice", "-n", str(niceness), *command]
    wrapped = [GNU_TIME, "-f", "%M", "-o", str(report), *command] if GNU_TIME else command
    start = time.perf_counter()
    process = subprocess.Popen(wrapped, stdout=subprocess.DEVNULL, env=child_env(scratch))
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        sys.exit(f"failed ({status}): {' '.join(command)}")
    kib = int(report.read_text().split()[-1]) if GNU_TIME else usage.ru_maxrss
    return elapsed, kib * 1024


def fresh(folder: Path) -> None:
    """Each run writes into an empty folder, as a first conversion does. (Replacing an existing
    file with rename(2) makes ext4 flush the new one first: auto_da_alloc.)"""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "copy").mkdir(parents=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="where the big files go")
    parser.add_argument("--keep", action="store_true", help="keep the files (for profiling)")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the measured commands at this niceness (e.g. -10, as root, to measure on a "
        "machine that others are using as if it were idle)",
    )
    args = parser.parse_args()

    prototxt = find_shared() / "corpus" / "vgg16" / "deploy.prototxt"
    work = Path(tempfile.mkdtemp(prefix="protocaffe-bench-", dir=args.tmp))
    try:
        weights = work / "vgg16.caffemodel"
        start = time.perf_counter()
        size = synthesise(prototxt, weights, args.seed)
        print(f"synthesised {weights} ({size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
        python = sys.executable
        runs = {
            "protocaffe convert": [python, "-m", "protocaffe", "convert", str(prototxt),
                                   str(weights), "-o", str(work / "out1"), "-q"],
            "  --no-manifest": [python, "-m", "protocaffe", "convert", str(prototxt),
                                str(weights), "-o", str(work / "out4"), "-q", "--no-manifest"],
            "protobuf + numpy": [python, "-c", PROTOBUF_CONVERT, "convert", str(prototxt),
                                 str(weights), "-o", str(work / "out2"), "-q"],
            "cp": ["cp", str(weights), str(work / "out3" / "copy" / "vgg16.caffemodel")],
            "blake3 (1 thread)": [python, "-c", DIGEST, str(weights), "blake3"],
            "sha256 (1 thread)": [python, "-c", DIGEST, str(weights), "sha256"],
        }  # fmt: skip
        outputs = dict(zip(runs, ("out1", "out4", "out2", "out3", "out5", "out6"), strict=True))
        times: dict[str, list[float]] = {name: [] for name in runs}
        rss: dict[str, int] = dict.fromkeys(runs, 0)
        for name, command in runs.items():  # a first run of each writes the .pyc files
            fresh(work / outputs[name])
            measure(command, work)
        for _ in range(args.repeat):
            for name, command in runs.items():
                fresh(work / outputs[name])
                elapsed, peak = measure(command, work, args.nice)
                times[name].append(elapsed)
                rss[name] = max(rss[name], peak)
        same = (work / "out1" / "model.safetensors").read_bytes() == (
            work / "out2" / "model.safetensors"
        ).read_bytes()

        median = {name: statistics.median(t) for name, t in times.items()}
        print(
            f"\ncores: {os.cpu_count()}   load average: {os.getloadavg()[0]:.1f}   "
            f"repeats: {args.repeat}   niceness: {args.nice}   caffemodel: {size / 1e6:.1f} MB"
        )
        print(f"{'':22}{'median s':>10}{'best s':>10}{'peak RSS MB':>13}{'RSS/size':>10}")
        for name in runs:
            print(
                f"{name:22}{median[name]:10.3f}{min(times[name]):10.3f}"
                f"{rss[name] / 1e6:13.1f}{rss[name] / size:10.2f}"
            )
        convert, bare, protobuf, copy, digest, sha256 = (median[n] for n in runs)
        print("\nratios (medians)                      target")
        print(f"  convert / cp          {convert / copy:6.2f}x      <= 2 (goal 1.5)")
        print(f"  (--no-manifest) / cp  {bare / copy:6.2f}x      (no digest of the weights)")
        print(f"  blake3 / cp           {digest / copy:6.2f}x      (the manifest's hashing)")
        print(f"  sha256 / blake3       {sha256 / digest:6.2f}x      (the digest it replaced)")
        print(f"  protobuf / convert    {protobuf / convert:6.2f}x      >= 2")
        print(f"  convert RSS / size    {rss['protocaffe convert'] / size:6.2f}x      <= 0.2")
        print(f"  safetensors identical from both readers: {same}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
