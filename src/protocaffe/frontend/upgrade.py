"""Caffe's upgrades of legacy nets (upgrade_proto.cpp): V0 and V1 layer types as V2 type
strings, and V0's flat parameters moved into the V2 parameter messages.

The one table of V1 layer types: the prototxt reader maps V1 enum names with it, the caffemodel
reader V1 enum numbers.
"""

from __future__ import annotations

from typing import Any, Final

# V1LayerParameter.LayerType: number -> (enum name, the V2 type string Caffe upgrades it to).
# From caffe.proto and UpgradeV1LayerType in caffe/src/caffe/util/upgrade_proto.cpp.
V1_LAYER_TYPES: Final[dict[int, tuple[str, str]]] = {
    0: ("NONE", ""),
    1: ("ACCURACY", "Accuracy"),
    2: ("BNLL", "BNLL"),
    3: ("CONCAT", "Concat"),
    4: ("CONVOLUTION", "Convolution"),
    5: ("DATA", "Data"),
    6: ("DROPOUT", "Dropout"),
    7: ("EUCLIDEAN_LOSS", "EuclideanLoss"),
    8: ("FLATTEN", "Flatten"),
    9: ("HDF5_DATA", "HDF5Data"),
    10: ("HDF5_OUTPUT", "HDF5Output"),
    11: ("IM2COL", "Im2col"),
    12: ("IMAGE_DATA", "ImageData"),
    13: ("INFOGAIN_LOSS", "InfogainLoss"),
    14: ("INNER_PRODUCT", "InnerProduct"),
    15: ("LRN", "LRN"),
    16: ("MULTINOMIAL_LOGISTIC_LOSS", "MultinomialLogisticLoss"),
    17: ("POOLING", "Pooling"),
    18: ("RELU", "ReLU"),
    19: ("SIGMOID", "Sigmoid"),
    20: ("SOFTMAX", "Softmax"),
    21: ("SOFTMAX_LOSS", "SoftmaxWithLoss"),
    22: ("SPLIT", "Split"),
    23: ("TANH", "TanH"),
    24: ("WINDOW_DATA", "WindowData"),
    25: ("ELTWISE", "Eltwise"),
    26: ("POWER", "Power"),
    27: ("SIGMOID_CROSS_ENTROPY_LOSS", "SigmoidCrossEntropyLoss"),
    28: ("HINGE_LOSS", "HingeLoss"),
    29: ("MEMORY_DATA", "MemoryData"),
    30: ("ARGMAX", "ArgMax"),
    31: ("THRESHOLD", "Threshold"),
    32: ("DUMMY_DATA", "DummyData"),
    33: ("SLICE", "Slice"),
    34: ("MVN", "MVN"),
    35: ("ABSVAL", "AbsVal"),
    36: ("SILENCE", "Silence"),
    37: ("CONTRASTIVE_LOSS", "ContrastiveLoss"),
    38: ("EXP", "Exp"),
    39: ("DECONVOLUTION", "Deconvolution"),
    # facebook/C3D v1.0 numbers it 31 (BVLC's THRESHOLD): renumbered in protocaffe's schema.
    1031: ("POOLING3D", "Pooling3D"),
}


# V1 enum name -> V2 type string (UpgradeV1LayerType); NONE has no V2 type.
V1_TYPES: Final[dict[str, str]] = {name: v2 for name, v2 in V1_LAYER_TYPES.values() if v2}

# V0 `layer { type: "..." }` strings, as V2 type strings (Caffe's UpgradeV0LayerType).
V0_TYPES = {
    "accuracy": "Accuracy",
    "bnll": "BNLL",
    "concat": "Concat",
    "conv": "Convolution",
    "data": "Data",
    "dropout": "Dropout",
    "euclidean_loss": "EuclideanLoss",
    "flatten": "Flatten",
    "hdf5_data": "HDF5Data",
    "hdf5_output": "HDF5Output",
    "im2col": "Im2col",
    "images": "ImageData",
    "infogain_loss": "InfogainLoss",
    "innerproduct": "InnerProduct",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MultinomialLogisticLoss",
    "pool": "Pooling",
    "relu": "ReLU",
    "sigmoid": "Sigmoid",
    "softmax": "Softmax",
    "softmax_loss": "SoftmaxWithLoss",
    "split": "Split",
    "tanh": "TanH",
    "window_data": "WindowData",
}


def copy_common_params(src: Any, dst: Any) -> None:
    """Copy every `*_param` submessage that V1 and V2 layers share by name."""
    dst_fields = dst.DESCRIPTOR.fields_by_name
    for fd, value in src.ListFields():
        if fd.name.endswith("_param") and fd.name in dst_fields:
            getattr(dst, fd.name).CopyFrom(value)


def upgrade_v0(v0: Any, layer: Any) -> None:
    """Move the flat V0 fields into the V2 parameter messages (Caffe's UpgradeV0LayerParameter)."""
    kind = layer.type
    if kind == "Convolution":
        conv = layer.convolution_param
        if v0.HasField("num_output"):
            conv.num_output = v0.num_output
        conv.bias_term = v0.biasterm
        if v0.HasField("pad"):
            conv.pad.append(v0.pad)
        if v0.HasField("kernelsize"):
            conv.kernel_size.append(v0.kernelsize)
        if v0.HasField("group"):
            conv.group = v0.group
        if v0.HasField("stride"):
            conv.stride.append(v0.stride)
    elif kind == "InnerProduct":
        ip = layer.inner_product_param
        if v0.HasField("num_output"):
            ip.num_output = v0.num_output
        ip.bias_term = v0.biasterm
    elif kind == "Pooling":
        pool = layer.pooling_param
        pool.pool = v0.pool
        if v0.HasField("pad"):
            pool.pad = v0.pad
        if v0.HasField("kernelsize"):
            pool.kernel_size = v0.kernelsize
        if v0.HasField("stride"):
            pool.stride = v0.stride
    elif kind == "Dropout":
        layer.dropout_param.dropout_ratio = v0.dropout_ratio
    elif kind == "LRN":
        lrn = layer.lrn_param
        lrn.local_size = v0.local_size
        lrn.alpha = v0.alpha
        lrn.beta = v0.beta
        lrn.k = v0.k
    elif kind == "Concat":
        layer.concat_param.concat_dim = v0.concat_dim
    if kind == "Dropout" or kind == "ReLU":
        layer.SetInParent()
