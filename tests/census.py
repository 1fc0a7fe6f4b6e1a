"""The census: public Caffe nets from outside the corpus, converted as a new user would.

The nets are fetched material and are not part of this repository. They live in a folder given
by $PROTOCAFFE_CENSUS, or ../shared/census beside the checkout; without it the census tests
skip. The folder holds MANIFEST.tsv (tab-separated, one row per net, header first) and the files
it names. The columns protocaffe reads:

    id            a short unique name
    repository    the GitHub owner/name the file was fetched from
    commit        the commit it was fetched at
    path          its path in that repository
    licence       the licence its repository states ("none stated" if none)
    sha256        of the file as fetched (checked before every run)
    family        classification, detection, segmentation, ... (for the per-family table)
    python_layer  "yes" if the net uses a Python layer (a plugin's job: counted apart)
    input_shape   `NAME=N,C,H,W` items separated by spaces, for nets whose file declares no
                  usable input shape (the reason is in input_shape_source); empty otherwise
    file          the net's path inside the census folder

Other columns are kept for people and ignored here. What protocaffe expects of each net is ours
and is committed: tests/census_expectations.tsv (id, dialect, expect, cause) lists the nets
that convert only under a fork dialect and those that do not convert yet, with the cause;
every other net of the manifest must convert.

    python tests/census.py [--census DIR] [--markdown]

converts every net (no weights) and prints the convert rate, per family, and what blocks the
rest.
"""

from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPECTATIONS = Path(__file__).resolve().parent / "census_expectations.tsv"
MANIFEST_COLUMNS = (
    "id",
    "repository",
    "commit",
    "path",
    "licence",
    "sha256",
    "family",
    "python_layer",
    "input_shape",
    "file",
)


@dataclass(frozen=True)
class CensusNet:
    id: str
    repository: str
    commit: str
    path: str
    licence: str
    sha256: str
    family: str
    python_layer: bool
    input_shapes: dict[str, tuple[int, ...]]
    file: Path


@dataclass(frozen=True)
class Expectation:
    dialects: tuple[str, ...]
    converts: bool
    cause: str


@dataclass(frozen=True)
class Outcome:
    net: CensusNet
    converts: bool
    error: str  # the first line protocaffe printed, "" when it converts


def census_dir() -> Path | None:
    """$PROTOCAFFE_CENSUS, else ../shared/census beside the checkout; None when absent."""
    given = os.environ.get("PROTOCAFFE_CENSUS")
    folder = Path(given) if given else REPO.parent / "shared" / "census"
    return folder if (folder / "MANIFEST.tsv").is_file() else None


def _shapes(text: str, where: str) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for item in text.split():
        name, sep, dims = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{where}: input_shape item {item!r} is not NAME=N,C,H,W")
        shapes[name] = tuple(int(d) for d in dims.split(","))
    return shapes


def read_manifest(folder: Path) -> list[CensusNet]:
    """The census's nets, with the format checked (columns, unique ids, files present)."""
    manifest = folder / "MANIFEST.tsv"
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{manifest}: missing columns {missing}")
        nets: list[CensusNet] = []
        for line, row in enumerate(reader, start=2):
            where = f"{manifest}:{line}"
            if row["python_layer"] not in ("yes", "no"):
                raise ValueError(f"{where}: python_layer is {row['python_layer']!r}")
            nets.append(
                CensusNet(
                    id=row["id"],
                    repository=row["repository"],
                    commit=row["commit"],
                    path=row["path"],
                    licence=row["licence"],
                    sha256=row["sha256"],
                    family=row["family"],
                    python_layer=row["python_layer"] == "yes",
                    input_shapes=_shapes(row["input_shape"], where),
                    file=folder / row["file"],
                )
            )
    ids = collections.Counter(net.id for net in nets)
    repeated = sorted(i for i, n in ids.items() if n > 1)
    if repeated:
        raise ValueError(f"{manifest}: ids used twice: {repeated}")
    return nets


def read_expectations(path: Path = EXPECTATIONS) -> dict[str, Expectation]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t")]
    found: dict[str, Expectation] = {}
    for row in rows:
        if row["expect"] not in ("converts", "fails"):
            raise ValueError(f"{path}: {row['id']}: expect is {row['expect']!r}")
        dialects = tuple(d for d in row["dialect"].split(",") if d)
        found[row["id"]] = Expectation(dialects, row["expect"] == "converts", row["cause"])
    return found


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert_net(net: CensusNet, dialects: Sequence[str] = ()) -> Outcome:
    """Convert `net` as `protocaffe convert FILE --input-shape ... --dialect ...` would, without
    weights and without writing files."""
    from protocaffe.api import convert
    from protocaffe.errors import ProtocaffeError, Reporter

    try:
        convert(net.file, input_shapes=net.input_shapes, reporter=Reporter(), dialects=dialects)
    except ProtocaffeError as error:
        return Outcome(net, False, str(error).splitlines()[0])
    return Outcome(net, True, "")


def _rate(outcomes: Iterable[Outcome]) -> str:
    done = list(outcomes)
    good = sum(o.converts for o in done)
    return f"{good}/{len(done)} ({100 * good // max(len(done), 1)}%)"


def report(outcomes: Sequence[Outcome], expectations: dict[str, Expectation]) -> str:
    """The convert rate, per family, and the causes of the failures (markdown)."""
    plain = [o for o in outcomes if not o.net.python_layer]
    lines = [
        f"- all nets: **{_rate(outcomes)}**",
        f"- nets without a Python layer: **{_rate(plain)}**",
        "",
        "| family | nets without Python layers | convert |",
        "|---|---:|---:|",
    ]
    for family in sorted({o.net.family for o in outcomes}):
        mine = [o for o in plain if o.net.family == family]
        lines.append(f"| {family} | {len(mine)} | {_rate(mine)} |")
    causes = collections.Counter(
        expectations[o.net.id].cause if o.net.id in expectations else "unexpected: " + o.error
        for o in plain
        if not o.converts
    )
    lines += ["", "| nets blocked | cause |", "|---:|---|"]
    lines += [f"| {n} | {cause} |" for cause, n in causes.most_common()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--census", type=Path, help="the census folder (default: see above)")
    args = parser.parse_args(argv)
    folder = args.census or census_dir()
    if folder is None:
        print("no census folder: set PROTOCAFFE_CENSUS or create ../shared/census")
        return 2
    expectations = read_expectations()
    outcomes = []
    for net in read_manifest(folder):
        if file_digest(net.file) != net.sha256:
            print(f"{net.id}: {net.file} is not the file the manifest names (sha256)")
            return 2
        expected = expectations.get(net.id)
        outcome = convert_net(net, expected.dialects if expected else ())
        print(f"{'yes' if outcome.converts else 'no ':3} {net.id:34} {outcome.error[:120]}")
        outcomes.append(outcome)
    print()
    print(report(outcomes, expectations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
