"""Read a solver.prototxt into a `SolverDef`: what one Caffe training iteration does to the
weights, checked the way Caffe checks it (src/caffe/solver.cpp, solvers/*.cpp at BVLC 9b89154).

Everything that shapes the update (solver type, learning-rate policy, momentum, weight decay,
iter_size, clip_gradients, ...) is kept; settings of Caffe's own loop (the net files, testing,
display, snapshots, the device) are listed in `SolverDef.loop_only` and left to the caller. A
file Caffe would refuse, or a field this reader does not know (it might change the maths), is
an error with its location: nothing is dropped without a word.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any

from protocaffe.errors import Diagnostic, ProtocaffeError, Reporter, Severity, SourceLoc
from protocaffe.frontend.textformat import Locations, parse_text
from protocaffe.proto.schema import message_class

# Caffe's registered solver types (REGISTER_SOLVER_CLASS); the names are case-sensitive.
SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
# The deprecated `solver_type` enum, as UpgradeSolverType (util/upgrade_proto.cpp) renames it.
_LEGACY_TYPES = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}
# SGDSolver::GetLearningRate's policies.
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")

# Fields that configure Caffe's training loop around the update, not the update itself.
LOOP_ONLY_FIELDS = (
    "net",
    "net_param",
    "train_net",
    "test_net",
    "train_net_param",
    "test_net_param",
    "train_state",
    "test_state",
    "test_iter",
    "test_interval",
    "test_compute_loss",
    "test_initialization",
    "display",
    "average_loss",
    "snapshot",
    "snapshot_prefix",
    "snapshot_diff",
    "snapshot_format",
    "solver_mode",
    "device_id",
    "random_seed",
    "debug_info",
    "snapshot_after_train",
    "layer_wise_reduce",
    "weights",
    "eval_type",
    "ap_version",
)


@dataclass(frozen=True)
class SolverDef:
    """One solver.prototxt, with Caffe's defaults filled in. Floats are the shortest decimals
    that name the same float32 Caffe reads (0.01, not 0.009999999776482582)."""

    path: str
    type: str  # one of SOLVER_TYPES
    base_lr: float
    lr_policy: str  # one of LR_POLICIES
    gamma: float
    power: float
    stepsize: int
    stepvalue: tuple[int, ...]
    max_iter: int
    momentum: float
    momentum2: float
    delta: float
    rms_decay: float
    weight_decay: float
    regularization_type: str  # "L1" or "L2"
    iter_size: int
    clip_gradients: float
    train_net: str | None  # the `net` or `train_net` file, if one is named
    loop_only: tuple[str, ...]  # fields of LOOP_ONLY_FIELDS the file sets, in schema order


def float32_literal(value: float) -> float:
    """The shortest decimal that rounds to the same float32 as `value` (protobuf stores a
    `float` field in 32 bits and hands back its exact binary value)."""
    if value != value or value in (float("inf"), float("-inf")):
        return value
    single: float = struct.unpack("<f", struct.pack("<f", value))[0]
    for digits in range(1, 18):
        short = float(f"{single:.{digits}g}")
        if struct.unpack("<f", struct.pack("<f", short))[0] == single:
            return short
    return single  # pragma: no cover - 9 significant digits always round-trip a float32


class _Checker:
    """Collects every problem of one file, then raises them together."""

    def __init__(self, path: str, param: Any, locations: Locations) -> None:
        self.path = path
        self.param = param
        self.locations = locations
        self.errors: list[Diagnostic] = []

    def loc(self, name: str) -> SourceLoc:
        return self.locations.of_field(self.param, name) or SourceLoc(self.path)

    def fail(self, name: str, message: str) -> None:
        self.errors.append(Diagnostic(self.loc(name), message))

    def require(self, ok: bool, name: str, message: str) -> None:
        if not ok:
            self.fail(name, message)


def _solver_type(check: _Checker) -> str:
    param = check.param
    if param.HasField("solver_type"):
        if param.HasField("type"):
            check.fail(
                "solver_type",
                "both 'type' and the deprecated 'solver_type' are set; Caffe refuses that "
                "(UpgradeSolverType): keep 'type'",
            )
        enum = param.DESCRIPTOR.fields_by_name["solver_type"].enum_type
        return _LEGACY_TYPES[enum.values_by_number[param.solver_type].name]
    kind = str(param.type)
    if kind not in SOLVER_TYPES:
        check.fail(
            "type", f"unknown solver type {kind!r} (Caffe's types: {', '.join(SOLVER_TYPES)})"
        )
    return kind


def _check_policy(check: _Checker, param: Any) -> None:
    policy = param.lr_policy
    if not param.HasField("lr_policy"):
        check.fail(
            "lr_policy",
            "lr_policy is not set; Caffe stops at the first iteration ('Unknown learning rate "
            f"policy'); set one of {', '.join(LR_POLICIES)}",
        )
        return
    if policy not in LR_POLICIES:
        check.fail(
            "lr_policy",
            f"unknown lr_policy {policy!r} (Caffe's policies: {', '.join(LR_POLICIES)})",
        )
        return
    # The CHECKs of SGDSolver::GetLearningRate, raised here instead of at iteration 0.
    if policy in ("step", "sigmoid"):
        check.require(param.stepsize > 0, "stepsize", f"lr_policy {policy!r} needs stepsize > 0")
    if policy in ("step", "exp", "inv", "multistep", "sigmoid"):
        check.require(param.gamma >= 0, "gamma", f"lr_policy {policy!r} needs gamma >= 0")
    if policy == "poly":
        check.require(
            param.max_iter > 0,
            "max_iter",
            "lr_policy 'poly' needs max_iter > 0 (the rate falls to 0 at max_iter)",
        )


def _check_rule(check: _Checker, param: Any, kind: str) -> None:
    # The constructor_sanity_check()s of include/caffe/sgd_solvers.hpp.
    if kind in ("AdaGrad", "RMSProp"):
        check.require(
            param.momentum == 0, "momentum", f"momentum cannot be used with {kind} (Caffe: 0)"
        )
    if kind == "RMSProp":
        check.require(
            0 <= param.rms_decay < 1, "rms_decay", "rms_decay should lie in [0, 1) (Caffe)"
        )
    check.require(
        param.iter_size >= 1,
        "iter_size",
        "iter_size must be at least 1 (Caffe divides the accumulated gradients by it)",
    )
    # Caffe reads regularization_type only when there is weight decay (SGDSolver::Regularize).
    if param.weight_decay != 0:
        check.require(
            param.regularization_type in ("L1", "L2"),
            "regularization_type",
            f"unknown regularization_type {param.regularization_type!r} (Caffe's: L1, L2)",
        )


def read_solver_text(text: str, path: str, reporter: Reporter) -> SolverDef:
    """Parse solver.prototxt text. `path` is used in diagnostics and the SolverDef only."""
    locations = Locations()
    param: Any = message_class("SolverParameter")()
    fields = Reporter()
    parse_text(text, path, param, fields, locations)
    # The text reader warns about fields the schema lacks and goes on, which suits nets full of
    # fork fields. In a solver such a field may change the training maths: refuse it.
    unknown = [d for d in fields.diagnostics if d.severity is Severity.WARNING]
    check = _Checker(path, param, locations)
    check.errors += [
        Diagnostic(d.loc, d.message.replace("; ignored", "; protocaffe cannot tell what it does"))
        for d in unknown
    ]
    kind = _solver_type(check)
    _check_policy(check, param)
    _check_rule(check, param, kind)
    if check.errors:
        raise ProtocaffeError(check.errors)

    loop_only = tuple(name for name in LOOP_ONLY_FIELDS if _is_set(param, name))
    if loop_only:
        reporter.note(
            check.loc(loop_only[0]),
            "not carried over (settings of Caffe's own loop, not of the update): "
            + ", ".join(loop_only),
        )
    train_net = param.net if param.HasField("net") else None
    if train_net is None and param.HasField("train_net"):
        train_net = param.train_net
    f32 = float32_literal
    return SolverDef(
        path=path,
        type=kind,
        base_lr=f32(param.base_lr),
        lr_policy=param.lr_policy,
        gamma=f32(param.gamma),
        power=f32(param.power),
        stepsize=int(param.stepsize),
        stepvalue=tuple(int(v) for v in param.stepvalue),
        max_iter=int(param.max_iter),
        momentum=f32(param.momentum),
        momentum2=f32(param.momentum2),
        delta=f32(param.delta),
        rms_decay=f32(param.rms_decay),
        weight_decay=f32(param.weight_decay),
        # Without weight decay Caffe never reads it (any string passes); L2 then stands in.
        regularization_type=(
            param.regularization_type if param.regularization_type in ("L1", "L2") else "L2"
        ),
        iter_size=int(param.iter_size),
        clip_gradients=f32(param.clip_gradients),
        train_net=train_net,
        loop_only=loop_only,
    )


def _is_set(param: Any, name: str) -> bool:
    field = param.DESCRIPTOR.fields_by_name[name]
    repeated = getattr(field, "is_repeated", None)  # protobuf 6 added it, 7 removed `label`
    if repeated is None:
        repeated = field.label == field.LABEL_REPEATED
    return len(getattr(param, name)) > 0 if repeated else bool(param.HasField(name))


def read_solver(path: str | os.PathLike[str], reporter: Reporter) -> SolverDef:
    """Read a solver.prototxt file. Diagnostics name the path as given."""
    shown = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ProtocaffeError.at(SourceLoc(shown), f"cannot read file: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ProtocaffeError.at(
            SourceLoc(shown, line), f"not UTF-8 text at byte {exc.start}"
        ) from None
    return read_solver_text(text, shown, reporter)
