"""Which blobs share memory in real Caffe, and which reads see an in-place write made through
another name. Used to classify disagreements (issue 13, cause 5); see
/work/notes/issue13-research.md for the sources.

Caffe's rule (BVLC master 9b89154 and the SSD fork):
- Split gives every top the bottom's memory (split_layer.cpp, Forward_cpu: top[i]->ShareData);
  so do Reshape and Flatten (reshape_layer.cpp / flatten_layer.cpp, Reshape: ShareData), Concat
  with one bottom and Slice with one top (concat_layer.cpp / slice_layer.cpp, Reshape), and the
  SSD fork's Permute when the order is the identity (permute_layer.cpp, Forward_cpu). Net::Init
  also inserts a Split wherever a blob has more than one reader (insert_splits.cpp), so every
  reader of a blob reads the blob's memory.
- Layer::Forward calls Reshape first, so the sharing is re-established at every forward, in
  layer order: an alias always holds its source's memory when later layers run.
- An in-place layer (top == bottom) writes into its blob's memory, hence into every blob that
  shares it. Caffe refuses an in-place layer on a blob that another layer already read ("Top
  blob ... produced by multiple sources", net.cpp AppendTop, after InsertSplits renamed the
  bottom), so the write can only reach an older blob through an alias made from it.

A read of blob B is "stale" in SSA terms when some in-place layer wrote B's memory, through
another name, after B was defined: Caffe's reader then sees the written values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import Message


def _identity_permute(layer: Message) -> bool:
    order = list(layer.permute_param.order)  # type: ignore[attr-defined]
    # PermuteLayer::LayerSetUp completes a partial order with the missing axes in order, so a
    # prefix of 0, 1, 2, ... (or nothing) is the identity whatever the rank.
    return order == list(range(len(order)))


def shares_memory(layer: Message) -> bool:
    """Does `layer`'s (first) top share its bottom's memory in Caffe?"""
    kind = layer.type  # type: ignore[attr-defined]
    bottoms, tops = list(layer.bottom), list(layer.top)  # type: ignore[attr-defined]
    if len(bottoms) != 1 or not tops:
        return False
    if kind in ("Split", "Reshape", "Flatten"):
        return True
    if kind == "Concat":
        return True
    if kind == "Slice":
        return len(tops) == 1
    if kind == "Permute":
        return _identity_permute(layer)
    return False


@dataclass(frozen=True)
class StaleRead:
    """Layer `reader` (index) reads blob `blob`, whose memory in-place layer `writer` rewrote
    through the alias `through` after `blob` was defined."""

    reader: int
    blob: str
    writer: int
    through: str


def stale_reads(layers: Sequence[Message], outputs: Sequence[str] = ()) -> list[StaleRead]:
    """Every read (and every net output, with reader = len(layers)) that sees an in-place write
    made through another name. `layers` are the net's layers in file order (no Input layers
    needed: unknown blobs get their own memory)."""
    memory: dict[str, int] = {}
    fresh = iter(range(1_000_000))
    written: dict[str, list[tuple[int, str]]] = {}  # blob -> in-place writes through others
    found: list[StaleRead] = []

    def mem(blob: str) -> int:
        if blob not in memory:
            memory[blob] = next(fresh)
        return memory[blob]

    def check(reader: int, blob: str) -> None:
        for writer, through in written.get(blob, []):
            found.append(StaleRead(reader, blob, writer, through))

    for index, layer in enumerate(layers):
        bottoms, tops = list(layer.bottom), list(layer.top)  # type: ignore[attr-defined]
        for blob in bottoms:
            check(index, blob)
        if shares_memory(layer):
            source = mem(bottoms[0])
            for top in tops:
                if top != bottoms[0]:
                    memory[top] = source
                    written.pop(top, None)
            continue
        for position, top in enumerate(tops):
            in_place = position < len(bottoms) and bottoms[position] == top
            if not in_place:
                memory[top] = next(fresh)
                written.pop(top, None)
                continue
            target = mem(top)
            for other, where in memory.items():
                if other != top and where == target:
                    written.setdefault(other, []).append((index, top))
    for blob in outputs:
        check(len(layers), blob)
    return found
