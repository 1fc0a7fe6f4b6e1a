"""Sort each case into an outcome and, for a disagreement, a cause.

Outcomes: match, both-reject (agreements); caffe-rejects (protocaffe accepts what Caffe aborts
on), protocaffe-rejects (the reverse), shape / value / outputs (the first prefix whose blobs
differ), names (the class docstring names the outputs differently), protocaffe-crash (an
exception other than ProtocaffeError), unlocated-error (both reject, but protocaffe's error has
no file:line), caffe-crashed / caffe-timeout / caffe-error (the oracle could not run the net).

Causes are recognised by rules over the net and the evidence, each stated below:
- "cause N: ..." are the defects 1-10 of issue 13;
- "finding X: ..." are defects the fuzzer found that issue 13 does not list (each has a
  regression test in tests/test_fuzz_regressions.py);
- a cause in FIXED was fixed: the rule still names it, but it is no longer "known", so a net
  that shows it again fails like an unexplained one;
- "float-only: ..." are differences of float arithmetic, not of semantics (see FLOAT_ONLY);
- "deliberate: ..." are protocaffe's documented choices where Caffe's result is not the layer's
  formula (an in-place layer that overwrites its input before reading it) or where a fork gives
  a net BVLC refuses a meaning (3-D pooling): they count as agreements;
- "documented: ..." are documented limits (non-finite inputs are not reproduced): known;
- "oracle: ..." are places where the oracle build deviates from upstream Caffe;
- "issue 15: ..." and "limitation: ..." are gaps protocaffe reports with a located error and
  another issue tracks;
- "unexplained" is everything else: a new defect to diagnose.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf.message import Message

from .aliasing import stale_reads
from .compare import Mismatch, Result, caffe_outputs, is_located, layers_of, parse_net
from .references import FLOAT_ONLY

AGREEING = ("match", "both-reject")
# Fixed on this branch (issue 13): a net that shows one of these again is a regression.
FIXED = (
    "cause 1:",
    "cause 2:",
    "cause 3:",
    "cause 4:",
    "cause 5:",
    "cause 7:",
    "cause 8:",
    "cause 10:",
    "finding A:",
    "finding B:",
    "finding C:",
    "finding D:",
    "finding E:",
    "finding F:",
    "finding G:",
    "finding I:",
    "finding J:",
    "finding L:",
    "finding M:",
    "finding O:",
    "finding Q:",
    "finding R:",
    "finding S:",
    "finding T:",
    "issue 15: N-D convolution",
    "issue 15: a kernel larger than the input",
    "limitation: a pooling mask top",
)
# Known disagreements that are not protocaffe defects to fix (STRICT lets them pass).
NOT_DEFECTS = ("oracle", "documented:")
# Layers whose Caffe CPU code reads each input value once, before writing that output value,
# so that running them in place is the same computation.
ELEMENTWISE = frozenset(
    {
        "ReLU",
        "Sigmoid",
        "TanH",
        "BNLL",
        "ELU",
        "Power",
        "Exp",
        "Log",
        "Threshold",
        "Dropout",
        "ReLU6",
        "AbsVal",
        "PReLU",
        "Scale",
        "Bias",
        "BatchNorm",
        "MVN",
        "Softmax",
    }
)


@dataclass
class Verdict:
    outcome: str
    cause: str = ""
    layer: str = ""
    layer_type: str = ""
    blob: str = ""
    detail: str = ""
    caffe_message: str = ""
    protocaffe_message: str = ""
    caffe_status: str = ""  # ok | rejected | crashed | error | timeout

    @property
    def agrees(self) -> bool:
        return self.outcome in AGREEING or self.cause.startswith(("float-only", "deliberate:"))

    @property
    def known(self) -> bool:
        """A disagreement with a cause already diagnosed (open defect, finding or oracle) and
        not fixed."""
        prefixes = ("cause ", "finding ", "oracle", "issue 15", "limitation", "documented:")
        return self.cause.startswith(prefixes) and not self.cause.startswith(FIXED)

    @property
    def defect(self) -> bool:
        """A known disagreement that is an open protocaffe defect (not the oracle's deviation
        from upstream Caffe, nor a documented limit)."""
        return self.known and not self.cause.startswith(NOT_DEFECTS)


def classify(case: Path, result: Result, failing: int | None = None) -> Verdict:
    """`failing`: where Caffe aborted (the index of the layer), when protocaffe accepted."""
    caffe = result.caffe
    verdict = Verdict("match", caffe_message=caffe.message, caffe_status=caffe.status)
    try:
        net = parse_net((case / "net.prototxt").read_text())
    except Exception:  # a net neither side can parse has no layers to blame
        net = parse_net("")
    if caffe.status in ("crashed", "timeout", "error"):
        verdict.outcome = f"caffe-{caffe.status}"
        verdict.cause = _caffe_failure(net, caffe.message, result.protocaffe_error)
    elif result.protocaffe_crash is not None:
        verdict.outcome = "protocaffe-crash"
        verdict.protocaffe_message = result.protocaffe_crash
        verdict.cause = _crash_cause(net, result.protocaffe_crash, caffe.accepted)
    elif not caffe.accepted and result.protocaffe_error is not None:
        verdict.outcome = "both-reject"
        verdict.protocaffe_message = result.protocaffe_error
        if not is_located(result.protocaffe_error):
            verdict.outcome = "unlocated-error"
            verdict.cause = "unexplained"
    elif not caffe.accepted:
        verdict.outcome = "caffe-rejects"
        layer = None
        if failing is not None and failing < len(layers_of(net)):
            layer = layers_of(net)[failing]
            verdict.layer, verdict.layer_type = str(layer.name), str(layer.type)  # type: ignore
        verdict.cause = _caffe_rejects_cause(net, layer, caffe.message, failing)
    elif result.protocaffe_error is not None and (
        result.mismatch is None or result.mismatch.kind == "protocaffe-rejects-prefix"
    ):
        verdict.outcome = "protocaffe-rejects"
        verdict.protocaffe_message = result.protocaffe_error
        verdict.cause = _protocaffe_rejects_cause(net, result.protocaffe_error)
    elif result.mismatch is not None:
        m = result.mismatch
        verdict.outcome = m.kind
        verdict.layer, verdict.layer_type, verdict.blob = m.layer, m.layer_type, m.blob
        verdict.detail = m.detail
        if m.kind == "protocaffe-crash":
            verdict.protocaffe_message = m.detail
            verdict.cause = _crash_cause(net, m.detail, True)
        elif m.kind == "protocaffe-rejects-prefix":
            verdict.protocaffe_message = m.detail
            verdict.cause = _protocaffe_rejects_cause(net, m.detail)
        else:
            verdict.cause = _mismatch_cause(case, net, m)
    elif (
        result.docstring_outputs is not None
        and caffe.outputs
        and result.docstring_outputs != caffe.outputs
    ):
        verdict.outcome = "names"
        verdict.detail = f"docstring {result.docstring_outputs}, Caffe {caffe.outputs}"
        verdict.cause = _names_cause(net, caffe.outputs)
    return verdict


# -- rules ----------------------------------------------------------------------------------------


def _has(net: Message, kind: str, test: Callable[[Message], bool] = lambda _: True) -> bool:
    return any(layer.type == kind and test(layer) for layer in layers_of(net))  # type: ignore


IN_PLACE_REFUSED = re.compile(r"(\w+) Layer does not allow in-place computation")


def _caffe_rejects_cause(
    net: Message, layer: Message | None, message: str, failing: int | None = None
) -> str:
    """Caffe aborted, protocaffe converted: by Caffe's CHECK message and the layer it aborted
    at (`layer`, found by running the net's prefixes; None if unknown)."""
    kind = str(layer.type) if layer is not None else ""  # type: ignore[attr-defined]
    if kind == "Pooling" and "Input must have 4 axes" in message and layer is not None:
        return "deliberate: 3-D pooling of the 3D-Caffe fork (BVLC refuses a 5-D input)"
    if "produced by multiple sources" in message:
        return "finding A: in-place layer on a blob another layer already read"
    refused = IN_PLACE_REFUSED.search(message)
    if refused:
        return f"cause 8: {refused.group(1)} in place"
    if "pool_param" in message or "Global_pooling" in message:
        return "cause 8: pooling geometry fields"
    if "conv_param" in message and "not both" in message:
        return "cause 8: convolution with both spellings"
    if "legacy accessors" in message:
        if kind == "PReLU":
            return "cause 8: PReLU on more than 4 axes"
        return f"finding E: {kind or 'a layer'} on more than 4 axes (Caffe's legacy accessors)"
    if "out of range for 0-D Blob" in message and kind in ("Scale", "Bias"):
        return f"finding T: {kind} with num_axes 0 does not check its axis"
    if "Cannot copy param" in message and "shape mismatch" in message:
        return "cause 1: a caffemodel blob of shape (1,) where Caffe has a 0-D blob"
    if "Cannot share param" in message:
        return "cause 9: shared parameter with another shape"
    if "Too many params specified" in message:
        return "cause 9: more param specs than the layer has blobs"
    if "prior_width > 0" in message or "prior_height > 0" in message:
        if any(
            str(other.type) == "PriorBox"  # type: ignore[attr-defined]
            and not other.prior_box_param.HasField("clip")  # type: ignore[attr-defined]
            for other in layers_of(net)
        ):
            # Clipping (the oracle's default) turns a prior outside the image into width 0.
            return "oracle: PriorBox clip defaults to true in this build (SSD fork: false)"
        return "finding D: DetectionOutput with an empty prior"
    if "prior_box_param" in message and "not both" in message:
        return "finding L: PriorBox with both spellings of step or img_size"
    if "Could not find location predictions" in message:
        return "finding I: DetectionOutput without location predictions for a label"
    if layer is not None and _half_pair(layer):
        return CAUSE_2
    if layer is not None and kind not in ELEMENTWISE and _in_place(layer):
        return f"finding B: {kind} in place computes from a half-written bottom in Caffe"
    earlier = _earlier_in_place(net, failing)
    if earlier:
        return f"finding B: {earlier} in place earlier in the net (Caffe computes something else)"
    return "unexplained"


def _earlier_in_place(net: Message, upto: int | None) -> str:
    """The type of a non-elementwise layer run in place before layer `upto` (None: any)."""
    for layer in layers_of(net)[:upto]:
        if layer.type not in ELEMENTWISE and layer.type != "Input" and _in_place(layer):  # type: ignore
            return str(layer.type)  # type: ignore[attr-defined]
    return ""


CAUSE_2 = "cause 2: pad_h/pad_w/stride_h/stride_w given alone"


def _half_pair(layer: Message) -> bool:
    """A Convolution/Deconvolution with only one of pad_h/pad_w or of stride_h/stride_w."""
    if layer.type not in ("Convolution", "Deconvolution"):  # type: ignore[attr-defined]
        return False
    p = layer.convolution_param  # type: ignore[attr-defined]
    half_pad = (p.HasField("pad_h") != p.HasField("pad_w")) and not len(p.pad)
    half_stride = (p.HasField("stride_h") != p.HasField("stride_w")) and not len(p.stride)
    return bool(half_pad or half_stride)


def _shares_parameters(net: Message, layer: Message) -> bool:
    names = {spec.name for spec in layer.param if spec.name}  # type: ignore[attr-defined]
    others = [
        spec.name
        for other in layers_of(net)
        if other is not layer and other.name != layer.name  # type: ignore[attr-defined]
        for spec in other.param  # type: ignore[attr-defined]
    ]
    return bool(names & set(others))


def _in_place(layer: Message) -> bool:
    return list(layer.top) == list(layer.bottom)[: len(layer.top)]  # type: ignore


def _dilation_zero(layer: Message) -> bool:
    return layer.type in ("Convolution", "Deconvolution") and (  # type: ignore[attr-defined]
        0 in layer.convolution_param.dilation  # type: ignore[attr-defined]
    )


def _batch_statistics(layer: Message) -> bool:
    p = layer.batch_norm_param  # type: ignore[attr-defined]
    return bool(layer.type == "BatchNorm" and p.HasField("use_global_stats"))  # type: ignore


def _protocaffe_rejects_cause(net: Message, message: str) -> str:
    if "runs in place on" in message and "overwrites its input" in message:
        return "deliberate: an in-place layer Caffe computes from its half-overwritten input"
    if "(BatchNorm)" in message and "is negative: Caffe takes sqrt(variance + eps)" in message:
        return "deliberate: BatchNorm with a negative eps (Caffe computes NaN where var < -eps)"
    if "Stride dimensions must be nonzero" in message and "is not given" in message:
        return "oracle: stride_h/stride_w default to 1 in this build (BVLC: none, Caffe aborts)"
    if re.search(r"blob \d+ has shape \(1,\) .* needs \(\)", message):
        return "cause 1: 0-D parameter blob"
    if "Eltwise" in message and "coeff" in message:
        return "cause 8: Eltwise MAX with coeff"
    if "(Eltwise)" in message and "Eltwise needs equal shapes" in message:
        return "oracle: Eltwise does not check its bottoms' shapes (CHECK removed)"
    if "(Scale)" in message and re.search(r"bottom 1 shape .* does not match", message):
        return "oracle: Scale does not check its second bottom's shape (CHECK removed)"
    if "(Convolution)" in message or "(Deconvolution)" in message:
        n_d = ("expects a 4-D input", "only 2-D convolution", "is not supported (only axis 1)")
        if any(text in message for text in n_d):
            return "issue 15: N-D convolution"
        if "is larger than the padded input" in message:
            return "issue 15: a kernel larger than the input"
        dilation_zero = any(_dilation_zero(layer) for layer in layers_of(net))
        if "stride and dilation must be positive" in message and dilation_zero:
            return "finding F: convolution with dilation 0"
    if "(Pooling)" in message and "a mask top needs a geometry" in message:
        return "limitation: a pooling mask top where torch's windows differ from Caffe's"
    if re.search(r"\((Convolution|Deconvolution)\): has \d+ bottoms, expects 1", message):
        return "finding M: Convolution over several bottoms (one set of weights for each pair)"
    if "(Upsample)" in message and "expects a 4-D input" in message:
        return "oracle: the fork's Upsample indexes 4 axes of any blob (garbage beyond 4-D)"
    if "(PriorBox)" in message and "expects 4-D bottoms" in message:
        return "finding O: PriorBox over a bottom that is not 4-D (Caffe reads its height/width)"
    if "(Flatten)" in message and "comes before axis" in message:
        return "finding G: Flatten with end_axis just before axis (Caffe inserts an axis of 1)"
    return "unexplained"


def _crash_cause(net: Message, message: str, caffe_accepted: bool) -> str:
    batch_statistics = [
        layer
        for layer in layers_of(net)
        if _batch_statistics(layer) and not layer.batch_norm_param.use_global_stats  # type: ignore
    ]
    if batch_statistics:
        return "cause 6: BatchNorm with batch statistics"
    bad_ratio = _has(
        net, "PriorBox", lambda layer: any(r <= 0 for r in layer.prior_box_param.aspect_ratio)  # type: ignore
    )
    if bad_ratio and ("ZeroDivisionError" in message or "math domain error" in message):
        return "finding D: PriorBox with aspect_ratio <= 0 crashes protocaffe"
    mask_top = _has(net, "Pooling", lambda layer: len(layer.top) == 2)  # type: ignore
    if mask_top and ("for 'Long'" in message or "Got: Long" in message):
        return "finding R: a pooling mask top is an integer tensor, Caffe's is float"
    argmax_1d = "Dimension out of range (expected to be in range of [-1, 0], but got 1)"
    no_axis = _has(net, "ArgMax", lambda layer: not layer.argmax_param.HasField("axis"))  # type: ignore
    if argmax_1d in message and no_axis:
        return "finding S: ArgMax without axis on a 1-D blob crashes the module"
    if "batch_norm eps must be non-negative" in message:
        return "finding Q: BatchNorm with a negative eps raises in the module"
    if "detection_output()" in message:
        return "finding C: DetectionOutput without confidence_threshold crashes the module"
    if not caffe_accepted:
        return f"finding J: protocaffe crashes where Caffe rejects ({message.split(':')[0]})"
    return "unexplained"


def _caffe_failure(net: Message, message: str, protocaffe_error: str | None) -> str:
    if "could not broadcast input array" in message:
        return "oracle: an in-place layer reshaped a net input, so the input cannot be fed"
    if protocaffe_error is not None and is_located(protocaffe_error):
        return "oracle: Caffe crashes (e.g. group 0 divides by zero) where protocaffe refuses"
    earlier = _earlier_in_place(net, None)
    if earlier:
        return f"finding B: {earlier} in place earlier in the net (Caffe computes something else)"
    if any(_half_pair(layer) for layer in layers_of(net)):
        return CAUSE_2 + " (the oracle's stride default 1 makes stride_h: 0 divide by zero)"
    return "unexplained"


def _names_cause(net: Message, outputs: list[str]) -> str:
    for layer in layers_of(net):
        if layer.type in ("Split", "Dropout") and set(layer.top) & set(outputs):  # type: ignore
            return "cause 7: a Split or Dropout top named after its bottom"
    return "unexplained"


def _mismatch_cause(case: Path, net: Message, m: Mismatch) -> str:
    index, kind = m.prefix, m.kind
    layers = layers_of(net)
    layer = layers[index]
    prefix = layers[: index + 1]
    stale = [
        read for read in stale_reads(prefix, caffe_outputs(net, index)) if read.reader >= index
    ]
    kind_of = str(layer.type)  # type: ignore[attr-defined]
    # First: a PriorBox that differs with clip unset differs by it (it reads only its bottoms'
    # shapes, so a stale read of them explains nothing).
    if kind_of == "PriorBox" and not layer.prior_box_param.HasField("clip"):  # type: ignore
        return "oracle: PriorBox clip defaults to true in this build (SSD fork: false)"
    if kind == "value" and stale:
        return "cause 5: in-place write through a blob that shares memory"
    if kind in ("shape", "value") and _half_pair(layer):
        return CAUSE_2
    if kind == "value" and _shares_parameters(net, layer):
        return "cause 9: shared parameters (param { name }) loaded per layer"
    if kind == "shape" and kind_of == "Pooling":
        p = layer.pooling_param  # type: ignore[attr-defined]
        pads = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad, p.pad)
        if (pads[0] > 0) != (pads[1] > 0):
            return "cause 3: pooling's last-window rule applies to both axes"
    if kind_of == "ArgMax" and kind == "value" and not _finite_bottoms(case, layer, m.caffe_at):
        # NaN has no rank: std::partial_sort and torch.sort order it differently.
        return "documented: non-finite inputs (NaN, inf) propagate differently in Caffe"
    if kind_of == "ArgMax" and kind == "value" and _argmax_ties(case, layer, m.caffe_at):
        return "cause 4: ArgMax ties"
    if kind_of == "BatchNorm":
        p = layer.batch_norm_param  # type: ignore[attr-defined]
        if p.HasField("use_global_stats") and not p.use_global_stats:
            return "cause 6: BatchNorm with batch statistics"
    if kind_of == "PriorBox" and kind == "value":
        p = layer.prior_box_param  # type: ignore[attr-defined]
        if any(v != int(v) for v in [*p.min_size, *p.max_size]):
            return "cause 10: PriorBox sizes that are not integers"
    # Non-finite inputs and float-only differences first: a NaN input or a constant MVN
    # group explains a difference whether or not an in-place layer ran before.
    if kind == "value" and _non_finite_only(case, layer, m):
        return "documented: non-finite inputs (NaN, inf) propagate differently in Caffe"
    rule = FLOAT_ONLY.get(kind_of)
    if kind == "value" and rule is not None and m.ours is not None and m.theirs is not None:
        bottom = before(case, str(layer.bottom[0]), m.caffe_at)  # type: ignore[attr-defined]
        verdict = rule(layer, bottom, m.ours, m.theirs)
        if verdict:
            return verdict
    if kind == "value" and _in_place(layer) and kind_of not in ELEMENTWISE:
        return f"finding B: {kind_of} in place computes from a half-written bottom in Caffe"
    earlier = _earlier_in_place(net, index)
    if earlier:
        return f"finding B: {earlier} in place earlier in the net (Caffe computes something else)"
    return "unexplained"


def _non_finite_only(case: Path, layer: Message, m: Mismatch) -> bool:
    """Caffe's input to the layer holds NaN or inf, and every value that differs is NaN or inf
    on one side: Caffe's code paths give other results there (MAX pooling starts at -FLT_MAX
    and skips NaN; ReLU computes max(x, 0) + slope * min(x, 0), NaN for -inf; BLAS scal by 0
    writes zeros over NaN), which is not a semantic difference on finite inputs."""
    if m.ours is None or m.theirs is None or m.ours.shape != m.theirs.shape:
        return False
    if _finite_bottoms(case, layer, m.caffe_at):
        return False
    ours, theirs = m.ours.astype(np.float64), m.theirs.astype(np.float64)
    differ = ~np.isclose(ours, theirs, rtol=1e-4, atol=1e-6, equal_nan=True)
    return bool((~np.isfinite(ours[differ]) | ~np.isfinite(theirs[differ])).all())


def _finite_bottoms(case: Path, layer: Message, caffe_at: int) -> bool:
    """Whether Caffe's inputs to the layer are finite and clear of float32's limit (an empty
    MAX pooling window gives -FLT_MAX, and sums of such values overflow in an order-dependent
    way)."""
    for blob in layer.bottom:  # type: ignore[attr-defined]
        data = before(case, str(blob), caffe_at).astype(np.float64)
        if not (np.isfinite(data) & (np.abs(data) < 1e38)).all():
            return False
    return True


def before(case: Path, blob: str, caffe_at: int) -> np.ndarray:
    """Caffe's value of `blob` just before its layer number `caffe_at` ran."""
    snapshots = np.load(case / "snapshots.npz")
    return np.asarray(snapshots[f"{caffe_at - 1}/{blob}"])


def _argmax_ties(case: Path, layer: Message, caffe_at: int) -> bool:
    """Does the ArgMax's bottom (Caffe's value just before the layer) hold equal values along
    the axis it ranks (each sample's values when no axis is given)?"""
    data = before(case, str(layer.bottom[0]), caffe_at)  # type: ignore[attr-defined]
    p = layer.argmax_param  # type: ignore[attr-defined]
    if p.HasField("axis"):
        rows = np.moveaxis(data, p.axis % data.ndim, -1).reshape(-1, data.shape[p.axis % data.ndim])
    else:
        rows = data.reshape(data.shape[0], -1)
    return any(len(np.unique(row)) < row.size for row in rows)
