"""The deep run's summary: nets per layer type, accepted by Caffe, matched, disagreements."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

AGREE = ("match", "both-reject")


def _agrees(entry: dict[str, Any]) -> bool:
    return entry["outcome"] in AGREE or str(entry["cause"]).startswith("float-only")


def summarise(entries: Sequence[dict[str, Any]]) -> str:
    lines = [f"{len(entries)} nets.", ""]
    lines += [
        "| focus type | nets | accepted by Caffe | matched | both reject | float-only "
        "| disagreements (cause: count) |",
        "|---|---|---|---|---|---|---|",
    ]
    by_focus: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        by_focus[entry["focus"]].append(entry)
    totals: Counter[str] = Counter()
    for focus in sorted(by_focus):
        group = by_focus[focus]
        accepted = sum(e["caffe_status"] == "ok" for e in group)
        matched = sum(e["outcome"] == "match" for e in group)
        rejected = sum(e["outcome"] == "both-reject" for e in group)
        floats = sum(str(e["cause"]).startswith("float-only") for e in group)
        causes = Counter(_short(e["cause"]) for e in group if not _agrees(e))
        text = ", ".join(f"{c}: {n}" for c, n in sorted(causes.items()))
        lines.append(
            f"| {focus} | {len(group)} | {accepted} | {matched} | {rejected} | {floats} "
            f"| {text} |"
        )
        totals.update(nets=len(group), accepted=accepted, matched=matched, rejected=rejected)
        totals.update(floats=floats)
    lines.append(
        f"| **all** | {totals['nets']} | {totals['accepted']} | {totals['matched']} "
        f"| {totals['rejected']} | {totals['floats']} | |"
    )
    lines += ["", "Disagreements by cause (outcome):", ""]
    pairs: Counter[tuple[str, str]] = Counter(
        (str(e["cause"]), str(e["outcome"])) for e in entries if not _agrees(e)
    )
    for (cause, outcome), count in sorted(pairs.items(), key=lambda x: (-x[1], x[0])):
        lines.append(f"- {count} x {cause} ({outcome})")
    floats_by = Counter(e["cause"] for e in entries if str(e["cause"]).startswith("float-only"))
    if floats_by:
        lines += ["", "Float-only differences (not defects):", ""]
        lines += [f"- {count} x {cause}" for cause, count in sorted(floats_by.items())]
    containing: Counter[str] = Counter()
    for entry in entries:
        containing.update(entry["types"])
    lines += ["", "Nets containing each type (any position):", ""]
    lines.append(", ".join(f"{t} {n}" for t, n in sorted(containing.items())))
    return "\n".join(lines) + "\n"


def _short(cause: str) -> str:
    """ "cause 5", "finding B", "oracle", "issue 15", "limitation", "unexplained"."""
    return cause.split(":")[0]
