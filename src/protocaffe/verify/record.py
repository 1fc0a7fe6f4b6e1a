"""Record every intermediate tensor of a model.py's `forward()`, on the file as written.

How: the module source is parsed with `ast`; in the class's `forward` (only there) a call
`__protocaffe_record__(index, (a, b))` is inserted after each statement that assigns plain local
names, and the rewritten tree is compiled and executed in a fresh module object. Nothing is
written to disk, and the user's file keeps no debugging hooks.

Why this and not the alternatives:
- forward hooks see only submodules, while most generated lines are plain calls
  (`torch.cat`, `torch.relu`, arithmetic) that no hook observes;
- torch.fx tracing renames values, fails on data-dependent Python and on some helpers, and
  maps its nodes back to source lines only approximately;
- the AST rewrite sees exactly the statements the user wrote, in execution order, with their
  line numbers, so each recorded value can be tied to the trace comment on its line.

Only forward()'s own statements are recorded (nested blocks included): a hand-edited file that
moves lines into another method leaves those blobs "not computed", which is reported, and
blamed only if a blob computed from them diverges.

Each assignment is tied to a Caffe layer by its trace comment (`# 'conv1' Convolution ...`,
trailing or on the line above, as the backend writes it), which survives renaming a variable;
assignments without one are matched later by variable name. A line `--optimize` folded names
every layer it computes (`# 'conv1' Convolution + 'bn1' BatchNorm + 'scale1' Scale`): its value
is the blob of the last one.

The values are handed over one statement at a time (`bind(sink)`, `sink.record(index,
values)`), so a caller can compare and drop each as it comes. With `release=True` each local
is also set to None after the last top-level statement of forward() that mentions it, so the
module keeps no more intermediates alive than its dataflow needs (a generated forward() holds
every local until it returns).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

RECORD_FN = "__protocaffe_record__"

# A trace comment starts with the layer name as a Python string literal, then the layer type.
_TRACE = re.compile(r"""^\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\s+([\w.\-]+)""")


@dataclass(frozen=True)
class Assignment:
    """One recorded statement of forward(): the names it assigns and the layer it traces to."""

    index: int
    targets: tuple[str, ...]
    line: int
    layer: str | None  # from the trace comment, if there is one (the last layer it names)
    layer_type: str | None
    # Every (layer, type) the trace comment names: more than one on a line --optimize folded,
    # whose value is the last layer's blob; the others were folded into it.
    layers: tuple[tuple[str, str], ...] = ()


class Sink(Protocol):
    def record(self, index: int, values: tuple[Any, ...]) -> None: ...


@dataclass
class Recording:
    """What one forward() call produced: each statement's values, in execution order, each a
    copy taken when its line ran."""

    assignments: list[Assignment]
    values: list[tuple[int, tuple[Any, ...]]] = field(default_factory=list)

    def record(self, index: int, values: tuple[Any, ...]) -> None:
        self.values.append((index, tuple(_snapshot(v) for v in values)))


def _snapshot(value: Any) -> Any:
    # A copy, so that a later in-place operation in a hand-edited file cannot change it.
    detach = getattr(value, "detach", None)
    return detach().clone() if detach is not None else value


class InstrumentError(Exception):
    """The module cannot be instrumented (no such class, no forward, a syntax error)."""


def trace_comment(text: str) -> tuple[str, str] | None:
    """(layer name, layer type) from a trace comment's text (without the leading '#'); for a
    folded line, the last layer it names."""
    layers = trace_layers(text)
    return layers[-1] if layers else None


def trace_layers(text: str) -> tuple[tuple[str, str], ...]:
    """Every (layer name, layer type) a trace comment names: `'a' Convolution + 'b' Scale`."""
    found: list[tuple[str, str]] = []
    rest = text
    while True:
        match = _TRACE.match(rest)
        if match is None:
            break
        try:
            name = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError):
            break
        if not isinstance(name, str):
            break
        found.append((name, match.group(2)))
        rest = rest[match.end() :]
        if not rest.startswith(" + "):
            break
        rest = rest[len(" +") :]
    return tuple(found)


def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """line -> (comment text, whether the comment is alone on its line)."""
    found: dict[int, tuple[str, bool]] = {}
    code_lines: set[int] = set()
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            found[tok.start[0]] = (tok.string[1:], False)
        elif tok.type not in skip:
            for line in range(tok.start[0], tok.end[0] + 1):
                code_lines.add(line)
    return {line: (text, line not in code_lines) for line, (text, _) in found.items()}


def _targets(stmt: ast.stmt) -> tuple[str, ...] | None:
    """The plain local names a statement assigns, or None if it assigns anything else."""
    if isinstance(stmt, ast.Assign):
        if len(stmt.targets) != 1:
            return None
        target: ast.expr = stmt.targets[0]
    elif isinstance(stmt, ast.AnnAssign | ast.AugAssign):
        target = stmt.target
    else:
        return None
    if isinstance(target, ast.Name):
        return (target.id,)
    if isinstance(target, ast.Tuple | ast.List) and all(
        isinstance(e, ast.Name) for e in target.elts
    ):
        return tuple(e.id for e in target.elts if isinstance(e, ast.Name))
    return None


class _Instrumenter(ast.NodeTransformer):
    def __init__(self, comments: dict[int, tuple[str, bool]]) -> None:
        self.comments = comments
        self.assignments: list[Assignment] = []

    def _trace(self, stmt: ast.stmt) -> tuple[tuple[str, str], ...]:
        end = stmt.end_lineno or stmt.lineno
        for line in range(stmt.lineno, end + 1):
            comment = self.comments.get(line)
            if comment is not None and not comment[1]:
                found = trace_layers(comment[0])
                if found:
                    return found
        above = self.comments.get(stmt.lineno - 1)
        if above is not None and above[1]:
            return trace_layers(above[0])
        return ()

    def _body(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in body:
            stmt = self.visit(stmt)
            out.append(stmt)
            names = _targets(stmt)
            if names is None:
                continue
            trace = self._trace(stmt)
            index = len(self.assignments)
            self.assignments.append(
                Assignment(
                    index,
                    names,
                    stmt.lineno,
                    trace[-1][0] if trace else None,
                    trace[-1][1] if trace else None,
                    trace,
                )
            )
            values = ast.Tuple([ast.Name(n, ast.Load()) for n in names], ast.Load())
            call = ast.Call(ast.Name(RECORD_FN, ast.Load()), [ast.Constant(index), values], [])
            out.append(ast.copy_location(ast.Expr(call), stmt))
        return out

    def generic_visit(self, node: ast.AST) -> ast.AST:
        # Nested blocks (if/for/with in a hand-edited forward) are instrumented too; nested
        # function definitions are left alone, their locals are not forward()'s.
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            return node
        for name in ("body", "orelse", "finalbody"):
            block = getattr(node, name, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                setattr(node, name, self._body(block))
        return node


def _find_forward(tree: ast.Module, class_name: str | None) -> tuple[ast.ClassDef, ast.FunctionDef]:
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    if class_name is not None:
        classes = [c for c in classes if c.name == class_name] or classes
    # The net is the last class with a forward (helper classes such as Scale come first).
    for cls in reversed(classes):
        for item in cls.body:
            if isinstance(item, ast.FunctionDef) and item.name == "forward":
                return cls, item
    raise InstrumentError("no class with a forward() method")


_DYNAMIC_SCOPE = frozenset({"locals", "vars", "eval", "exec", "globals"})


def _mentioned(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _release_locals(forward: ast.FunctionDef) -> None:
    """After the last top-level statement of forward() that mentions a local, set it to None,
    so that its tensor can be freed. Locals read by a nested function or lambda (which may run
    later) are kept, and nothing is released in a forward() that inspects its own scope."""
    body = forward.body
    mentioned = [_mentioned(stmt) for stmt in body]
    if any(_DYNAMIC_SCOPE & names for names in mentioned):
        return
    captured: set[str] = set()
    for node in ast.walk(forward):
        if node is not forward and isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef
        ):
            captured |= _mentioned(node)
        elif isinstance(node, ast.Global | ast.Nonlocal):
            captured.update(node.names)
    arguments = forward.args
    params = {a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]}
    assigned = {
        n.id for n in ast.walk(forward) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    local = (params | assigned) - captured - {"self"}
    last: dict[str, int] = {}
    for position, names in enumerate(mentioned):
        for name in names & local:
            last[name] = position
    out: list[ast.stmt] = []
    for position, stmt in enumerate(body):
        out.append(stmt)
        if isinstance(stmt, ast.Return | ast.Raise):
            continue
        done = sorted(name for name, at in last.items() if at == position)
        if done:
            targets: list[ast.expr] = [ast.Name(name, ast.Store()) for name in done]
            release = ast.Assign(
                [ast.Tuple(targets, ast.Store())] if len(targets) > 1 else targets,
                (
                    ast.Tuple([ast.Constant(None) for _ in done], ast.Load())
                    if len(done) > 1
                    else ast.Constant(None)
                ),
            )
            out.append(ast.copy_location(release, stmt))
    forward.body = out


@dataclass(frozen=True)
class Instrumented:
    """A model class whose forward() reports its intermediates to the bound sink."""

    cls: type
    class_name: str
    assignments: list[Assignment]
    bind: Callable[[Sink], None]


def instrument(
    source: str, class_name: str | None = None, filename: str = "model.py", release: bool = False
) -> Instrumented:
    """Compile `source` with its net class's forward() instrumented (and, with `release`, its
    locals dropped after their last use)."""
    try:
        tree = ast.parse(source, filename)
        comments = _comments(source)
    except (SyntaxError, tokenize.TokenError) as exc:
        raise InstrumentError(f"{filename} does not parse: {exc}") from exc
    cls_def, forward = _find_forward(tree, class_name)
    rewriter = _Instrumenter(comments)
    forward.body = rewriter._body(forward.body)
    if release:
        _release_locals(forward)
    ast.fix_missing_locations(tree)
    module = types.ModuleType("protocaffe_verified_model")
    module.__dict__["__file__"] = filename
    current: list[Sink] = []

    def record(index: int, values: tuple[Any, ...]) -> None:
        if current:
            current[-1].record(index, values)

    def bind(sink: Sink) -> None:
        current.clear()
        current.append(sink)

    module.__dict__[RECORD_FN] = record
    exec(compile(tree, filename, "exec"), module.__dict__)
    cls = module.__dict__[cls_def.name]
    return Instrumented(cls, cls_def.name, rewriter.assignments, bind)
