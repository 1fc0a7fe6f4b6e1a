"""Loading user-defined layers (plugins).

A plugin is a Python module that registers `Layer` subclasses with `protocaffe.plugins.register`
(and, if its generated code needs helper functions, their source with
`protocaffe.plugins.register_helper`). It is loaded by name (`protocaffe convert --plugin
mymodule`, or `load_plugin("mymodule")`), or found through the `protocaffe.layers` entry point
group of installed packages. See 'Custom layers' in the README.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Iterable

from protocaffe.errors import ProtocaffeError, SourceLoc

ENTRY_POINT_GROUP = "protocaffe.layers"

_loaded: set[str] = set()


def _failure(source: str, exc: BaseException) -> ProtocaffeError:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" ({where.filename}:{where.lineno})" if where else ""
    return ProtocaffeError.at(
        SourceLoc(source), f"plugin failed to load: {type(exc).__name__}: {exc}{at}"
    )


def load_plugin(module: str) -> None:
    """Import plugin `module` (a dotted name on sys.path) so that its layers register."""
    if module in _loaded:
        return
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            raise ProtocaffeError.at(
                SourceLoc(f"--plugin {module}"), "no such module on the Python path"
            ) from None
        raise _failure(f"--plugin {module}", exc) from None
    except Exception as exc:  # a plugin's own bug (a duplicate type too): report, no traceback
        raise _failure(f"--plugin {module}", exc) from None
    _loaded.add(module)


def load_plugins(modules: Iterable[str]) -> None:
    for module in modules:
        load_plugin(module)


def load_entry_point_plugins() -> None:
    """Load every installed plugin of the `protocaffe.layers` entry point group. An entry point
    names a module (imported for its registrations) or a function (imported and called).

    `protocaffe.layers.lookup` calls this the first time it meets a type that is not built in.
    """
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        key = f"entry point {entry.name} = {entry.value}"
        if key in _loaded:
            continue
        try:
            loaded = entry.load()
            if callable(loaded):
                loaded()
        except Exception as exc:
            raise _failure(key, exc) from None
        _loaded.add(key)
