"""One allocator that turns any Caffe name into a unique, safe Python identifier.

This is the only way a layer or blob name reaches generated code as code. The rule, which the
generated docstring repeats: characters outside [A-Za-z0-9_] become "_", a leading digit gets a
"_" prefix, and a name that is a keyword, a builtin, a name the generated module uses itself, or
an attribute of nn.Module gets a "_" suffix; a clash with an earlier name gets "_2", "_3", ...
A name with no letter or digit (empty, or only punctuation) becomes "unnamed".
"""

from __future__ import annotations

import builtins
import keyword
import re

RULE = (
    'Names are Caffe names with characters outside [A-Za-z0-9_] replaced by "_"; a name that'
    ' would clash with Python or nn.Module gets a "_" suffix, a repeated name "_2", "_3", ...'
)

# Every attribute of an nn.Module instance, private ones included (torch 2.13): assigning a
# submodule to `self._parameters` or `self._version` would break the module. A test checks
# that this list still covers the installed torch.
_NN_MODULE_ATTRS = frozenset(
    {
        "T_destination",
        "_apply",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_buffers",
        "_call_impl",
        "_compiled_call_impl",
        "_forward_hooks",
        "_forward_hooks_always_called",
        "_forward_hooks_with_kwargs",
        "_forward_pre_hooks",
        "_forward_pre_hooks_with_kwargs",
        "_get_backward_hooks",
        "_get_backward_pre_hooks",
        "_get_name",
        "_is_full_backward_hook",
        "_load_from_state_dict",
        "_load_state_dict_post_hooks",
        "_load_state_dict_pre_hooks",
        "_maybe_warn_non_full_backward_hook",
        "_modules",
        "_named_members",
        "_non_persistent_buffers_set",
        "_parameters",
        "_register_load_state_dict_pre_hook",
        "_register_state_dict_hook",
        "_replicate_for_data_parallel",
        "_save_to_state_dict",
        "_slow_forward",
        "_state_dict_hooks",
        "_state_dict_pre_hooks",
        "_version",
        "_wrapped_call_impl",
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
    if not ident.strip("_"):
        # Only underscores: "_" is a soft keyword, and "__", "___2", ... would be name-mangled
        # inside the class (self.___2 is stored as _Net___2, so its state_dict keys would differ).
        return "unnamed"
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
        # The next suffix to try for each base, so that many equal names cost linear time.
        self._next_suffix: dict[str, int] = {}

    def name(self, key: object, wanted: str) -> str:
        if key in self._by_key:
            return self._by_key[key]
        base = sanitize(wanted)
        ident = base
        suffix = self._next_suffix.get(base, 2)
        while ident in self._taken:
            ident = f"{base}_{suffix}"
            suffix += 1
        self._next_suffix[base] = suffix
        self._taken.add(ident)
        self._by_key[key] = ident
        return ident
