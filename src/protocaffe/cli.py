"""The `protocaffe` command line.

Bad input ends in one line per diagnostic on stderr (`file:line: layer "name" (Type): message`)
and exit status 2, with no traceback and no output file left behind.
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from protocaffe.errors import ProtocaffeError, Reporter, Severity
from protocaffe.version import __version__

if TYPE_CHECKING:
    from protocaffe.ir.graph import Graph

EXIT_OK, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2


def _input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(
            f"expected NAME=D1,D2,... with positive dims, got {text!r}"
        )
    return name, shape


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    quiet: str = "print errors only",
) -> argparse.ArgumentParser:
    """A subcommand with what every one takes: the prototxt, -q, --input-shape and --plugin."""
    command = sub.add_parser(name, help=summary)
    command.add_argument("prototxt")
    command.add_argument("-q", "--quiet", action="store_true", help=quiet)
    command.add_argument(
        "--input-shape",
        type=_input_shape,
        action="append",
        default=[],
        metavar="NAME=N,C,H,W",
        help="override the declared shape of an input (repeatable)",
    )
    command.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE, which registers custom layer types (repeatable; see 'Custom "
        "layers' in the README); installed 'protocaffe.layers' entry points load by themselves "
        "when a net has a type that is not built in",
    )
    return command


def _load_plugins(args: argparse.Namespace) -> None:
    from protocaffe.layers.loading import load_plugins

    load_plugins(args.plugin)  # installed plugins load when a net needs a type not built in


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protocaffe", description="Compile Caffe nets into readable PyTorch modules."
    )
    parser.add_argument("--version", action="version", version=f"protocaffe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    convert = _command(sub, "convert", "write model.py (and the weights) for a Caffe net")
    convert.add_argument("caffemodel", nargs="?")
    convert.add_argument("-o", "--output", required=True, help="output folder")
    convert.add_argument("--format", choices=("safetensors", "pt"), default="safetensors")
    convert.add_argument(
        "--optimize",
        action="store_true",
        help="fold BatchNorm/Scale into the layer before them and drop pass-through layers",
    )
    convert.add_argument(
        "--no-manifest",
        action="store_true",
        help="skip model.manifest.txt (hashing the weights costs about 0.3 s per GB)",
    )
    convert.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with a diff if the files on disk differ from the output",
    )

    inspect = _command(sub, "inspect", "one row per layer: shapes, parameters, mult-adds")
    shown = inspect.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print JSON instead of a table")
    shown.add_argument(
        "--ir", action="store_true", help="print the graph IR after the passes, one node a line"
    )
    shown.add_argument(
        "--dump-ir",
        action="store_true",
        help="print the graph IR after the lowering and after each pass (to debug a pass)",
    )
    inspect.add_argument(
        "--optimize", action="store_true", help="the module --optimize makes (fewer layers)"
    )

    graph = _command(sub, "graph", "draw the net with Graphviz (.svg, .png, .pdf or .dot)")
    graph.add_argument("-o", "--output", required=True, help="net.svg, net.png, net.pdf or net.dot")
    graph.add_argument("--optimize", action="store_true", help="draw the --optimize graph")

    rand = _command(sub, "random-weights", "write a caffemodel with seeded random weights")
    rand.add_argument("-o", "--output", required=True, help="the .caffemodel to write")
    rand.add_argument("--seed", type=int, default=0)
    _add_verify(sub)
    return parser


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    try:
        size = (int(width), int(height))
    except ValueError:
        size = (0, 0)
    if not sep or min(size) <= 0:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    return size


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}"
        ) from None


def _named_file(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy, got {text!r}")
    return name, path


def _add_verify(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = _command(
        sub,
        "verify",
        "prove the PyTorch module equals the Caffe net, blob by blob",
        quiet="print the summary only",
    )
    check.add_argument("caffemodel", nargs="?", help="without it: seeded random weights")
    check.add_argument("--module", help="a model.py to verify (default: generate one)")
    check.add_argument("--weights", help="the module's state_dict (.safetensors or .pt)")
    check.add_argument(
        "--input", type=_named_file, action="append", default=[], metavar="NAME=FILE.npy"
    )
    check.add_argument("--image", help="feed an image, as cv2.dnn.blobFromImage prepares it")
    check.add_argument("--scale", type=float, default=1.0, help="blobFromImage scalefactor")
    check.add_argument("--size", type=_size, metavar="WxH", help="blobFromImage size")
    check.add_argument("--mean", type=_floats, default=(0.0, 0.0, 0.0), metavar="B,G,R")
    check.add_argument("--swap-rb", action="store_true")
    check.add_argument("--crop", action="store_true")
    check.add_argument("--reference", choices=("opencv", "caffe"), default="opencv")
    check.add_argument("--rtol", type=float, default=None, help="relative to the blob's max")
    check.add_argument("--atol", type=float, default=None)
    check.add_argument("--seed", type=int, default=0, help="for random inputs and weights")
    check.add_argument("--json", help="write the whole report here")


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
    if args.no_manifest:
        words.append("--no-manifest")
    for name, shape in args.input_shape:
        words += ["--input-shape", f"{name}={','.join(str(d) for d in shape)}"]
    for module in args.plugin:
        words += ["--plugin", module]
    return shlex.join(words)


def _convert(args: argparse.Namespace, reporter: Reporter) -> int:
    _load_plugins(args)
    if args.check:
        return _check(args, reporter)
    bar = None
    if args.caffemodel is not None and not args.quiet and sys.stderr.isatty():
        from protocaffe.backend.progress import ProgressBar

        suffix = "safetensors" if args.format == "safetensors" else "pt"
        bar = ProgressBar(f"writing model.{suffix}", sys.stderr)
    try:
        _write_output(args, args.output, reporter, bar)
    finally:
        if bar is not None:
            bar.close()
    return EXIT_OK


def _write_output(
    args: argparse.Namespace, folder: str, reporter: Reporter, progress: Any = None
) -> None:
    """model.py, the weights and their manifest in `folder`, as `convert` writes them."""
    from protocaffe.api import write_conversion
    from protocaffe.passes import DEFAULT_PIPELINE, OPTIMIZE_PIPELINE

    write_conversion(
        args.prototxt,
        args.caffemodel,
        folder,
        fmt=args.format,
        input_shapes=dict(args.input_shape),
        passes=OPTIMIZE_PIPELINE if args.optimize else DEFAULT_PIPELINE,
        manifest=not args.no_manifest,
        reporter=reporter,
        progress=progress,
        command=regenerate_command(args),
        source_name=_shown_path(args.prototxt),
    )


def _check(args: argparse.Namespace, reporter: Reporter) -> int:
    """`convert --check`: generate into a temporary folder (with the very code that writes the
    real output, so bytes compare exactly) and diff that against the output folder."""
    import tempfile

    from protocaffe.backend.outputs import diff_files

    with tempfile.TemporaryDirectory(prefix="protocaffe-check-") as tmp:
        _write_output(args, tmp, reporter)
        files = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir())}
    # model.py last, as in a diff people read top-down: weights changes first would bury it.
    order = sorted(files, key=lambda name: (name == "model.py", name))
    diff = diff_files(Path(args.output), {name: files[name] for name in order})
    if diff:
        sys.stdout.write(diff)
        print(
            f"{Path(args.output).as_posix()}: out of date; regenerate with the command in "
            "model.py's header",
            file=sys.stderr,
        )
        return EXIT_MISMATCH
    return EXIT_OK


def _inspect(args: argparse.Namespace, reporter: Reporter) -> int:
    from protocaffe.passes import DEFAULT_PIPELINE, OPTIMIZE_PIPELINE

    _load_plugins(args)
    passes = OPTIMIZE_PIPELINE if args.optimize else DEFAULT_PIPELINE
    if args.ir or args.dump_ir:
        from protocaffe import api
        from protocaffe.ir.printer import format_graph

        def dump(step: str, graph: Graph) -> None:
            sys.stdout.write(f"# IR after {step}\n{format_graph(graph)}\n")

        graph = api.compile(
            args.prototxt,
            input_shapes=dict(args.input_shape),
            passes=passes,
            reporter=reporter,
            dump=dump if args.dump_ir else None,
        )
        if args.ir:
            sys.stdout.write(format_graph(graph))
        return EXIT_OK
    from protocaffe.views.table import layer_table, table_json, table_text

    table = layer_table(args.prototxt, dict(args.input_shape), reporter, passes)
    sys.stdout.write(table_json(table) if args.json else table_text(table))
    return EXIT_OK


def _graph(args: argparse.Namespace, reporter: Reporter) -> int:
    from protocaffe.views.dot import write_picture

    _load_plugins(args)
    write_picture(args.prototxt, Path(args.output), dict(args.input_shape), args.optimize, reporter)
    return EXIT_OK


def _random_weights(args: argparse.Namespace, reporter: Reporter) -> int:
    from protocaffe.random_weights import random_weights

    _load_plugins(args)
    random_weights(
        args.prototxt,
        args.output,
        seed=args.seed,
        input_shapes=dict(args.input_shape),
        reporter=reporter,
    )
    return EXIT_OK


def _verify(args: argparse.Namespace, reporter: Reporter) -> int:
    from protocaffe.verify.cli import run_verify

    _load_plugins(args)
    return run_verify(args, reporter)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    reporter = Reporter()
    commands = {
        "convert": _convert,
        "random-weights": _random_weights,
        "verify": _verify,
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
    except OSError as exc:
        # An output path that cannot be written (-o names a file, a read-only folder, ...) is
        # bad input too: one line, not a traceback. Input files are read (and reported) earlier.
        _report(reporter, args.quiet)
        # exc.filename may be a temporary name; os.replace's target (filename2) is the output.
        where = exc.filename2 if exc.filename2 is not None else args.output
        print(f"{where}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug in protocaffe: still one line, never a traceback
        _report(reporter, args.quiet)
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(
            f"protocaffe: internal error ({message}); please report it with the input files",
            file=sys.stderr,
        )
        return EXIT_ERROR
    _report(reporter, args.quiet)
    return status


def run() -> NoReturn:
    """The console entry point: `main` with a garbage collector tuned for one short run, then
    an exit that skips tearing down the interpreter.

    Freeing every object black, jinja2 and protobuf made costs about 50 ms of CPU, a fifth of
    everything protocaffe itself does for a 670-layer net. The outputs are closed and renamed by
    then and nothing registers exit handlers, so only the standard streams need flushing.
    """
    # One conversion is one short process that makes many objects and keeps most of them (the
    # graph, black's syntax trees): with the default thresholds the cyclic collector runs
    # thousands of times and spends a quarter of black's time re-scanning the same live objects.
    # Collecting 50x less often keeps memory bounded and makes ResNet-152's model.py 25% faster.
    gc.set_threshold(50_000, 20, 100)
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    run()
