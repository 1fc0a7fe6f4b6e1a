"""Choose the module's outputs (`--outputs`): any blobs of the net instead of Caffe's.

A blob is named as Caffe names it. An in-place layer writes a blob several times; the name
means its last version, the one Caffe's `net.blobs[name]` holds after a forward pass (so
`conv1` in `conv1 -> BatchNorm -> Scale -> ReLU`, all in place, is the rectified one). The
module then computes only what those outputs need: every other layer, and every input that
no kept layer reads, is left out. The outputs come in the order they are named.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import replace

from protocaffe.errors import ProtocaffeError, SourceLoc
from protocaffe.ir.graph import Graph, Node, Value


def select_outputs(names: Sequence[str]) -> Callable[[Graph], Graph]:
    """The pass that makes the blobs `names` the outputs and removes what they do not need."""
    wanted = tuple(names)

    def select_outputs(graph: Graph) -> Graph:
        return _select(graph, wanted)

    return select_outputs


def _select(graph: Graph, names: tuple[str, ...]) -> Graph:
    where = SourceLoc(graph.source)
    latest: dict[str, Value] = {v.blob: v for v in graph.inputs}
    producers: dict[Value, Node] = {}
    for node in graph.nodes:
        for value in node.outputs:
            latest[value.blob] = value  # later versions replace earlier ones
            producers[value] = node
    if not names:
        raise ProtocaffeError.at(where, "--outputs names no blob")
    outputs: list[Value] = []
    for name in names:
        if name not in latest:
            close = difflib.get_close_matches(name, sorted(latest), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ProtocaffeError.at(
                where, f"--outputs names {name!r}, which is no blob of the net{hint}"
            )
        if latest[name] in outputs:
            raise ProtocaffeError.at(where, f"--outputs names {name!r} twice")
        outputs.append(latest[name])
    needed: set[int] = set()  # ids of the nodes the outputs need
    pending = list(outputs)
    seen: set[Value] = set()
    while pending:
        value = pending.pop()
        if value in seen:
            continue
        seen.add(value)
        producer = producers.get(value)
        if producer is not None and id(producer) not in needed:
            needed.add(id(producer))
            pending.extend(producer.inputs)
    return replace(
        graph,
        inputs=tuple(v for v in graph.inputs if v in seen),
        nodes=tuple(n for n in graph.nodes if id(n) in needed),
        outputs=tuple(outputs),
        output_names=tuple(names),
        left_out=graph.left_out + tuple(n.name for n in graph.nodes if id(n) not in needed),
    )
