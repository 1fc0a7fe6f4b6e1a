"""Checks that generated code is safe whatever names the prototxt uses (shared by the tests).

A prototxt string may reach model.py only as an identifier from the allocator
(protocaffe.backend.names), as a repr() literal, or as quoted text in a comment or docstring. These
functions check a generated module against that rule by walking its AST and its tokens.
"""

from __future__ import annotations

import ast
import builtins
import io
import keyword
import re
import sys
import tokenize
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from protocaffe.api import GENERATED_PREFIX, Conversion
from protocaffe.backend.helpers import helper_names

# What the net class may call or read besides its own attributes and locals.
MODULE_NAMES = {"torch", "nn", "F", "self", "super", "Optional"}
API_NAMES = (
    set(dir(torch))
    | set(dir(nn))
    | set(dir(F))
    | set(dir(torch.Tensor))
    | {"indices", "values", "__init__"}
    # Parameters a generated line reads of a module (shared parameters, param groups).
    | {"weight", "bias"}
)


def quote_prototxt(text: str, raw_unicode: bool) -> str:
    """`text` as a prototxt string literal: printable ASCII as is, everything else escaped
    byte by byte (or, with `raw_unicode`, non-ASCII printable characters written as UTF-8)."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~" or (raw_unicode and char > "\x7f" and char.isprintable()):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8"))
    out.append('"')
    return "".join(out)


def _docstring(node: ast.AST) -> ast.Constant | None:
    body = getattr(node, "body", None)
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        return body[0].value
    return None


def check_generated(conversion: Conversion, prototxt_strings: list[str]) -> None:
    """Every property the issue asks of generated code, except running it."""
    source = conversion.source
    tree = ast.parse(source)

    # No line breaks other than "\n" (a \r, \x0c, \x85 or \u2028 would split a line for some
    # tools), and no non-printable characters at all.
    assert source.splitlines() == source.split("\n")[:-1]
    assert all(ch.isprintable() for line in source.split("\n") for ch in line), "unprintable"

    # Comments: each is one token on one line; a prototxt name inside one is repr()'d.
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            assert tok.start[0] == tok.end[0]
            assert "\n" not in tok.string and "\r" not in tok.string

    # The module: a docstring, imports, helper definitions, and the net class; nothing else.
    helpers = helper_names()
    class_name = conversion.class_name
    assert class_name.isidentifier() and not keyword.iskeyword(class_name)
    assert class_name not in MODULE_NAMES | helpers | set(dir(builtins))
    # A module with several outputs returns a NamedTuple of its own.
    outputs_class = conversion.emitted.parts.outputs_class
    generated = {class_name} | ({outputs_class} if outputs_class else set())
    top = tree.body
    assert _docstring(tree) is not None
    for stmt in top[1:]:
        if isinstance(stmt, ast.Import):
            assert [a.name for a in stmt.names] in (["torch"], ["torch.nn.functional"])
        elif isinstance(stmt, ast.ImportFrom):
            assert stmt.module in ("torch", "typing")
        elif isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
            assert stmt.name in helpers | generated
        else:
            raise AssertionError(f"unexpected statement at module level: {ast.dump(stmt)}")
    classes = [s for s in top if isinstance(s, ast.ClassDef) and s.name == class_name]
    assert len(classes) == 1
    net = classes[0]
    for helper in (s for s in top if isinstance(s, (ast.FunctionDef, ast.ClassDef))):
        if helper.name == outputs_class:
            _check_outputs_class(helper, conversion)
        elif helper is not net:
            assert ast.unparse(helper) == _helper_tree(helper.name), "helper text changed"

    # Docstrings: each prototxt string in them is a repr() with quotes escaped (doc_text), kept
    # whole when the docstring is wrapped (checked below).
    module_doc = _docstring(tree)
    assert module_doc is not None
    class_doc = _docstring(net)
    assert class_doc is not None

    # The class: a docstring, __init__, forward and caffe_param_groups.
    methods = net.body[1:]
    names = [m.name for m in methods if isinstance(m, ast.FunctionDef)]
    assert names == ["__init__", "forward", "caffe_param_groups"]
    assert len(methods) == 3
    init, forward, groups = methods
    assert isinstance(init, ast.FunctionDef) and isinstance(forward, ast.FunctionDef)
    assert isinstance(groups, ast.FunctionDef)

    attrs = set(conversion.emitted.attrs.values())
    locals_ = list(conversion.emitted.locals.values())
    # Identifiers: unique per value, valid, not keywords, not shadowing what the code uses.
    assert len(set(locals_)) == len(locals_)
    for ident in [*attrs, *locals_]:
        assert ident.isidentifier() and not keyword.iskeyword(ident), ident
        assert not ident.startswith("__"), ident
    for ident in locals_:
        assert ident not in MODULE_NAMES | helpers | set(dir(builtins)), ident
    for ident in attrs:
        assert not hasattr(nn.Module(), ident), ident

    # __init__: super().__init__() then one assignment per attribute, each assigned once; a
    # shared parameter (`self.a.weight = self.b.weight`) and `self.a[.weight].requires_grad_(
    # False)` for lr_mult 0 may follow an attribute's assignment.
    assert ast.unparse(init.body[0]) == "super().__init__()"
    assigned: list[str] = []
    for stmt in init.body[1:]:
        if isinstance(stmt, ast.Expr):
            assert re.fullmatch(r"self\.\w+(\.\w+)?\.requires_grad_\(False\)", ast.unparse(stmt))
            _check_expression(stmt.value, set(), attrs, helpers)
            continue
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, ast.dump(stmt)
        target = stmt.targets[0]
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute):
            assert re.fullmatch(r"self\.\w+\.\w+ = self\.\w+\.\w+", ast.unparse(stmt))
            _check_expression(stmt, set(), attrs, helpers)
            continue
        assert isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
        assert target.value.id == "self"
        assigned.append(target.attr)
        _check_expression(stmt.value, set(), attrs, helpers)
    assert len(set(assigned)) == len(assigned)
    assert attrs <= set(assigned)

    # caffe_param_groups: a docstring, then a list of {"params": [self.a.b, ...], "lr_mult":
    # float, "decay_mult": float}.
    assert isinstance(groups.body[-1], ast.Return) and len(groups.body) == 2
    returned = groups.body[-1].value
    assert isinstance(returned, ast.List)
    group_keys = []
    for group in returned.elts:
        assert isinstance(group, ast.Dict)
        assert [ast.literal_eval(k) for k in group.keys] == ["params", "lr_mult", "decay_mult"]
        group_keys += group.keys
        _check_expression(group.values[0], set(), attrs, helpers)
        assert all(isinstance(v, ast.Constant) for v in group.values[1:])

    # forward: its arguments and assignments only bind allocated locals; then one return.
    args = [a.arg for a in forward.args.args]
    assert args[0] == "self" and set(args[1:]) <= set(locals_)
    bound = set(args[1:])
    body = forward.body[:-1]
    # The prologue may re-bind each 4-D input once, to channels-last, and only in this form.
    while body and re.fullmatch(
        r"(\w+) = \1\.contiguous\(memory_format=torch\.channels_last\)", ast.unparse(body[0])
    ):
        assert ast.unparse(body[0]).split(" = ")[0] in args[1:], ast.unparse(body[0])
        body = body[1:]
    for stmt in body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, ast.dump(stmt)
        target = stmt.targets[0]
        names = target.elts if isinstance(target, ast.Tuple) else [target]
        _check_expression(stmt.value, bound, attrs, helpers)
        for name in names:
            assert isinstance(name, ast.Name) and name.id in locals_, ast.dump(name)
            assert name.id not in bound, f"{name.id} assigned twice"
            bound.add(name.id)
    assert isinstance(forward.body[-1], ast.Return)
    _check_expression(forward.body[-1].value, bound | generated, attrs, helpers)

    # String constants anywhere in the net class other than its docstrings and the groups' keys:
    # none.
    docs = [class_doc, *(_docstring(m) for m in (init, forward, groups)), *group_keys]
    for node in ast.walk(net):
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            assert any(node is doc for doc in docs)
    # The docstrings' values hold names as repr()s: printable, one line each.
    graph = conversion.graph
    assert repr(graph.name or "net") in module_doc.value
    assert repr(graph.name or "net") in class_doc.value
    for value in graph.inputs + graph.outputs:
        assert repr(value.blob) in class_doc.value
    for doc in (module_doc.value, class_doc.value):
        assert all(ch.isprintable() or ch == "\n" for ch in doc)
    # Every name the net uses was one of the prototxt's strings.
    used = {node.name for node in graph.nodes} | {v.blob for v in graph.inputs}
    assert used <= set(prototxt_strings)


def _check_outputs_class(cls: ast.ClassDef, conversion: Conversion) -> None:
    """The NamedTuple: a docstring, then `field: torch.Tensor` per output, the fields being
    allocated identifiers that may not start with "_"."""
    assert [ast.unparse(b) for b in cls.bases] == ["NamedTuple"]
    fields = [f.name for f in conversion.emitted.parts.output_fields]
    assert len(fields) == len(conversion.graph.outputs) == len(cls.body) - 1
    for stmt, field in zip(cls.body[1:], fields, strict=True):
        assert isinstance(stmt, ast.AnnAssign) and stmt.value is None
        assert ast.unparse(stmt.target) == field and ast.unparse(stmt.annotation) == "torch.Tensor"
        assert field.isidentifier() and not keyword.iskeyword(field)
        assert not field.startswith("_") and field not in ("count", "index")
    assert len(set(fields)) == len(fields)


def _check_expression(
    expr: ast.AST | None, bound: set[str], attrs: set[str], helpers: frozenset[str]
) -> None:
    """An expression may use bound locals, self.<attr>, torch/nn/F, helpers and literals."""
    if expr is None:
        return
    for node in ast.walk(expr):
        if isinstance(node, ast.Name):
            assert node.id in bound | MODULE_NAMES | helpers, f"name {node.id!r}"
        elif isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                assert node.attr in attrs, f"self.{node.attr}"
            else:
                assert node.attr in API_NAMES, f"attribute {node.attr!r}"
        elif isinstance(node, ast.Constant):
            assert isinstance(node.value, (int, float, bool, type(None), type(...))), node.value
        elif isinstance(node, (ast.Lambda, ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)):
            raise AssertionError(f"unexpected {type(node).__name__}")


_HELPER_TREES: dict[str, str] = {}


def _helper_tree(name: str) -> str:
    """The text of top-level function or class `name` as its helper file defines it (a helper
    file may define private functions beside its public one)."""
    if not _HELPER_TREES:
        from protocaffe.backend.helpers import templates_dir

        for path in sorted((templates_dir() / "helpers").glob("*.py")):
            for stmt in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
                    _HELPER_TREES[stmt.name] = ast.unparse(stmt)
    return _HELPER_TREES[name]


# -- effects of importing and running ---------------------------------------------------------

_EVENTS: list[tuple[str, tuple[Any, ...]]] = []
_RECORDING = [False]
# Audit events that mean the code touched the world outside the process's memory.
_FORBIDDEN_PREFIXES = (
    "open",
    "os.",
    "subprocess.",
    "socket.",
    "shutil.",
    "ctypes.",
    "urllib.",
    "http.",
    "import",
    "builtins.input",
    "pickle.",
    "marshal.",
    "sys.settrace",
    "sys.setprofile",
    "sys._getframe",
    "object.__setattr__",
    "setopencode",
    "webbrowser.",
)


def _namedtuple_setup(event: str, args: tuple[Any, ...]) -> bool:
    """typing.NamedTuple building the module's outputs class sets attributes of the class it
    makes and of its __new__ (object.__setattr__ events about nothing outside the module)."""
    if event != "object.__setattr__" or not args:
        return False
    target = args[0]
    if isinstance(target, type):
        return issubclass(target, tuple) and hasattr(target, "_fields")
    return getattr(target, "__name__", None) == "__new__"


def _hook(event: str, args: tuple[Any, ...]) -> None:
    recorded = _RECORDING[0] and event.startswith(_FORBIDDEN_PREFIXES)
    if recorded and not _namedtuple_setup(event, args):
        _EVENTS.append((event, args))


_HOOKED = [False]


@contextmanager
def no_side_effects() -> Iterator[None]:
    """Fails if the body opens files, runs processes, imports modules, ... (audit events).

    The hook is added once per process and only records while the body runs."""
    if not _HOOKED[0]:
        sys.addaudithook(_hook)
        _HOOKED[0] = True
    modules = set(sys.modules)
    _EVENTS.clear()
    _RECORDING[0] = True
    try:
        yield
    finally:
        _RECORDING[0] = False
    # The generated module itself is registered by protocaffe (so that its classes pickle).
    new_modules = {m for m in set(sys.modules) - modules if not m.startswith(GENERATED_PREFIX)}
    assert not new_modules, f"imported {sorted(new_modules)}"
    assert not _EVENTS, f"side effects: {_EVENTS[:5]}"
