"""The deep profile: `python -m caffe_fuzz --nets 3000 --seed 1` from tests/.

Runs the nets in batches through one oracle process, appends one JSON line per net to
--log (so a long run can be stopped and summarised at any time), keeps the case folder of every
disagreement under --workdir, and writes the summary table (Markdown) to --report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .campaign import Campaign, examine
from .oracle import Oracle, available
from .report import summarise
from .shrink import shrink


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m caffe_fuzz")
    parser.add_argument("--nets", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/caffe_fuzz"))
    parser.add_argument("--log", type=Path, default=Path("/tmp/caffe_fuzz/log.jsonl"))
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--types", default="", help="comma-separated focus types (default: all)")
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument(
        "--replay",
        default="",
        help="SEED:FOCUS of one net (as a failure prints it): run it alone, keep its folder",
    )
    parser.add_argument("--keep", action="store_true", help="keep every case folder")
    parser.add_argument(
        "--shrink", type=Path, default=None, help="a kept case folder: print a smaller net"
    )
    parser.add_argument(
        "--reclassify",
        action="store_true",
        help="re-run and re-classify the kept disagreements of --log with the current rules",
    )
    parser.add_argument(
        "--unexplained-only", action="store_true", help="with --reclassify: only those"
    )
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay, args.workdir)
    if args.shrink is not None:
        with Oracle() as oracle:
            text, verdict = shrink(oracle, args.shrink, args.workdir / "shrink")
        print(text)
        print(f"{verdict.outcome}: {verdict.cause}")
        return 0
    if args.reclassify:
        reclassify(args.log, args.workdir, args.unexplained_only)
        args.summarise_only = True
    if not args.summarise_only:
        if not available():
            print("no Caffe oracle (see ../shared/oracle)", file=sys.stderr)
            return 2
        args.workdir.mkdir(parents=True, exist_ok=True)
        args.log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with Oracle() as oracle, args.log.open("a") as log:
            campaign = Campaign(oracle, args.workdir)
            types = [t for t in args.types.split(",") if t] or None
            specs = campaign.specs(args.seed, args.nets, types)
            for count, record in enumerate(campaign.run(specs, keep=args.keep), 1):
                entry = {
                    "net": record.spec.name,
                    "seed": record.spec.seed,
                    "focus": record.spec.focus,
                    "types": sorted({layer.type for layer in record.spec.layers}),
                    "layers": len(record.spec.layers),
                    **asdict(record.verdict),
                    "caffe_seconds": round(record.seconds_caffe, 3),
                    "protocaffe_seconds": round(record.seconds_protocaffe, 3),
                }
                log.write(json.dumps(entry) + "\n")
                log.flush()
                if count % 100 == 0:
                    rate = count / (time.monotonic() - started)
                    print(f"{count} nets, {rate:.2f} nets/s", file=sys.stderr)
    entries = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
    table = summarise(entries)
    if args.report is not None:
        args.report.write_text(table)
    print(table)
    unexplained = [e for e in entries if e["cause"] == "unexplained"]
    return 1 if unexplained else 0


def reclassify(log: Path, workdir: Path, unexplained_only: bool = False) -> None:
    """Disagreements are kept on disk: run them again and classify them with today's rules."""
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    with Oracle() as oracle:
        for entry in entries:
            folder = workdir / entry["net"]
            if entry["outcome"] in ("match", "both-reject") or not folder.exists():
                continue
            if unexplained_only and entry["cause"] != "unexplained":
                continue
            outcome = oracle.run(folder)
            inputs = dict(np.load(folder / "inputs.npz"))
            entry.update(asdict(examine(oracle, folder, outcome, inputs)))
    log.write_text("".join(json.dumps(entry) + "\n" for entry in entries))


def replay(which: str, workdir: Path) -> int:
    seed, focus = which.split(":")
    with Oracle() as oracle:
        campaign = Campaign(oracle, workdir)
        spec = campaign.generator.net(int(seed), focus)
        (record,) = campaign.run([spec], keep=True)
    v = record.verdict
    print(spec.prototxt())
    print(f"{v.outcome}: {v.cause or 'agrees'} {v.layer} {v.layer_type} {v.blob}")
    print(v.detail or v.caffe_message or v.protocaffe_message)
    print(f"case folder: {workdir / spec.name}")
    return 0 if v.agrees else 1


if __name__ == "__main__":
    sys.exit(main())
