"""The house rules of src/protocaffe, checked on its source (docs/architecture.md explains them).

1. Floors: a package imports only packages on lower floors (and itself), never one on its own
   floor or above. Every import counts: at module level, inside functions, under TYPE_CHECKING.
2. The Caffe readers of frontend/ (all of it but the lowering) import nothing above the schema,
   so that a second implementation of Caffe (a numpy reference) can read nets without the
   compiler.
3. Generating model.py imports neither torch nor numpy.
4. Layer code takes its attributes typed (`Layer[PoolAttrs]`), never `assert isinstance(attrs`.
5. The plugin example and the README's plugin import only the published plugin API.
6. The numpy reference (verify/reference/) is a second implementation of Caffe: besides itself
   it imports numpy, the standard library, protocaffe's errors, the schema (proto/) and the
   frontend readers, never the lowering, the IR, the layers, the passes or the backend.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = SRC / "protocaffe"

# The floors, bottom up. A unit is a subpackage or a top-level module of protocaffe.
FLOORS: dict[str, int] = {
    # 0: the foundation: located diagnostics, atomic file publishing, the version, the schema.
    "protocaffe.errors": 0,
    "protocaffe.atomic": 0,
    "protocaffe.version": 0,
    "protocaffe.proto": 0,
    # 1: the graph IR (Value, Node, Graph), its verifier and its printer.
    "protocaffe.ir": 1,
    # 2: the op library: one Layer per Caffe type, the registry, plugin loading.
    "protocaffe.layers": 2,
    # 3: readers and the lowering NetDef -> Graph; Graph -> Graph passes.
    "protocaffe.frontend": 3,
    "protocaffe.passes": 3,
    # 4: emission, naming, templates, black, weights.
    "protocaffe.backend": 4,
    # 5: the library API (compile, convert, load) and random weights.
    "protocaffe.api": 5,
    "protocaffe.random_weights": 5,
    # 6: the tools built on a compiled graph; `generate`'s config.
    "protocaffe.verify": 6,
    "protocaffe.views": 6,
    "protocaffe.config": 6,
    # 7: the command line, the published plugin API and the package's own facade.
    "protocaffe.cli": 7,
    "protocaffe.plugins": 7,
    "protocaffe": 7,
    # 8: `python -m protocaffe`.
    "protocaffe.__main__": 8,
}

# frontend/ modules that may import above the schema: only the lowering builds the IR.
FRONTEND_LOWERING = {"protocaffe.frontend.lower"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str:
    """The floor unit a module belongs to: protocaffe.<first part>, or the root package."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import of protocaffe in the file, anywhere in it."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("protocaffe")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "protocaffe":
                # `from protocaffe import api` imports a submodule; `__version__` the root.
                for alias in node.names:
                    sub = f"protocaffe.{alias.name}"
                    is_module = (PACKAGE / alias.name).is_dir() or (
                        PACKAGE / f"{alias.name}.py"
                    ).is_file()
                    found.append((node.lineno, sub if is_module else "protocaffe"))
            elif node.module.startswith("protocaffe."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}:{node.lineno}: relative import; write it absolute")
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_floor() -> None:
    units = {_unit(_module_name(path)) for path in MODULES}
    assert units <= set(FLOORS), f"put these in FLOORS: {sorted(units - set(FLOORS))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_package_imports_one_on_its_floor_or_above(path: Path) -> None:
    module = _module_name(path)
    unit = _unit(module)
    floor = FLOORS[unit]
    wrong = [
        f"{path.relative_to(REPO)}:{line}: {unit} (floor {floor}) imports {target} "
        f"(floor {FLOORS[_unit(target)]})"
        for line, target in _imports(path)
        if _unit(target) != unit and FLOORS[_unit(target)] >= floor
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if _unit(_module_name(p)) == "protocaffe.frontend"],
    ids=lambda p: p.name,
)
def test_the_readers_import_nothing_above_the_schema(path: Path) -> None:
    module = _module_name(path)
    if module in FRONTEND_LOWERING:
        return
    wrong = [
        f"{path.relative_to(REPO)}:{line}: a reader imports {target}"
        for line, target in _imports(path)
        if (FLOORS[_unit(target)] > 0 and _unit(target) != "protocaffe.frontend")
        or target in FRONTEND_LOWERING
    ]
    assert not wrong, "\n".join(wrong)


REFERENCE = PACKAGE / "verify" / "reference"
# What the numpy reference may import of protocaffe (prefixes), and of third parties.
REFERENCE_MAY_IMPORT = ("protocaffe.errors", "protocaffe.proto", "protocaffe.verify.reference")
REFERENCE_THIRD_PARTY = {"numpy"}


def _reference_import_problems(path: Path) -> list[str]:
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    wrong = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [(node.lineno, node.module)]
        else:
            continue
        for line, name in names:
            top = name.split(".")[0]
            if top == "protocaffe":
                reader = _unit(name) == "protocaffe.frontend" and name not in FRONTEND_LOWERING
                if not (reader or name.startswith(REFERENCE_MAY_IMPORT)):
                    wrong.append(f"{shown}:{line}: the reference imports {name}")
            elif top not in sys.stdlib_module_names and top not in REFERENCE_THIRD_PARTY:
                wrong.append(f"{shown}:{line}: the reference imports {name}")
    return wrong


@pytest.mark.parametrize(
    "path", sorted(REFERENCE.rglob("*.py")), ids=lambda p: str(p.relative_to(REFERENCE))
)
def test_the_reference_imports_only_numpy_the_schema_and_the_readers(path: Path) -> None:
    wrong = _reference_import_problems(path)
    assert not wrong, "\n".join(wrong)


def test_the_reference_rule_sees_the_compiler(tmp_path: Path) -> None:
    """The rule is not vacuous: the lowering, the layers and torch are each refused."""
    bad = tmp_path / "probe.py"
    bad.write_text(
        "import torch\n"
        "from protocaffe.frontend.lower import build_graph\n"
        "from protocaffe.layers import lookup\n"
        "from protocaffe.frontend.prototxt import read_prototxt\n"
    )
    found = _reference_import_problems(bad)
    assert [line.rsplit(" ", 1)[-1] for line in found] == [
        "torch",
        "protocaffe.frontend.lower",
        "protocaffe.layers",
    ]


def test_the_floor_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The rule is not vacuous: an import from the IR up into the layers is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from protocaffe.layers import lookup\n")
    line, target = _imports(bad)[0]
    assert (line, _unit(target)) == (2, "protocaffe.layers")
    assert FLOORS[_unit(target)] > FLOORS["protocaffe.ir"]


TINY = REPO / "examples" / "tinynet"
NO_WEIGHTS = [str(TINY / "deploy.prototxt")]
WEIGHTS = [*NO_WEIGHTS, str(TINY / "tinynet.caffemodel")]


def _imported_after(script: str) -> list[str]:
    """Which of torch and numpy a fresh interpreter has imported after `script`."""
    probe = script + "\nprint(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    done = subprocess.run(
        [sys.executable, "-c", "import sys\n" + probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return list(ast.literal_eval(done.stdout.strip().splitlines()[-1]))


def test_generating_code_imports_neither_torch_nor_numpy() -> None:
    script = (
        "from protocaffe.api import convert\n"
        "from protocaffe.views.table import layer_table\n"
        f"convert({NO_WEIGHTS[0]!r})\n"
        f"layer_table({NO_WEIGHTS[0]!r})\n"
    )
    assert _imported_after(script) == []


@pytest.mark.parametrize(
    ("args", "imported"),
    [
        ([*NO_WEIGHTS, "-o", "{out}"], []),
        ([*NO_WEIGHTS, "-o", "{out}", "--check"], []),
        ([*WEIGHTS, "-o", "{out}"], ["numpy"]),
        ([*WEIGHTS, "-o", "{out}", "--check"], ["numpy"]),
        ([*WEIGHTS, "-o", "{out}", "--no-manifest", "--optimize"], ["numpy"]),
    ],
    ids=["no-weights", "no-weights-check", "safetensors", "safetensors-check", "optimize"],
)
def test_the_command_line_converts_without_torch(
    tmp_path: Path, args: list[str], imported: list[str]
) -> None:
    """What the pre-commit hooks run: `convert` and `convert --check` never import torch (the
    light install has none), and without weights not even numpy."""
    argv = ["convert", *(a.format(out=tmp_path / "out") for a in args)]
    script = f"from protocaffe.cli import main\nstatus = main({argv!r})\nassert status in (0, 1)\n"
    assert _imported_after(script) == imported


def test_layer_code_is_typed_by_its_attributes() -> None:
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for path in [*MODULES, *sorted((REPO / "examples").rglob("*.py"))]
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "assert isinstance(attrs" in line
    ]
    assert not found, "make the layer generic in its attributes (Layer[MyAttrs]): " + ", ".join(
        found
    )


def _plugin_imports(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("protocaffe")
        ):
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules |= {a.name for a in node.names if a.name.startswith("protocaffe")}
    return modules


def test_plugins_import_only_the_published_api() -> None:
    example = (REPO / "examples" / "plugins" / "faster_rcnn_proposal.py").read_text()
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Writing one") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n", 10)]
    assert _plugin_imports(example) == {"protocaffe.plugins"}
    assert _plugin_imports(code) == {"protocaffe.plugins"}


FORK_TYPES = (
    "Normalize",
    "Permute",
    "PriorBox",
    "DetectionOutput",
    "BN",
    "Interp",
    "Upsample",
    "ConvolutionDepthwise",
    "ShuffleChannel",
    "ReLU6",
    "Axpy",
    "ROIPooling",
)


@pytest.mark.parametrize("type_name", FORK_TYPES)
def test_fork_layers_name_their_source(type_name: str) -> None:
    from protocaffe.layers import lookup

    kind = lookup(type_name)
    assert kind is not None
    assert "Source" in (type(kind).__doc__ or ""), f"{type(kind).__name__}: name the fork's file"
    table = (REPO / "docs" / "fork-layers.md").read_text(encoding="utf-8")
    assert f"| `{type_name}` |" in table
