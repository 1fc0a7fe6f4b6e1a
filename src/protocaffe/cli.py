"""The `protocaffe` command line.

Bad input ends in one line per diagnostic on stderr (`file:line: layer "name" (Type): message`)
and exit status 2, with no traceback and no output file left behind.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from protocaffe import __version__
from protocaffe.errors import ProtocaffeError, Reporter, Severity

EXIT_OK, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2


def _input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"expected NAME=D1,D2,... with positive dims, got {text!r}")
    return name, shape


def _add_input_shape(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input-shape",
        type=_input_shape,
        action="append",
        default=[],
        metavar="NAME=N,C,H,W",
        help="override the declared shape of an input (repeatable)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protocaffe", description="Compile Caffe nets into readable PyTorch modules."
    )
    parser.add_argument("--version", action="version", version=f"protocaffe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    convert = sub.add_parser("convert", help="write model.py (and the weights) for a Caffe net")
    convert.add_argument("prototxt")
    convert.add_argument("caffemodel", nargs="?")
    convert.add_argument("-o", "--output", required=True, help="output folder")
    convert.add_argument("--format", choices=("safetensors", "pt"), default="safetensors")
    convert.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    convert.add_argument(
        "--optimize",
        action="store_true",
        help="fold BatchNorm/Scale into the layer before them and drop pass-through layers",
    )
    convert.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with a diff if the files on disk differ from the output",
    )
    _add_input_shape(convert)

    inspect = sub.add_parser("inspect", help="one row per layer: shapes, parameters, mult-adds")
    inspect.add_argument("prototxt")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")
    inspect.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    _add_input_shape(inspect)

    graph = sub.add_parser("graph", help="draw the net with Graphviz (.svg, .png, .pdf or .dot)")
    graph.add_argument("prototxt")
    graph.add_argument("-o", "--output", required=True, help="net.svg, net.png, net.pdf or net.dot")
    graph.add_argument("--optimize", action="store_true", help="draw the --optimize graph")
    graph.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    _add_input_shape(graph)

    rand = sub.add_parser("random-weights", help="write a caffemodel with seeded random weights")
    rand.add_argument("prototxt")
    rand.add_argument("-o", "--output", required=True, help="the .caffemodel to write")
    rand.add_argument("--seed", type=int, default=0)
    rand.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    _add_input_shape(rand)
    return parser


def _report(reporter: Reporter, quiet: bool) -> None:
    for diagnostic in reporter.diagnostics:
        if quiet and diagnostic.severity is not Severity.ERROR:
            continue
        print(diagnostic, file=sys.stderr)


def _shown_path(path: str) -> str:
    """A path as the header's command line shows it: relative to the working directory."""
    return os.path.relpath(path).replace(os.sep, "/")


def regenerate_command(args: argparse.Namespace) -> str:
    """The `protocaffe convert` command line that reproduces this output (relative paths, no
    --check or --quiet), for the generated file's header."""
    words = ["protocaffe", "convert", _shown_path(args.prototxt)]
    if args.caffemodel is not None:
        words.append(_shown_path(args.caffemodel))
    words += ["-o", _shown_path(args.output)]
    if args.format != "safetensors":
        words += ["--format", args.format]
    if args.optimize:
        words.append("--optimize")
    for name, shape in args.input_shape:
        words += ["--input-shape", f"{name}={','.join(str(d) for d in shape)}"]
    return shlex.join(words)


def _convert(args: argparse.Namespace, reporter: Reporter) -> int:
    from protocaffe.api import convert
    from protocaffe.backend.outputs import conversion_files, diff_files, write_files
    from protocaffe.passes import DEFAULT_PIPELINE, OPTIMIZE_PIPELINE

    conversion = convert(
        args.prototxt,
        args.caffemodel,
        input_shapes=dict(args.input_shape),
        passes=OPTIMIZE_PIPELINE if args.optimize else DEFAULT_PIPELINE,
        reporter=reporter,
        command=regenerate_command(args),
        source_name=_shown_path(args.prototxt),
    )
    out = Path(args.output)
    files = conversion_files(conversion.source, conversion.arrays, args.format)
    if args.check:
        diff = diff_files(out, files)
        if diff:
            sys.stdout.write(diff)
            print(
                f"{out.as_posix()}: out of date; regenerate with the command in model.py's "
                "header",
                file=sys.stderr,
            )
            return EXIT_MISMATCH
        return EXIT_OK
    write_files(out, files)
    return EXIT_OK


def _inspect(args: argparse.Namespace, reporter: Reporter) -> int:
    from protocaffe.views.table import layer_table, table_json, table_text

    table = layer_table(args.prototxt, dict(args.input_shape), reporter)
    sys.stdout.write(table_json(table) if args.json else table_text(table))
    return EXIT_OK


def _graph(args: argparse.Namespace, reporter: Reporter) -> int:
    from protocaffe.views.dot import write_picture

    write_picture(args.prototxt, Path(args.output), dict(args.input_shape), args.optimize, reporter)
    return EXIT_OK


def _random_weights(args: argparse.Namespace, reporter: Reporter) -> int:
    from protocaffe.random_weights import random_weights

    random_weights(
        args.prototxt,
        args.output,
        seed=args.seed,
        input_shapes=dict(args.input_shape),
        reporter=reporter,
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    reporter = Reporter()
    commands = {
        "convert": _convert,
        "random-weights": _random_weights,
        "inspect": _inspect,
        "graph": _graph,
    }
    try:
        status = commands[args.command](args, reporter)
    except ProtocaffeError as exc:
        _report(reporter, args.quiet)
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    _report(reporter, args.quiet)
    return status


if __name__ == "__main__":
    sys.exit(main())
