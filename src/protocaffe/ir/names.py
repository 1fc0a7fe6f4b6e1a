"""One allocator that turns any Caffe name into a unique, safe Python identifier.

This is the only way a layer or blob name reaches generated code as code. The rule, which the
generated docstring repeats: characters outside [A-Za-z0-9_] become "_", a leading digit gets a
"_" prefix, and a name that is a keyword, a builtin, a name the generated module uses itself, or
an attribute of nn.Module gets a "_" suffix; a clash with an earlier name gets "_2", "_3", ...
"""

from __future__ import annotations

import builtins
import keyword
import re

RULE = (
    'Names are Caffe names with characters outside [A-Za-z0-9_] replaced by "_"; a name that'
    ' would clash with Python or nn.Module gets a "_" suffix, a repeated name "_2", "_3", ...'
)

_NN_MODULE_ATTRS = frozenset(
    {
        "T_destination",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "smart_apply",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
    }
)
# Names the generated module itself binds or imports.
_GENERATED = frozenset({"torch", "nn", "F", "self", "super", "math", "Tensor", "Optional"})
RESERVED = frozenset(
    set(keyword.kwlist)
    | set(keyword.softkwlist)
    | set(dir(builtins))
    | _NN_MODULE_ATTRS
    | _GENERATED
)

_INVALID = re.compile(r"[^A-Za-z0-9_]")


def sanitize(name: str) -> str:
    """The identifier for `name` before uniqueness is applied."""
    ident = _INVALID.sub("_", name) or "_"
    if ident[0].isdigit():
        ident = "_" + ident
    if ident.startswith("__"):
        # Dunder-style names would be mangled inside a class or look special: keep one "_".
        ident = "_" + ident.lstrip("_")
    if ident in RESERVED:
        ident += "_"
    return ident


class Namespace:
    """Allocates unique identifiers; the same key always gets the same identifier."""

    def __init__(self, reserved: frozenset[str] = RESERVED) -> None:
        self._taken: set[str] = set(reserved)
        self._by_key: dict[object, str] = {}

    def name(self, key: object, wanted: str) -> str:
        if key in self._by_key:
            return self._by_key[key]
        base = sanitize(wanted)
        ident = base
        suffix = 2
        while ident in self._taken:
            ident = f"{base}_{suffix}"
            suffix += 1
        self._taken.add(ident)
        self._by_key[key] = ident
        return ident
