"""`protocaffe verify ...`: options -> `verify()` -> table on stdout, exit status 0/1/2.

0: every compared blob matches; 1: a blob differs; 2: verification could not run (a one-line
reason on stderr: a missing reference backend, an unreadable image, an unknown input name).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from protocaffe.errors import Reporter
from protocaffe.verify.compare import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance
from protocaffe.verify.core import VerifyError, VerifyOptions, verify
from protocaffe.verify.inputs import ImageSpec, InputError
from protocaffe.verify.opencv import ReferenceUnavailable

EXIT_OK, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2


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
    )


def run_verify(args: argparse.Namespace, reporter: Reporter) -> int:
    try:
        report = verify(args.prototxt, args.caffemodel, options_from_args(args), reporter)
    except (VerifyError, InputError, ReferenceUnavailable) as exc:
        print(f"protocaffe verify: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(report.summary() if args.quiet else report.table())
    if args.json:
        from protocaffe.atomic import write_text

        write_text(Path(args.json), report.dumps() + "\n")
    return EXIT_OK if report.ok else EXIT_MISMATCH
