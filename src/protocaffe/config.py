"""`protocaffe generate`'s config: the list of conversions in pyproject.toml or protocaffe.toml.

Both files hold the same array of tables, one table per net, whose keys are `convert`'s options
by their long names (`weights` and `out` name the caffemodel and the output folder):

    [[tool.protocaffe.nets]]
    prototxt = "nets/lenet/deploy.prototxt"
    weights = "nets/lenet/lenet.caffemodel"     # optional
    out = "models/lenet"
    optimize = true
    input-shape = ["data=1,1,28,28"]

The keys are read from `convert`'s own argparse definition, so an option added to `convert`
works here without a change. A flag takes `true` or `false`, a repeatable option a list (or one
value), any other option one value, checked by the option's own type. Paths (the options whose
type is `path_argument`) are relative to the config file's folder, never to the working
directory: `generate` runs each conversion there, so its output and its messages are the same
from whatever folder it runs.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocaffe.errors import ProtocaffeError, SourceLoc

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

CONFIG_NAMES = ("protocaffe.toml", "pyproject.toml")
TABLE = "tool.protocaffe.nets"
# convert's arguments that the config names otherwise, as the issue and the README spell them.
RENAMED = {"caffemodel": "weights", "output": "out"}
# How a run goes, not what it writes: `generate` sets them for every net (--check, --quiet).
RUN_OPTIONS = frozenset({"help", "check", "quiet"})


def path_argument(text: str) -> str:
    """The argparse type of an option that names a file or folder (the value as given).

    It marks the option as a path: a config gives it relative to the config file, and the
    header of model.py relative to the output folder."""
    return text


@dataclass(frozen=True)
class NetJob:
    """One conversion of the config: `convert`'s arguments, paths relative to `folder`."""

    number: int  # 1-based, in config order
    loc: SourceLoc
    out: str  # the output folder, as the config gives it
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Config:
    path: Path
    folder: Path  # what the paths in the config are relative to
    nets: tuple[NetJob, ...]


def find_config(start: Path) -> Path | None:
    """The config that applies in `start`: the nearest folder, going up, with a protocaffe.toml
    or a pyproject.toml that has a [tool.protocaffe] table."""
    for folder in (start, *start.parents):
        own = folder / CONFIG_NAMES[0]
        if own.is_file():
            return own
        project = folder / CONFIG_NAMES[1]
        if project.is_file() and _has_table(project):
            return project
    return None


def _has_table(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return re.search(r"^\s*\[+\s*tool\.protocaffe[\].]", text, re.MULTILINE) is not None


def _shown(path: Path) -> str:
    """A path as messages show it: relative to the working directory when below it."""
    try:
        return os.path.relpath(path).replace(os.sep, "/")
    except ValueError:  # another drive
        return str(path)


def read_config(path: Path, convert: argparse.ArgumentParser) -> Config:
    """Read and check every net of the config at `path` against `convert`'s options."""
    shown = _shown(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProtocaffeError.at(SourceLoc(shown), f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ProtocaffeError.at(SourceLoc(shown), f"not UTF-8 text: {exc.reason}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        loc = SourceLoc(shown, int(found[1]), int(found[2])) if found else SourceLoc(shown)
        raise ProtocaffeError.at(loc, f"invalid TOML: {message}") from None
    tables: object = data
    for key in ("tool", "protocaffe", "nets"):
        tables = tables.get(key) if isinstance(tables, dict) else None
    if not isinstance(tables, list) or not tables:
        raise ProtocaffeError.at(
            SourceLoc(shown), f"no [[{TABLE}]] tables: list the nets to convert there"
        )
    lines = _table_lines(text)
    options = _options(convert)
    jobs = []
    for number, table in enumerate(tables, 1):
        line = lines[number - 1] if number - 1 < len(lines) else 0
        loc = SourceLoc(shown, line)
        if not isinstance(table, dict):
            raise ProtocaffeError.at(loc, f"[[{TABLE}]] entry {number} is not a table")
        jobs.append(_job(number, loc, table, options, text))
    _check_outputs(jobs, path.parent)
    return Config(path, path.parent, tuple(jobs))


def _table_lines(text: str) -> list[int]:
    """The line of each `[[tool.protocaffe.nets]]` header, in order."""
    header = re.compile(r"^\s*\[\[\s*tool\s*\.\s*protocaffe\s*\.\s*nets\s*\]\]")
    return [n for n, line in enumerate(text.splitlines(), 1) if header.match(line)]


def _key_line(text: str, table_line: int, key: str) -> int:
    """The line of `key = ...` in the table that starts at `table_line` (or that line)."""
    lines = text.splitlines()
    for number in range(table_line, len(lines)):
        line = lines[number].strip()
        if line.startswith("["):
            break
        if re.match(rf"""["']?{re.escape(key)}["']?\s*=""", line):
            return number + 1
    return table_line


def _options(convert: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Config key -> convert's argparse action."""
    found: dict[str, argparse.Action] = {}
    for action in convert._actions:
        if action.dest in RUN_OPTIONS or action.dest == argparse.SUPPRESS:
            continue
        if action.option_strings:
            key = max(action.option_strings, key=len).lstrip("-")
        else:
            key = action.dest
        found[RENAMED.get(action.dest, key)] = action
    return found


def _job(
    number: int,
    loc: SourceLoc,
    table: dict[str, Any],
    options: dict[str, argparse.Action],
    text: str,
) -> NetJob:
    def fail(key: str | None, message: str) -> ProtocaffeError:
        line = _key_line(text, loc.line, key) if key is not None and loc.line else loc.line
        return ProtocaffeError.at(SourceLoc(loc.file, line), f"net {number}: {message}")

    positional: dict[str, list[str]] = {}
    optionals: list[str] = []
    for key, value in table.items():
        action = options.get(key)
        if action is None:
            if key in RUN_OPTIONS:
                raise fail(key, f"'{key}' is for a whole run: give it to protocaffe generate")
            hint = difflib.get_close_matches(key, sorted(options), n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise fail(key, f"unknown option '{key}'{suggestion}")
        try:
            words = _words(value, action)
        except ValueError as exc:
            raise fail(key, f"'{key}': {exc}") from None
        if action.option_strings:
            optionals += words
        else:
            positional[action.dest] = words
    for required in ("prototxt", "out"):
        if required not in table:
            raise fail(None, f"'{required}' is missing")
    # convert's positionals in its order (the prototxt, then the weights), then the options.
    order = [a.dest for a in options.values() if not a.option_strings]
    words = [word for dest in order for word in positional.get(dest, [])]
    return NetJob(number, loc, str(table["out"]), tuple(words + optionals))


def _words(value: Any, action: argparse.Action) -> list[str]:
    """The command-line words for one config value, checked as argparse would check them."""
    flag = max(action.option_strings, key=len) if action.option_strings else None
    if action.nargs == 0:  # store_true and its kind
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return [flag] if value and flag is not None else []
    repeatable = isinstance(action, argparse._AppendAction)
    values = value if isinstance(value, list) and repeatable else [value]
    words: list[str] = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            wanted = "a list of strings" if repeatable else "a string or a number"
            raise ValueError(f"expected {wanted}, got {item!r}")
        word = str(item)
        _check_value(word, action)
        words += [flag, word] if flag is not None else [word]
    return words


def _check_value(word: str, action: argparse.Action) -> None:
    converted: object = word
    if callable(action.type):
        try:
            converted = action.type(word)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            raise ValueError(str(exc) or f"invalid value {word!r}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(repr(c) for c in action.choices)
        raise ValueError(f"invalid choice {word!r} (choose from {choices})")


def _check_outputs(jobs: Sequence[NetJob], folder: Path) -> None:
    seen: dict[Path, NetJob] = {}
    for job in jobs:
        where = Path(os.path.normpath(folder / job.out))
        first = seen.setdefault(where, job)
        if first is not job:
            raise ProtocaffeError.at(
                job.loc,
                f"net {job.number}: out '{job.out}' is also net {first.number}'s output folder",
            )
