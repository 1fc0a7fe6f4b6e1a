"""Which layer types protocaffe knows, asked through its public API only.

A one-layer net of each type the oracle registers is converted; protocaffe knows the type unless
it answers "unknown layer type" (or leaves the layer out as training-only). This stays right
when the layer library moves (issue 11), where reading its registry would not.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from protocaffe.api import convert
from protocaffe.errors import ProtocaffeError

from .netgen import RECIPES

# Types every generated net uses without a recipe of their own.
IMPLICIT = frozenset({"Input"})


@cache
def _knows(kind: str) -> bool:
    text = (
        'name: "probe"\ninput: "data"\ninput_shape { dim: 1 dim: 2 dim: 3 dim: 3 }\n'
        f'layer {{ name: "probe" type: "{kind}" bottom: "data" top: "out" }}\n'
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.prototxt"
        path.write_text(text)
        try:
            conversion = convert(path)
        except ProtocaffeError as error:
            return "unknown layer type" not in str(error)
        except Exception:  # a crash still means the type is known
            return True
    # A training-only layer is left out with a note ("left out: a loss; ...").
    return not any(
        "training-only" in str(d) or f"({kind}): left out" in str(d) for d in conversion.diagnostics
    )


def protocaffe_types(candidates: Iterable[str]) -> frozenset[str]:
    return frozenset(kind for kind in candidates if _knows(kind))


def fuzzable_types(oracle_types: Iterable[str]) -> frozenset[str]:
    """Types both sides know and the fuzzer has a recipe for."""
    both = protocaffe_types(oracle_types)
    return frozenset(kind for kind in both if kind in RECIPES)


def missing_recipes(oracle_types: Iterable[str]) -> list[str]:
    """Types both sides know that the fuzzer cannot generate (a coverage gap)."""
    both = protocaffe_types(oracle_types)
    return sorted(kind for kind in both if kind not in RECIPES and kind not in IMPLICIT)
