"""The `protocaffe` command line.

Bad input ends in one line per diagnostic on stderr (`file:line: layer "name" (Type): message`)
and exit status 2, with no traceback and no output file left behind.
"""

from __future__ import annotations

import argparse
import gc
import keyword
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from protocaffe.config import path_argument
from protocaffe.errors import ProtocaffeError, Reporter, Severity, SourceLoc
from protocaffe.frontend.dialects import DIALECTS
from protocaffe.version import __version__

if TYPE_CHECKING:
    from protocaffe.api import Conversion
    from protocaffe.ir.graph import Graph
    from protocaffe.verify.report import VerifyReport

EXIT_OK, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2

# What `load`, `verify` and `--format pt` need and a plain `pip install protocaffe` leaves out.
TORCH_INSTALL = "pip install 'protocaffe[torch]'"


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
    command.add_argument("prototxt", type=path_argument)
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
        "--dialect",
        action="append",
        default=[],
        choices=sorted(DIALECTS),
        metavar="NAME",
        help="read the net as this Caffe fork does where forks give one prototxt two meanings "
        f"(repeatable; one of: {', '.join(sorted(DIALECTS))}; see 'Fork dialects' in the "
        "README); without it protocaffe follows BVLC Caffe and notes the layers a dialect "
        "would change",
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

    convert = _command(
        sub,
        "convert",
        "write model.py (and the weights) for a Caffe net",
        quiet="print errors only (no warnings, notes or the line that says what was written)",
    )
    convert.add_argument("caffemodel", nargs="?", type=path_argument)
    convert.add_argument("-o", "--output", required=True, type=path_argument, help="output folder")
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
    _add_outputs(convert)
    convert.add_argument(
        "--phase",
        choices=("TEST", "TRAIN"),
        default="TEST",
        help="which layers of a train_val net to keep, by their include/exclude rules "
        "(default TEST, as a deploy net runs)",
    )
    _add_net_state(convert)
    convert.add_argument(
        "--class-name",
        type=_class_name,
        metavar="NAME",
        help="the module's class name (default: the net's name, made an identifier)",
    )
    convert.add_argument(
        "--force",
        action="store_true",
        help="replace a model.py that protocaffe did not write (its docstring does not say "
        "'generated by protocaffe')",
    )
    _add_preprocess(convert)
    _add_generate(sub)

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

    solver = sub.add_parser(
        "solver", help="write optim.py: a Caffe solver.prototxt as a PyTorch optimizer"
    )
    solver.add_argument("solver", metavar="solver.prototxt")
    solver.add_argument("-o", "--output", required=True, help="the file to write, e.g. optim.py")
    solver.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    solver.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with a diff if the file on disk differs from the output",
    )
    return parser


def _class_name(text: str) -> str:
    if not text.isidentifier() or keyword.iskeyword(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Python identifier")
    return text


def _add_preprocess(convert: argparse.ArgumentParser) -> None:
    """convert's image options: with any of them (or a data layer's transform_param), model.py
    gets a preprocess(image) equal to cv2.dnn.blobFromImage with these arguments."""
    group = convert.add_argument_group(
        "preprocessing",
        "write preprocess(image) into model.py: the input blob as cv2.dnn.blobFromImage makes "
        "it (these override a train_val data layer's transform_param, which gives the same)",
    )
    group.add_argument("--scale", type=float, help="blobFromImage scalefactor (default 1)")
    group.add_argument(
        "--mean", type=_floats, metavar="B,G,R", help="subtracted per channel of the blob"
    )
    group.add_argument(
        "--mean-file",
        type=path_argument,
        metavar="MEAN.binaryproto",
        help="subtract the per-channel average of this Caffe mean image",
    )
    group.add_argument("--swap-rb", action="store_true", default=None, help="BGR -> RGB")
    group.add_argument(
        "--size", type=_size, metavar="WxH", help="resize to this (default: the input's size)"
    )
    group.add_argument(
        "--crop",
        action="store_true",
        default=None,
        help="resize keeping the aspect ratio to cover --size, then take the centre",
    )
    group.add_argument(
        "--gray",
        action="store_true",
        default=None,
        help="a one-channel blob (colour images are made gray); the default for 1-channel nets",
    )


def _image_options(args: argparse.Namespace) -> Any:
    from protocaffe.backend.preprocess import ImageOptions

    if args.mean is not None and args.mean_file is not None:
        raise ProtocaffeError.at(SourceLoc("--mean-file"), "give --mean or --mean-file, not both")
    return ImageOptions(
        scale=args.scale,
        mean=args.mean,
        mean_file=args.mean_file,
        swap_rb=args.swap_rb,
        size=args.size,
        crop=args.crop,
        gray=args.gray,
    )


def _add_generate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    generate = sub.add_parser(
        "generate",
        help="convert every net listed in the config ([[tool.protocaffe.nets]] in "
        "pyproject.toml or protocaffe.toml), in parallel",
    )
    generate.add_argument(
        "--config",
        type=path_argument,
        help="the config file (default: protocaffe.toml, or pyproject.toml with "
        "[tool.protocaffe], in this folder or the nearest parent that has one)",
    )
    generate.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with the diffs of every net whose files are out of date",
    )
    generate.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    generate.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="conversions at once (default: the number of CPUs)",
    )


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    try:
        size = (int(width), int(height))
    except ValueError:
        size = (0, 0)
    if not sep or min(size) <= 0:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    return size


def _names(text: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    if not names:
        raise argparse.ArgumentTypeError(f"expected NAME[,NAME...], got {text!r}")
    return names


def _add_net_state(command: argparse.ArgumentParser) -> None:
    """--level and --stage: the rest of Caffe's net state (the phase is convert's --phase)."""
    command.add_argument(
        "--level",
        type=int,
        default=0,
        help="the net state's level for the include/exclude rules (min_level, max_level; "
        "default 0, as pycaffe's caffe.Net)",
    )
    command.add_argument(
        "--stage",
        action="append",
        metavar="NAME",
        help="a stage of the net state for the include/exclude rules (stage, not_stage), added "
        "to those of the file's own state {}; repeatable",
    )


def _add_outputs(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--outputs",
        type=_names,
        action="extend",
        metavar="NAME[,NAME...]",
        help="return these blobs (e.g. the logits before Softmax) instead of Caffe's outputs, "
        "and leave out every layer and input they do not need; an in-place blob is its last "
        "version",
    )


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
    check.add_argument(
        "--reference",
        choices=("auto", "caffe", "opencv", "numpy"),
        default="auto",
        help="what to compare with (default auto: real Caffe if installed, else OpenCV if it "
        "imports the net, else the numpy reference; each falls through, with its reason, when "
        "it cannot run the net)",
    )
    check.add_argument("--rtol", type=float, default=None, help="relative to the blob's max")
    check.add_argument("--atol", type=float, default=None)
    check.add_argument("--seed", type=int, default=0, help="for random inputs and weights")
    check.add_argument("--json", help="write the whole report here ('-': to stdout)")
    check.add_argument(
        "--optimize",
        action="store_true",
        help="verify the module --optimize makes (generated, or the given --module)",
    )
    check.add_argument(
        "--brief",
        action="store_true",
        help="print only the blobs that differ, the first divergence with its neighbours, "
        "and the summary",
    )
    check.add_argument(
        "--graph",
        metavar="FILE",
        help="draw the net with each blob coloured by its error (.svg, .png, .pdf or .dot)",
    )
    _add_outputs(check)
    _add_net_state(check)


def _report(reporter: Reporter, quiet: bool) -> None:
    for diagnostic in reporter.diagnostics:
        if quiet and diagnostic.severity is not Severity.ERROR:
            continue
        print(diagnostic, file=sys.stderr)


def _shown_path(path: str, folder: str) -> str:
    """`path` as the header shows it: relative to the output folder, so that the header is the
    same whatever folder convert ran in (and its command runs from the output folder)."""
    try:
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    except ValueError:  # another drive: no relative path
        return os.path.abspath(path).replace(os.sep, "/")
    return relative.replace(os.sep, "/")


# convert's options that say how to run, not what to write: the header leaves them out.
_NOT_RECORDED = frozenset({"help", "check", "quiet", "force"})


def _convert_parser() -> argparse.ArgumentParser:
    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            convert: argparse.ArgumentParser = action.choices["convert"]
            return convert
    raise AssertionError("no convert command")  # pragma: no cover


def _number(value: float) -> str:
    return repr(value).removesuffix(".0")


def _word(action: argparse.Action, value: Any) -> str:
    """An option's value as the command line writes it: what its type reads back."""
    if action.type is _input_shape:
        return f"{value[0]}=" + ",".join(str(d) for d in value[1])
    if action.type is _size:
        return f"{value[0]}x{value[1]}"
    if action.type is _names:  # --outputs: the extended list, as one NAME[,NAME...]
        return ",".join(value)
    if action.type is _floats:
        return ",".join(_number(v) for v in value)
    if isinstance(value, float):
        return _number(value)
    return str(value)


def regenerate_command(args: argparse.Namespace) -> str:
    """The `protocaffe convert` command line that reproduces this output, for the generated
    file's header: run in the output folder (`-o .`), with every path relative to it, and
    every option convert has that was given (none of --check, --quiet, --force).

    The options are read from convert's argparse definition, so a new option is recorded
    without a change here (a value that its type does not read back from `str(value)` needs a
    line in `_word`)."""
    folder = args.output

    def shown(action: argparse.Action, value: object) -> str:
        if action.type is path_argument:
            return _shown_path(str(value), folder)
        return _word(action, value)

    words = ["protocaffe", "convert"]
    options: list[str] = ["-o", "."]
    for action in _convert_parser()._actions:
        value = getattr(args, action.dest, None)
        if action.dest in _NOT_RECORDED or action.dest == "output" or value is None:
            continue
        if not action.option_strings:
            words.append(shown(action, value))
            continue
        if value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:
            options.append(flag)
        elif isinstance(action, argparse._AppendAction) and action.type is not _names:
            for item in value:
                options += [flag, shown(action, item)]
        else:
            options += [flag, shown(action, value)]
    return shlex.join(words + options)


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
        conversion = _write_output(args, args.output, reporter, bar)
    finally:
        if bar is not None:
            bar.close()
    # The notes and warnings first, then one line that says what was written.
    _report(reporter, args.quiet)
    reporter.diagnostics.clear()
    if not args.quiet:
        print(_written(Path(args.output), conversion), file=sys.stderr)
    return EXIT_OK


def _written(folder: Path, conversion: Conversion) -> str:
    """convert's last line: what it wrote (and removed), the class, its size."""
    from protocaffe.views.cost import parameter_count

    removed = ""
    if conversion.removed:
        removed = f"; removed {', '.join(conversion.removed)} (an earlier conversion's)"
    parameters = sum(parameter_count(node) for node in conversion.graph.nodes)
    size = f"{conversion.weight_bytes:,} weight bytes" if conversion.arrays is not None else ""
    return (
        f"{folder.as_posix()}: wrote {', '.join(conversion.written)}{removed}: class "
        f"{conversion.class_name}, {parameters:,} parameters, {size or 'no weights'}"
    )


def _write_output(
    args: argparse.Namespace, folder: str, reporter: Reporter, progress: Any = None
) -> Conversion:
    """model.py, the weights and their manifest in `folder`, as `convert` writes them."""
    from protocaffe.api import write_conversion
    from protocaffe.passes import DEFAULT_PIPELINE, OPTIMIZE_PIPELINE

    return write_conversion(
        args.prototxt,
        args.caffemodel,
        folder,
        fmt=args.format,
        input_shapes=dict(args.input_shape),
        outputs=args.outputs,
        phase=args.phase,
        level=args.level,
        stages=args.stage or (),
        passes=OPTIMIZE_PIPELINE if args.optimize else DEFAULT_PIPELINE,
        manifest=not args.no_manifest,
        reporter=reporter,
        progress=progress,
        command=regenerate_command(args),
        source_name=_shown_path(args.prototxt, args.output),
        class_name=args.class_name,
        preprocess=_image_options(args),
        force=args.force,
        dialects=args.dialect,
    )


def _check(args: argparse.Namespace, reporter: Reporter) -> int:
    """`convert --check`: generate into a temporary folder (with the very code that writes the
    real output, so bytes compare exactly) and diff that against the output folder."""
    import tempfile

    from protocaffe.backend.outputs import diff_files, earlier_outputs

    with tempfile.TemporaryDirectory(prefix="protocaffe-check-") as tmp:
        _write_output(args, tmp, reporter)
        files = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir())}
    # model.py last, as in a diff people read top-down: weights changes first would bury it.
    output = Path(args.output)
    diff = diff_files(output, {name: files[name] for name in sorted(files) if name != "model.py"})
    for stale in earlier_outputs(output, files):
        diff += f"Only on disk: {stale.as_posix()} (convert removes it)\n"
    diff += diff_files(output, {"model.py": files["model.py"]})
    if diff:
        sys.stdout.write(diff)
        print(
            f"{output.as_posix()}: out of date; regenerate with the command in model.py's header",
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
            dialects=args.dialect,
        )
        if args.ir:
            sys.stdout.write(format_graph(graph))
        return EXIT_OK
    from protocaffe.views.table import layer_table, table_json, table_text

    table = layer_table(args.prototxt, dict(args.input_shape), reporter, passes, args.dialect)
    sys.stdout.write(table_json(table) if args.json else table_text(table))
    return EXIT_OK


def _graph(args: argparse.Namespace, reporter: Reporter) -> int:
    from protocaffe.views.dot import write_picture

    _load_plugins(args)
    write_picture(
        args.prototxt,
        Path(args.output),
        dict(args.input_shape),
        args.optimize,
        reporter,
        dialects=args.dialect,
    )
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
        dialects=args.dialect,
    )
    return EXIT_OK


def _verify(args: argparse.Namespace, reporter: Reporter) -> int:
    from protocaffe.verify.cli import run_verify

    _load_plugins(args)
    if args.graph is None:
        return run_verify(args, reporter)
    from protocaffe.views.dot import check_picture_path

    picture = Path(args.graph)
    check_picture_path(picture)  # before the verification, which may take a while

    def draw(report: VerifyReport) -> None:
        from protocaffe.views.dot import BlobMark, write_verify_picture

        first = report.first_divergent
        marks = [
            BlobMark(row.tolerance_ratio, row.status.value, row.status.failed, row is first)
            for row in report.rows
        ]
        write_verify_picture(args.prototxt, picture, report.inputs, marks)

    return run_verify(args, reporter, draw)


def _solver(args: argparse.Namespace, reporter: Reporter) -> int:
    from protocaffe.atomic import write_text
    from protocaffe.backend.optim import solver_source
    from protocaffe.backend.outputs import diff_files

    # As convert's header: the command runs in the output's folder, paths relative to it.
    folder = os.path.dirname(args.output) or "."
    solver = _shown_path(args.solver, folder)
    command = ["protocaffe", "solver", solver, "-o", os.path.basename(args.output)]
    text = solver_source(args.solver, reporter, shlex.join(command), solver)
    output = Path(args.output)
    if not args.check:
        write_text(output, text)
        return EXIT_OK
    diff = diff_files(output.parent, {output.name: text.encode("utf-8")})
    if diff:
        sys.stdout.write(diff)
        print(
            f"{output.as_posix()}: out of date; regenerate with the command in its header",
            file=sys.stderr,
        )
        return EXIT_MISMATCH
    return EXIT_OK


def _generate(args: argparse.Namespace, reporter: Reporter) -> int:
    """`protocaffe generate`: every net of the config, each in a process of its own (in the
    config's folder, so that paths and messages are the same from any folder), reported in
    config order: what convert prints, or, with --check, `OUT: up to date`."""
    from concurrent.futures import ProcessPoolExecutor

    from protocaffe.config import find_config, read_config

    path = Path(args.config) if args.config is not None else find_config(Path.cwd())
    if path is None:
        raise ProtocaffeError.at(
            SourceLoc(Path.cwd().as_posix()),
            "no protocaffe.toml, or pyproject.toml with [tool.protocaffe], here or in a parent "
            "folder; give one with --config",
        )
    config = read_config(path, _convert_parser())
    mode = ["--check"] if args.check else []
    mode += ["--quiet"] if args.quiet else []
    jobs = [(str(config.folder), [*net.argv, *mode]) for net in config.nets]
    status = EXIT_OK
    with ProcessPoolExecutor(max(1, min(args.jobs, len(jobs)))) as pool:
        for net, (code, out, err) in zip(config.nets, pool.map(_generate_one, jobs), strict=True):
            sys.stdout.write(out)
            sys.stderr.write(err)
            if args.check and code == EXIT_OK and not args.quiet:
                print(f"{net.out}: up to date", file=sys.stderr)
            status = max(status, code)
    return status


def _generate_one(job: tuple[str, list[str]]) -> tuple[int, str, str]:
    """One net of `generate`, in a worker process: convert's exit status, stdout and stderr."""
    import contextlib
    import io

    folder, argv = job
    os.chdir(folder)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["convert", *argv])
    return code, out.getvalue(), err.getvalue()


def _needs_torch(args: argparse.Namespace) -> str | None:
    """The command, if this run needs PyTorch (conversion itself never imports it)."""
    if args.command == "verify":
        return "protocaffe verify"
    if args.command == "convert" and args.format == "pt":
        return "protocaffe convert --format pt"
    return None


def _torch_missing(what: str) -> str:
    return f"{what} needs PyTorch, which is not installed: {TORCH_INSTALL}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    reporter = Reporter()
    commands = {
        "convert": _convert,
        "generate": _generate,
        "random-weights": _random_weights,
        "verify": _verify,
        "inspect": _inspect,
        "graph": _graph,
        "solver": _solver,
    }
    needs_torch = _needs_torch(args)
    if needs_torch is not None:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            print(_torch_missing(needs_torch), file=sys.stderr)
            return EXIT_ERROR
    try:
        status = commands[args.command](args, reporter)
    except ProtocaffeError as exc:
        _report(reporter, args.quiet)
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # stdout closed early (`protocaffe verify ... | head`): nothing more to say.
        return 141
    except OSError as exc:
        # An output path that cannot be written (-o names a file, a read-only folder, ...) is
        # bad input too: one line, not a traceback. Input files are read (and reported) earlier.
        _report(reporter, args.quiet)
        # exc.filename may be a temporary name; os.replace's target (filename2) is the output.
        where = exc.filename2 if exc.filename2 is not None else getattr(args, "output", None)
        print(f"{where}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        _report(reporter, args.quiet)
        if exc.name is not None and exc.name.split(".")[0] == "torch":
            print(_torch_missing(f"protocaffe {args.command}"), file=sys.stderr)
        else:
            print(f"protocaffe {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
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
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader of the output went away
        status = status or 141
    os._exit(status)


if __name__ == "__main__":
    run()
