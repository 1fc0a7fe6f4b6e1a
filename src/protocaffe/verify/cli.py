"""`protocaffe verify ...`: options -> `verify()` -> table on stdout, exit status 0/1/2.

0: every compared blob matches; 1: a blob differs; 2: verification could not run (a one-line
reason on stderr: no reference that can run the net, an unreadable image, an unknown input
name).

On a terminal, a progress line (blobs compared / blobs in all) is drawn on stderr while the
comparison runs and erased at the end. `--json -` writes the report to stdout instead of the
table.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from protocaffe.errors import Reporter
from protocaffe.verify.backend import ReferenceUnavailable
from protocaffe.verify.compare import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance
from protocaffe.verify.core import VerifyError, VerifyOptions, verify
from protocaffe.verify.inputs import ImageSpec, InputError
from protocaffe.verify.report import VerifyReport

EXIT_OK, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2


class ProgressLine:
    """`verify: 12/140 blobs` redrawn in place at most every 0.1 s; `close` erases it."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.clock = clock
        self.last = -1.0
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        self.stream.write(f"\rverify: {done}/{total} blobs compared")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False


def options_from_args(args: argparse.Namespace) -> VerifyOptions:
    image = None
    if args.image is not None:
        image = ImageSpec(
            path=args.image,
            scale=args.scale,
            size=args.size,
            mean=args.mean,
            swap_rb=args.swap_rb,
            crop=args.crop,
        )
    return VerifyOptions(
        module=args.module,
        weights=args.weights,
        inputs=dict(args.input),
        image=image,
        input_shapes=dict(args.input_shape),
        reference=args.reference,
        tolerance=Tolerance(
            rtol=DEFAULT_RTOL if args.rtol is None else args.rtol,
            atol=DEFAULT_ATOL if args.atol is None else args.atol,
        ),
        seed=args.seed,
        outputs=args.outputs,
        dialects=tuple(args.dialect),
        level=args.level,
        stages=tuple(args.stage or ()),
        optimize=getattr(args, "optimize", False),
    )


def run_verify(
    args: argparse.Namespace,
    reporter: Reporter,
    on_report: Callable[[VerifyReport], None] | None = None,
) -> int:
    """Run `protocaffe verify`; `on_report` sees the report before the exit status is
    decided (the command line draws the --graph picture with it)."""
    options = options_from_args(args)
    to_stdout = args.json == "-"
    progress = None
    if sys.stderr.isatty() and not args.quiet:
        progress = ProgressLine(sys.stderr)
        options.progress = progress
    try:
        report = verify(args.prototxt, args.caffemodel, options, reporter)
    except (VerifyError, InputError, ReferenceUnavailable) as exc:
        print(f"protocaffe verify: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if progress is not None:
            progress.close()
    if on_report is not None:
        on_report(report)
    if to_stdout:
        sys.stdout.write(report.dumps() + "\n")
    elif args.quiet:
        print(report.summary())
    else:
        print(report.table(brief=args.brief))
    if args.json and not to_stdout:
        from protocaffe.atomic import write_text

        write_text(Path(args.json), report.dumps() + "\n")
    return EXIT_OK if report.ok else EXIT_MISMATCH
