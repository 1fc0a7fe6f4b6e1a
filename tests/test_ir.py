"""The graph IR's printer and verifier: one line per node, and a broken pass named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from protocaffe import api
from protocaffe.ir.graph import Graph
from protocaffe.ir.printer import format_graph
from protocaffe.ir.verify import GraphInvariantError
from protocaffe.passes import DEFAULT_PIPELINE, LOWERING, OPTIMIZE_PIPELINE, run_pipeline

REPO = Path(__file__).resolve().parents[1]
TINYNET = REPO / "examples" / "tinynet" / "deploy.prototxt"
EDGE_CASES = REPO / "tests" / "fixtures" / "edge_cases.prototxt"


def drop_first_node(graph: Graph) -> Graph:
    """A broken pass: its outputs are still read by the node after it."""
    return replace(graph, nodes=graph.nodes[1:])


def test_the_verifier_names_the_pass_that_broke_the_graph() -> None:
    graph = api.compile(TINYNET, passes=())
    broken = r"^after drop_first_node: conv1/bn: input %conv1.0 used before definition"
    with pytest.raises(GraphInvariantError, match=broken):
        run_pipeline(graph, (*DEFAULT_PIPELINE, drop_first_node))


def test_the_verifier_names_the_lowering_for_a_broken_input_graph() -> None:
    graph = drop_first_node(api.compile(TINYNET, passes=()))
    with pytest.raises(GraphInvariantError, match=f"^after {LOWERING}: "):
        run_pipeline(graph, DEFAULT_PIPELINE)


@pytest.mark.parametrize("prototxt", [TINYNET, EDGE_CASES], ids=["tinynet", "edge_cases"])
@pytest.mark.parametrize("passes", [DEFAULT_PIPELINE, OPTIMIZE_PIPELINE], ids=["plain", "opt"])
def test_one_line_per_node_whatever_the_names(prototxt: Path, passes: tuple[object, ...]) -> None:
    graph = api.compile(prototxt, passes=passes)  # type: ignore[arg-type]
    lines = format_graph(graph).splitlines()
    header, inputs, body = lines[0], lines[1], lines[2:]
    assert header.startswith("graph ") and inputs.startswith("inputs: %")
    node_lines = [line for line in body if not line.startswith(("outputs: ", "aliases: "))]
    assert len(node_lines) == len(graph.nodes)
    for node, line in zip(graph.nodes, node_lines, strict=True):
        assert f"{node.op}[{node.name!r}](" in line
        assert line.endswith(f":{node.loc.line}") or f":{node.loc.line}," in line
    assert str(graph) == format_graph(graph)


def test_dump_ir_shows_each_step(capsys: pytest.CaptureFixture[str]) -> None:
    from protocaffe.cli import main

    assert main(["inspect", str(TINYNET), "--dump-ir", "--optimize"]) == 0
    steps = [line for line in capsys.readouterr().out.splitlines() if line.startswith("# IR")]
    assert steps == [
        f"# IR after {name}" for name in [LOWERING] + [p.__name__ for p in OPTIMIZE_PIPELINE]
    ]


def test_the_readme_shows_tinynets_ir_as_printed() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("for `examples/tinynet`:\n\n") + len("for `examples/tinynet`:\n\n")
    block = readme[start : readme.index("\n\n", start) + 1]
    shown = "".join(line.removeprefix("    ") + "\n" for line in block.splitlines())
    assert shown == format_graph(api.compile(TINYNET)), "update README's 'How it works'"
