"""The streamed comparison: each blob is compared as soon as the module and the reference both
have it, and dropped when no later comparison needs it.

The module side hands over its locals one statement at a time (record.py); each is tied to a
value of the graph (one Caffe layer's top, named by the layer's position in the prototxt), and
the reference is advanced until it has produced that layer. A reference blob is kept only
until every layer that reads it has been compared (a diagnosis or a tie check looks at a
layer's inputs); a module blob is not kept at all, except after a near tie (see ties.py),
where the layers it feeds are checked on the module's own values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from protocaffe.frontend.prototxt import LayerDef, NetDef
from protocaffe.ir.graph import Graph, Node, Value
from protocaffe.layers import layer_of
from protocaffe.verify.backend import RefStep
from protocaffe.verify.compare import (
    Status,
    Tolerance,
    comparable,
    diagnose_affine,
    diagnose_combination,
    diagnose_permutation,
    diagnose_shape,
    errors,
    within,
)
from protocaffe.verify.record import Assignment
from protocaffe.verify.report import BlobRow
from protocaffe.verify.ties import (
    TieCheck,
    argmax_ties,
    detection_errors,
    mask_ties,
    match_detections,
)

Key = tuple[int, int]  # (layer position in the prototxt, top position)
LocalCheck = Callable[[int, Sequence[np.ndarray]], list[np.ndarray]]


def node_positions(net: NetDef, graph: Graph) -> dict[int, int]:
    """For each node of `graph` (by its index): the position of its Caffe layer in the prototxt.
    Layers are told apart by position, not by name (Caffe lets layers share a name): a node is
    the next layer of its name written at its location."""
    by_place: dict[tuple[str, int, int], list[int]] = {}
    for index, layer in enumerate(net.layers):
        by_place.setdefault((layer.name, layer.loc.line, layer.loc.col), []).append(index)
    taken: Counter[tuple[str, int, int]] = Counter()
    found: dict[int, int] = {}
    for index, node in enumerate(graph.nodes):
        place = (node.name, node.loc.line, node.loc.col)
        candidates = by_place.get(place, [])
        if taken[place] < len(candidates):
            found[index] = candidates[taken[place]]
            taken[place] += 1
    return found


@dataclass
class Plan:
    """What the module's recorded statements stand for, worked out before it runs."""

    # assignment index -> the graph value of each target (None: not a Caffe blob)
    targets: dict[int, list[Value | None]] = field(default_factory=dict)
    # node index -> (the node it was folded into, the line) for layers --optimize folded
    folded: dict[int, tuple[int, int]] = field(default_factory=dict)


def plan_assignments(
    graph: Graph, assignments: Sequence[Assignment], by_local: Mapping[str, Value]
) -> Plan:
    """Tie each statement of forward() to the graph values it computes: by the layers its trace
    comment names (the last one, on a line --optimize folded; the next layer of that name and
    type, or the one whose generated variable name it assigns, when layers share a name), else
    by its variable names."""
    plan = Plan()
    index_of = {id(node): i for i, node in enumerate(graph.nodes)}
    by_name: dict[tuple[str, str], list[Node]] = {}
    for node in graph.nodes:
        by_name.setdefault((node.name, node.op), []).append(node)
    local_of = {value: name for name, value in by_local.items()}
    claimed: set[int] = set()

    def pick(name: str, kind: str, targets: Sequence[str]) -> Node | None:
        candidates = by_name.get((name, kind)) or [
            n for (n_name, _), nodes in by_name.items() if n_name == name for n in nodes
        ]
        if not candidates:
            return None
        if len(candidates) > 1:
            for node in candidates:
                if any(local_of.get(v) in targets for v in node.outputs):
                    return node
            free = [n for n in candidates if index_of[id(n)] not in claimed]
            return free[0] if free else candidates[-1]
        return candidates[0]

    for assignment in assignments:
        values: list[Value | None] = [by_local.get(t) for t in assignment.targets]
        if assignment.layers:
            name, kind = assignment.layers[-1]
            chosen = pick(name, kind, assignment.targets)
            if chosen is not None and len(chosen.outputs) == len(assignment.targets):
                values = list(chosen.outputs)
                claimed.add(index_of[id(chosen)])
                for folded_name, folded_kind in assignment.layers[:-1]:
                    inner = pick(folded_name, folded_kind, ())
                    if inner is not None and inner is not chosen:
                        claimed.add(index_of[id(inner)])
                        plan.folded[index_of[id(inner)]] = (index_of[id(chosen)], assignment.line)
        plan.targets[assignment.index] = values
    return plan


@dataclass
class _Result:
    array_shape: tuple[int, ...]
    row: BlobRow


class Comparison:
    """One streamed comparison of a module's recorded values with a reference's steps."""

    def __init__(
        self,
        net: NetDef,
        graph: Graph,
        plan: Plan,
        steps: Iterator[RefStep],
        tolerance: Tolerance,
        *,
        lines: Mapping[int, int] | None = None,
        local_check: LocalCheck | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.lines = dict(lines or {})
        # The net's inputs, which both sides were given (a layer's input may be one).
        self.graph_inputs: dict[Value, np.ndarray] = {}
        self.net = net
        self.graph = graph
        self.plan = plan
        self.steps = steps
        self.tol = tolerance
        self.local_check = local_check
        self.progress = progress
        self.positions = node_positions(net, graph)
        self.node_of: dict[Value, int] = {}
        self.key_of: dict[Value, Key] = {}
        self.wanted: set[Key] = set()
        self.total = 0
        self.reset_plan()
        self.users: Counter[Value] = Counter()
        for node in graph.nodes:
            for value in dict.fromkeys(node.inputs):
                self.users[value] += 1
        self.rewritten = self._rewritten_keys()
        self.pending: dict[Key, np.ndarray] = {}
        self.ref_shapes: dict[Key, tuple[int, ...]] = {}
        self.frontier = -1
        self.exhausted = False
        self.results: dict[Value, _Result] = {}
        self.kept_ours: dict[Value, np.ndarray] = {}  # after a near tie
        self.tie_source: dict[Value, str] = {}  # value -> the layer whose tie it follows
        self.done_nodes: set[int] = set()
        self.diagnosed = False

    def reset_plan(self) -> None:
        """Index the values to compare after `plan` changed (the module's statements are known
        once it is built, which may be after the reference started)."""
        self.node_of.clear()
        self.key_of.clear()
        for index, node in enumerate(self.graph.nodes):
            for top, value in enumerate(node.outputs):
                self.node_of[value] = index
                if index in self.positions and index not in self.plan.folded:
                    self.key_of[value] = (self.positions[index], top)
        self.wanted = set(self.key_of.values())
        # How many statements assign each value: its reference blob is kept until the last.
        self.deliveries = Counter(
            v for values in self.plan.targets.values() for v in values if v is not None
        )
        self.total = sum(
            len(n.outputs) for i, n in enumerate(self.graph.nodes) if i not in self.plan.folded
        )
        for key in [k for k in getattr(self, "pending", {}) if k not in self.wanted]:
            del self.pending[key]

    # --- the reference side ---------------------------------------------------------------

    def _rewritten_keys(self) -> set[Key]:
        """Tops whose blob a later layer writes in place: the reference overwrites them, so
        they are copied when kept."""
        last_write: dict[str, int] = {}
        for index, layer in enumerate(self.net.layers):
            for top in layer.tops:
                last_write[top] = index
        return {
            (index, j)
            for index, layer in enumerate(self.net.layers)
            for j, top in enumerate(layer.tops)
            if last_write[top] > index
        }

    def _advance(self) -> bool:
        try:
            step = next(self.steps)
        except StopIteration:
            self.exhausted = True
            return False
        self.frontier = max(self.frontier, step.layer)
        for top, array in step.tops.items():
            key = (step.layer, top)
            self.ref_shapes[key] = tuple(int(d) for d in np.shape(array))
            if key in self.wanted:
                value = np.asarray(array)
                self.pending[key] = value.copy() if key in self.rewritten else value
        return True

    def _fetch(self, key: Key) -> np.ndarray | None:
        while key not in self.pending and not self.exhausted and self.frontier <= key[0]:
            self._advance()
        return self.pending.get(key)

    def _ref(self, value: Value) -> np.ndarray | None:
        given = self.graph_inputs.get(value)
        if given is not None:
            return given
        key = self.key_of.get(value)
        return None if key is None else self.pending.get(key)

    def prime(self) -> None:
        """Take the reference's first step (an eager reference runs the whole net here)."""
        if not self.exhausted and self.frontier < 0:
            self._advance()

    # --- the module side -------------------------------------------------------------------

    def record(self, index: int, values: tuple[Any, ...]) -> None:
        targets = self.plan.targets.get(index, [])
        for value, tensor in zip(targets, values, strict=False):
            if value is None or value not in self.node_of:
                continue
            self.deliveries[value] -= 1
            array = _numpy(tensor)
            if array is None:
                continue
            if value in self.results:
                # Assigned again (a hand-edited file): the last assignment is what flows on.
                self._redeliver(value, array, self.lines.get(index))
                continue
            self._deliver(value, array, self.lines.get(index))

    def _redeliver(self, value: Value, ours: np.ndarray, line: int | None) -> None:
        key = self.key_of.get(value)
        if key is None or key not in self.pending:
            return
        node_index = self.node_of[value]
        node = self.graph.nodes[node_index]
        row = self._row(
            node_index, node, node.outputs.index(value), value, ours, self.pending[key], line
        )
        self.results[value] = _Result(tuple(ours.shape), row)
        self._release(value)

    def _deliver(self, value: Value, ours: np.ndarray, line: int | None) -> None:
        node_index = self.node_of[value]
        node = self.graph.nodes[node_index]
        top = node.outputs.index(value)
        key = self.key_of.get(value)
        ref = self._fetch(key) if key is not None else None
        row = self._row(node_index, node, top, value, ours, ref, line)
        self.results[value] = _Result(tuple(ours.shape), row)
        if self.progress is not None:
            self.progress(len(self.results), self.total)
        if all(v in self.results for v in node.outputs):
            # The node is done: its inputs have one reader fewer (and so have those of the
            # layers folded into it), and its own outputs may go once nobody reads them.
            self.done_nodes.add(node_index)
            readers = [node] + [
                self.graph.nodes[inner]
                for inner, (into, _) in self.plan.folded.items()
                if into == node_index
            ]
            for reader in readers:
                for used in dict.fromkeys(reader.inputs):
                    self.users[used] -= 1
                    self._release(used)
            for out in node.outputs:
                self._release(out)

    def _release(self, value: Value) -> None:
        if self.users[value] > 0 or value not in self.results or self.deliveries[value] > 0:
            return
        key = self.key_of.get(value)
        if key is not None:
            self.pending.pop(key, None)
        self.kept_ours.pop(value, None)

    # --- one row ---------------------------------------------------------------------------

    def _row(
        self,
        node_index: int,
        node: Node,
        top: int,
        value: Value,
        ours: np.ndarray,
        ref: np.ndarray | None,
        line: int | None,
    ) -> BlobRow:
        position = self.positions.get(node_index)
        row = BlobRow(
            layer=node.name,
            type=node.op,
            blob=value.blob,
            ours_shape=tuple(ours.shape),
            ref_shape=tuple(ref.shape) if ref is not None else None,
            max_abs=None,
            max_rel=None,
            status=Status.NO_REFERENCE,
            line=line,
            position=position,
        )
        if ref is None:
            return row
        layer = self.net.layers[position] if position is not None else None
        aligned = comparable(ours, ref)
        if aligned is None:
            special = self._detections(row, node, layer, ours, ref)
            if special is not None:
                return special
            return self._failed(
                replace(
                    row,
                    status=Status.SHAPE,
                    diagnosis=diagnose_shape(node.op, ours.shape, ref.shape),
                ),
                node,
                ours,
                None,
                False,
            )
        err = errors(ours, aligned)
        row = replace(
            row,
            max_abs=err.max_abs,
            max_rel=err.max_rel,
            tolerance_ratio=_ratio(err.max_abs, err.ref_max, self.tol),
        )
        index = self._is_index(node, top, layer)
        if index:
            # Indices are equal or not: a tolerance relative to the largest index would pass
            # an index that points at the neighbouring element.
            if np.array_equal(ours, aligned):
                return replace(row, status=Status.MATCH, tolerance_ratio=0.0)
            row = replace(row, tolerance_ratio=max(row.tolerance_ratio or 0.0, 1.0 + 1e-9))
        elif within(err, self.tol):
            return replace(row, status=Status.MATCH)
        special = self._detections(row, node, layer, ours, aligned)
        if special is None:
            special = self._index_ties(row, node, top, layer, ours, aligned)
        if special is None:
            special = self._after_tie(row, node, top, value, layer, ours)
        if special is not None:
            return special
        return self._failed(replace(row, status=Status.MISMATCH), node, ours, aligned, index)

    def _detections(
        self, row: BlobRow, node: Node, layer: LayerDef | None, ours: np.ndarray, ref: np.ndarray
    ) -> BlobRow | None:
        if (
            layer is None
            or layer.type != "DetectionOutput"
            or detection_errors(ours, ref, self.tol)
        ):
            return None
        keep = int(layer.param.detection_output_param.keep_top_k)
        found = match_detections(ours, ref, self.tol, keep)
        if found is None or not found.matched or not within(found.err, self.tol):
            return None
        return replace(
            row,
            status=Status.MATCH,
            max_abs=found.err.max_abs,
            max_rel=found.err.max_rel,
            tolerance_ratio=_ratio(found.err.max_abs, found.err.ref_max, self.tol),
            note=found.note,
        )

    @staticmethod
    def _is_index(node: Node, top: int, layer: LayerDef | None) -> bool:
        """Whether the top holds indices (MAX pooling's mask, ArgMax without its values)."""
        if top == 1 and layer_of(node).records_argmax(node.attrs):
            return True
        return (
            layer is not None
            and layer.type == "ArgMax"
            and not layer.param.argmax_param.out_max_val
        )

    def _index_ties(
        self,
        row: BlobRow,
        node: Node,
        top: int,
        layer: LayerDef | None,
        ours: np.ndarray,
        ref: np.ndarray,
    ) -> BlobRow | None:
        """An argmax output (MAX pooling's mask, ArgMax) that differs only where the
        reference's competing values tie within tolerance."""
        if layer is None or not node.inputs:
            return None
        bottom = self._ref(node.inputs[0])
        pooled = self._ref(node.outputs[0])
        if bottom is None:
            return None
        check = self._tie_check(node, top, layer, ours, ref, bottom, [pooled])
        if check is None or not check.explained:
            return None
        self._keep(node.outputs[top], ours, node.name)
        return replace(
            row,
            status=Status.TIE,
            note=f"{check.ties} of {ours.size} elements pick another of two values equal within "
            "tolerance (a near tie in the reference's input)",
        )

    def _tie_check(
        self,
        node: Node,
        top: int,
        layer: LayerDef,
        ours: np.ndarray,
        ref: np.ndarray,
        bottom: np.ndarray,
        ref_tops: Sequence[np.ndarray | None],
    ) -> TieCheck | None:
        """The tie rule of an index top: a MAX pooling's mask (the reference's pooled top
        gives each window's maximum) or an ArgMax's indices."""
        if top == 1 and layer_of(node).records_argmax(node.attrs):
            pooled = ref_tops[0] if ref_tops else None
            return None if pooled is None else mask_ties(ours, ref, bottom, pooled, self.tol)
        if layer.type == "ArgMax" and not layer.param.argmax_param.out_max_val:
            p = layer.param.argmax_param
            axis = int(p.axis) if p.HasField("axis") else None
            return argmax_ties(ours, ref, bottom, axis, self.tol)
        return None

    def _after_tie(
        self,
        row: BlobRow,
        node: Node,
        top: int,
        value: Value,
        layer: LayerDef | None,
        ours: np.ndarray,
    ) -> BlobRow | None:
        """A layer fed by a value that differs through an accepted near tie: checked with the
        numpy reference on the module's own inputs."""
        sources = [self.tie_source[v] for v in node.inputs if v in self.tie_source]
        if not sources or self.local_check is None or layer is None:
            return None
        position = self.positions.get(self.node_of[value])
        if position is None:
            return None
        bottoms = []
        for v in node.inputs[: len(layer.bottoms)]:
            mine = self.kept_ours.get(v)
            theirs = mine if mine is not None else self._ref(v)
            if theirs is None:
                return None
            bottoms.append(theirs)
        try:
            local = self.local_check(position, bottoms)
        except Exception:  # the reference refuses these inputs: not explained
            return None
        if top >= len(local):
            return None
        expected = comparable(ours, local[top])
        if expected is None:
            return None
        if self._is_index(node, top, layer):
            # Indices on the module's inputs: equal, or a choice between tied inputs there.
            if not np.array_equal(ours, expected):
                check = self._tie_check(node, top, layer, ours, expected, bottoms[0], local)
                if check is None or not check.explained:
                    return None
        elif not within(errors(ours, expected), self.tol):
            return None
        self._keep(value, ours, sources[0])
        return replace(
            row,
            status=Status.TIE,
            note=f"matches the numpy reference of this layer run on the module's inputs; differs "
            f"from the reference's blob through the near tie at {sources[0]!r}",
        )

    def _keep(self, value: Value, ours: np.ndarray, source: str) -> None:
        self.tie_source[value] = source
        if self.users[value] > 0:
            self.kept_ours[value] = np.array(ours, copy=True)

    def _failed(
        self, row: BlobRow, node: Node, ours: np.ndarray, ref: np.ndarray | None, index: bool
    ) -> BlobRow:
        if self.diagnosed or row.status is not Status.MISMATCH or ref is None:
            self.diagnosed = True
            return row
        self.diagnosed = True
        if index:
            differ = int(np.count_nonzero(ours != ref))
            return replace(
                row,
                diagnosis=f"{differ} of {ours.size} indices point at other elements than the "
                "reference's, and their values are not equal within tolerance (no near tie)",
            )
        diagnosis = diagnose_permutation(ours, ref, self.tol) or diagnose_affine(
            ours, ref, self.tol
        )
        if diagnosis is None:
            diagnosis = self._sum_diagnosis(node, ours)
        return replace(row, diagnosis=diagnosis) if diagnosis else row

    def _sum_diagnosis(self, node: Node, ours: np.ndarray) -> str | None:
        coeffs = layer_of(node).sum_coefficients(node.attrs, len(node.inputs))
        if coeffs is None:
            return None
        bottoms = [self._ref(v) for v in node.inputs]
        if any(b is None for b in bottoms):
            return None
        arrays = [
            b.reshape(ours.shape) if b.size == ours.size else b for b in bottoms if b is not None
        ]
        return diagnose_combination(ours, arrays, coeffs, self.tol)

    # --- the end ---------------------------------------------------------------------------

    def finish(self) -> list[BlobRow]:
        """Every row in graph order: blobs the module never computed, layers it folded."""
        if any(
            key not in self.ref_shapes for v, key in self.key_of.items() if v not in self.results
        ):
            while not self.exhausted:
                self._advance()
                self.pending.clear()
        self.pending.clear()
        self.kept_ours.clear()
        rows: list[BlobRow] = []
        row_of: dict[Value, int] = {}
        for index, node in enumerate(self.graph.nodes):
            position = self.positions.get(index)
            for top, value in enumerate(node.outputs):
                result = self.results.get(value)
                if result is not None:
                    row = result.row
                elif index in self.plan.folded:
                    into, line = self.plan.folded[index]
                    target = self.graph.nodes[into]
                    row = BlobRow(
                        layer=node.name,
                        type=node.op,
                        blob=value.blob,
                        ours_shape=None,
                        ref_shape=None,
                        max_abs=None,
                        max_rel=None,
                        status=Status.FOLDED,
                        line=line,
                        position=position,
                        note=f"folded into {target.name!r} (model.py line {line})",
                    )
                else:
                    key = (position, top) if position is not None else None
                    shape = self.ref_shapes.get(key) if key is not None else None
                    row = BlobRow(
                        layer=node.name,
                        type=node.op,
                        blob=value.blob,
                        ours_shape=None,
                        ref_shape=shape,
                        max_abs=None,
                        max_rel=None,
                        status=Status.MISSING,
                        position=position,
                    )
                row_of[value] = len(rows)
                rows.append(row)
        _blame_skipped(self.graph, rows, row_of)
        return rows


def _ratio(max_abs: float, ref_max: float, tol: Tolerance) -> float:
    allowed = tol.atol + tol.rtol * ref_max
    return max_abs / allowed if allowed > 0 else (0.0 if max_abs == 0 else float("inf"))


def _numpy(tensor: Any) -> np.ndarray | None:
    detach = getattr(tensor, "detach", None)
    if detach is None:
        return None
    value = detach()
    if getattr(value, "is_complex", lambda: False)():
        return None
    array: np.ndarray = value.cpu().numpy()
    return array


def _blame_skipped(graph: Graph, rows: list[BlobRow], row_of: Mapping[Value, int]) -> None:
    """A blob the module never computed is fine (a hand-edited file may fuse layers) until a
    blob computed from it diverges: then the earliest such ancestor is where it went wrong."""
    first = next((r for r in rows if r.status.failed), None)
    if first is None:
        return
    node = next(
        n
        for n in graph.nodes
        for v in n.outputs
        if row_of.get(v) is not None and rows[row_of[v]] is first
    )
    producers = {v: n for n in graph.nodes for v in n.outputs}
    seen: set[Value] = set()
    stack = list(node.inputs)
    skipped: list[int] = []
    while stack:
        value = stack.pop()
        if value in seen:
            continue
        seen.add(value)
        index = row_of.get(value)
        if index is not None and rows[index].status is Status.MISSING:
            skipped.append(index)
        producer = producers.get(value)
        if producer is not None:
            stack.extend(producer.inputs)
    if skipped:
        earliest = min(skipped)
        rows[earliest] = replace(
            rows[earliest],
            status=Status.SKIPPED,
            diagnosis=f"the module does not compute this layer, and {node.name!r} (computed"
            " from it) diverges: the layer was dropped or bypassed",
        )
