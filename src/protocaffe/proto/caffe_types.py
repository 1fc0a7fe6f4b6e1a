"""Typed views of caffe.proto's messages, so that mypy sees every read of a layer's
parameters (`LayerSource.param` is a `LayerParameter`).

Generated from caffe.desc by tests/generate_caffe_types.py: do not edit. After editing
caffe.proto, regenerate caffe.desc (see caffe.proto's header), then this file with
`python tests/generate_caffe_types.py`; tests/test_schema.py checks that both are current.

The messages are protobuf classes made at run time (`protocaffe.proto.schema.message_class`);
these Protocols only describe their fields. Enums are ints; repeated fields are sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Message(Protocol):
    """What every message offers besides its fields."""

    def HasField(self, field_name: str) -> bool: ...


class BlobShape(Message, Protocol):
    dim: Sequence[int]


class BlobProto(Message, Protocol):
    shape: BlobShape
    data: Sequence[float]
    diff: Sequence[float]
    double_data: Sequence[float]
    double_diff: Sequence[float]
    num: int
    channels: int
    height: int
    width: int


class FillerParameter(Message, Protocol):
    type: str
    value: float
    min: float
    max: float
    mean: float
    std: float
    sparse: int
    variance_norm: int


class NetParameter(Message, Protocol):
    name: str
    input: Sequence[str]
    input_shape: Sequence[BlobShape]
    input_dim: Sequence[int]
    force_backward: bool
    state: NetState
    debug_info: bool
    layer: Sequence[LayerParameter]
    layers: Sequence[V1LayerParameter]


class NetState(Message, Protocol):
    phase: int
    level: int
    stage: Sequence[str]


class NetStateRule(Message, Protocol):
    phase: int
    min_level: int
    max_level: int
    stage: Sequence[str]
    not_stage: Sequence[str]


class ParamSpec(Message, Protocol):
    name: str
    share_mode: int
    lr_mult: float
    decay_mult: float


class LayerParameter(Message, Protocol):
    name: str
    type: str
    bottom: Sequence[str]
    top: Sequence[str]
    phase: int
    loss_weight: Sequence[float]
    param: Sequence[ParamSpec]
    blobs: Sequence[BlobProto]
    propagate_down: Sequence[bool]
    include: Sequence[NetStateRule]
    exclude: Sequence[NetStateRule]
    transform_param: TransformationParameter
    loss_param: LossParameter
    accuracy_param: AccuracyParameter
    argmax_param: ArgMaxParameter
    batch_norm_param: BatchNormParameter
    bias_param: BiasParameter
    clip_param: ClipParameter
    concat_param: ConcatParameter
    contrastive_loss_param: ContrastiveLossParameter
    convolution_param: ConvolutionParameter
    crop_param: CropParameter
    data_param: DataParameter
    dropout_param: DropoutParameter
    dummy_data_param: DummyDataParameter
    eltwise_param: EltwiseParameter
    elu_param: ELUParameter
    embed_param: EmbedParameter
    exp_param: ExpParameter
    flatten_param: FlattenParameter
    hdf5_data_param: HDF5DataParameter
    hdf5_output_param: HDF5OutputParameter
    hinge_loss_param: HingeLossParameter
    image_data_param: ImageDataParameter
    infogain_loss_param: InfogainLossParameter
    inner_product_param: InnerProductParameter
    input_param: InputParameter
    log_param: LogParameter
    lrn_param: LRNParameter
    memory_data_param: MemoryDataParameter
    mvn_param: MVNParameter
    parameter_param: ParameterParameter
    pooling_param: PoolingParameter
    power_param: PowerParameter
    prelu_param: PReLUParameter
    python_param: PythonParameter
    recurrent_param: RecurrentParameter
    reduction_param: ReductionParameter
    relu_param: ReLUParameter
    reshape_param: ReshapeParameter
    scale_param: ScaleParameter
    sigmoid_param: SigmoidParameter
    softmax_param: SoftmaxParameter
    spp_param: SPPParameter
    slice_param: SliceParameter
    swish_param: SwishParameter
    tanh_param: TanHParameter
    threshold_param: ThresholdParameter
    tile_param: TileParameter
    window_data_param: WindowDataParameter
    permute_param: PermuteParameter
    prior_box_param: PriorBoxParameter
    detection_output_param: DetectionOutputParameter
    norm_param: NormalizeParameter
    shuffle_channel_param: ShuffleChannelParameter
    roi_pooling_param: ROIPoolingParameter
    bn_param: BNParameter
    interp_param: InterpParameter
    upsample_param: UpsampleParameter
    relu6_param: ReLU6Parameter
    yolo_detection_output_param: YoloDetectionOutputParameter
    yolov3_detection_output_param: Yolov3DetectionOutputParameter
    reorg_param: ReorgParameter
    mish_param: MishParameter
    transpose_param: TransposeParameter
    reverse_param: ReverseParameter
    ctc_decoder_param: CTCDecoderParameter
    flip_param: FlipParameter
    psroi_pooling_param: PSROIPoolingParameter
    bbox_reg_param: BBoxRegParameter
    box_output_param: BoxOutputParameter
    scale_route_param: ScaleRouteParameter
    decode_bbox_param: DecodeBBoxParameter
    box_group_output_param: BoxGroupOutputParameter
    unpooling_param: UnpoolingParameter
    convolution3d_param: Convolution3DParameter
    pooling3d_param: Pooling3DParameter
    resize_param: ResizeParameter
    hardsigmoid_param: HardSigmoidParameter
    unsqueeze_param: UnsqueezeParameter
    pad_param: PadParameter
    bilinear_interpolate_param: BilinearInterpolateParameter
    max_unpool_param: MaxUnPoolParameter
    pixelshuffle_param: PixelShuffleParameter
    proposal_param: ProposalParameter
    lstm_param: LstmParameter
    continuation_indicator_param: ContinuationIndicatorParameter
    pooling_nd_param: PoolingNDParameter
    denseblock_param: DenseBlockParameter
    lstm_conv_param: Sequence[LSTMConvolutionParameter]
    lstm_debug_param: LSTMDebugParameter


class TransformationParameter(Message, Protocol):
    scale: float
    mirror: bool
    crop_size: int
    mean_file: str
    mean_value: Sequence[float]
    force_color: bool
    force_gray: bool


class LossParameter(Message, Protocol):
    ignore_label: int
    normalization: int
    normalize: bool


class AccuracyParameter(Message, Protocol):
    top_k: int
    axis: int
    ignore_label: int


class ArgMaxParameter(Message, Protocol):
    out_max_val: bool
    top_k: int
    axis: int


class ClipParameter(Message, Protocol):
    min: float
    max: float


class ConcatParameter(Message, Protocol):
    axis: int
    concat_dim: int


class BatchNormParameter(Message, Protocol):
    use_global_stats: bool
    moving_average_fraction: float
    eps: float
    weight_filler: FillerParameter
    bias_filler: FillerParameter
    use_alpha_beta: bool
    do_all_reduce: bool


class BiasParameter(Message, Protocol):
    axis: int
    num_axes: int
    filler: FillerParameter


class ContrastiveLossParameter(Message, Protocol):
    margin: float
    legacy_version: bool


class ConvolutionParameter(Message, Protocol):
    num_output: int
    bias_term: bool
    pad: Sequence[int]
    kernel_size: Sequence[int]
    stride: Sequence[int]
    dilation: Sequence[int]
    pad_h: int
    pad_w: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    group: int
    weight_filler: FillerParameter
    bias_filler: FillerParameter
    engine: int
    axis: int
    force_nd_im2col: bool
    kernel_depth: int
    temporal_stride: int
    filter_group: int
    temporal_pad: int
    pad_shape: BlobShape
    kernel_shape: BlobShape
    stride_shape: BlobShape


class CropParameter(Message, Protocol):
    axis: int
    offset: Sequence[int]


class DataParameter(Message, Protocol):
    source: str
    batch_size: int
    rand_skip: int
    backend: int
    scale: float
    mean_file: str
    crop_size: int
    mirror: bool
    force_encoded_color: bool
    prefetch: int


class DropoutParameter(Message, Protocol):
    dropout_ratio: float


class DummyDataParameter(Message, Protocol):
    data_filler: Sequence[FillerParameter]
    shape: Sequence[BlobShape]
    num: Sequence[int]
    channels: Sequence[int]
    height: Sequence[int]
    width: Sequence[int]


class EltwiseParameter(Message, Protocol):
    operation: int
    coeff: Sequence[float]
    stable_prod_grad: bool


class ELUParameter(Message, Protocol):
    alpha: float


class EmbedParameter(Message, Protocol):
    num_output: int
    input_dim: int
    bias_term: bool
    weight_filler: FillerParameter
    bias_filler: FillerParameter


class ExpParameter(Message, Protocol):
    base: float
    scale: float
    shift: float


class FlattenParameter(Message, Protocol):
    axis: int
    end_axis: int


class HDF5DataParameter(Message, Protocol):
    source: str
    batch_size: int
    shuffle: bool


class HDF5OutputParameter(Message, Protocol):
    file_name: str


class HingeLossParameter(Message, Protocol):
    norm: int


class ImageDataParameter(Message, Protocol):
    source: str
    batch_size: int
    rand_skip: int
    shuffle: bool
    new_height: int
    new_width: int
    is_color: bool
    scale: float
    mean_file: str
    crop_size: int
    mirror: bool
    root_folder: str


class InfogainLossParameter(Message, Protocol):
    source: str
    axis: int


class InnerProductParameter(Message, Protocol):
    num_output: int
    bias_term: bool
    weight_filler: FillerParameter
    bias_filler: FillerParameter
    axis: int
    transpose: bool


class InputParameter(Message, Protocol):
    shape: Sequence[BlobShape]


class LogParameter(Message, Protocol):
    base: float
    scale: float
    shift: float


class LRNParameter(Message, Protocol):
    local_size: int
    alpha: float
    beta: float
    norm_region: int
    k: float
    engine: int


class MemoryDataParameter(Message, Protocol):
    batch_size: int
    channels: int
    height: int
    width: int


class MVNParameter(Message, Protocol):
    normalize_variance: bool
    across_channels: bool
    eps: float


class ParameterParameter(Message, Protocol):
    shape: BlobShape


class PoolingParameter(Message, Protocol):
    pool: int
    pad: int
    pad_h: int
    pad_w: int
    kernel_size: int
    kernel_h: int
    kernel_w: int
    stride: int
    stride_h: int
    stride_w: int
    engine: int
    global_pooling: bool
    round_mode: int
    ceil_mode: bool
    kernel_depth: int
    temporal_stride: int
    pad_shape: BlobShape
    kernel_shape: BlobShape
    stride_shape: BlobShape


class PowerParameter(Message, Protocol):
    power: float
    scale: float
    shift: float


class PythonParameter(Message, Protocol):
    module: str
    layer: str
    param_str: str
    share_in_parallel: bool


class RecurrentParameter(Message, Protocol):
    num_output: int
    weight_filler: FillerParameter
    bias_filler: FillerParameter
    debug_info: bool
    expose_hidden: bool


class ReductionParameter(Message, Protocol):
    operation: int
    axis: int
    coeff: float


class ReLUParameter(Message, Protocol):
    negative_slope: float
    engine: int


class ReshapeParameter(Message, Protocol):
    shape: BlobShape
    axis: int
    num_axes: int


class ScaleParameter(Message, Protocol):
    axis: int
    num_axes: int
    filler: FillerParameter
    bias_term: bool
    bias_filler: FillerParameter


class SigmoidParameter(Message, Protocol):
    engine: int


class SliceParameter(Message, Protocol):
    axis: int
    slice_point: Sequence[int]
    slice_dim: int


class SoftmaxParameter(Message, Protocol):
    engine: int
    axis: int


class SwishParameter(Message, Protocol):
    beta: float


class TanHParameter(Message, Protocol):
    engine: int


class TileParameter(Message, Protocol):
    axis: int
    tiles: int


class ThresholdParameter(Message, Protocol):
    threshold: float


class WindowDataParameter(Message, Protocol):
    source: str
    scale: float
    mean_file: str
    batch_size: int
    crop_size: int
    mirror: bool
    fg_threshold: float
    bg_threshold: float
    fg_fraction: float
    context_pad: int
    crop_mode: str
    cache_images: bool
    root_folder: str


class SPPParameter(Message, Protocol):
    pyramid_height: int
    pool: int
    engine: int


class V1LayerParameter(Message, Protocol):
    bottom: Sequence[str]
    top: Sequence[str]
    name: str
    include: Sequence[NetStateRule]
    exclude: Sequence[NetStateRule]
    type: int
    blobs: Sequence[BlobProto]
    param: Sequence[str]
    blob_share_mode: Sequence[int]
    blobs_lr: Sequence[float]
    weight_decay: Sequence[float]
    loss_weight: Sequence[float]
    accuracy_param: AccuracyParameter
    argmax_param: ArgMaxParameter
    concat_param: ConcatParameter
    contrastive_loss_param: ContrastiveLossParameter
    convolution_param: ConvolutionParameter
    data_param: DataParameter
    dropout_param: DropoutParameter
    dummy_data_param: DummyDataParameter
    eltwise_param: EltwiseParameter
    exp_param: ExpParameter
    hdf5_data_param: HDF5DataParameter
    hdf5_output_param: HDF5OutputParameter
    hinge_loss_param: HingeLossParameter
    image_data_param: ImageDataParameter
    infogain_loss_param: InfogainLossParameter
    inner_product_param: InnerProductParameter
    lrn_param: LRNParameter
    memory_data_param: MemoryDataParameter
    mvn_param: MVNParameter
    pooling_param: PoolingParameter
    power_param: PowerParameter
    relu_param: ReLUParameter
    sigmoid_param: SigmoidParameter
    softmax_param: SoftmaxParameter
    slice_param: SliceParameter
    tanh_param: TanHParameter
    threshold_param: ThresholdParameter
    window_data_param: WindowDataParameter
    transform_param: TransformationParameter
    loss_param: LossParameter
    layer: V0LayerParameter
    interp_param: InterpParameter
    unpooling_param: UnpoolingParameter
    bn_param: BNParameter


class V0LayerParameter(Message, Protocol):
    name: str
    type: str
    num_output: int
    biasterm: bool
    weight_filler: FillerParameter
    bias_filler: FillerParameter
    pad: int
    kernelsize: int
    group: int
    stride: int
    pool: int
    dropout_ratio: float
    local_size: int
    alpha: float
    beta: float
    k: float
    source: str
    scale: float
    meanfile: str
    batchsize: int
    cropsize: int
    mirror: bool
    blobs: Sequence[BlobProto]
    blobs_lr: Sequence[float]
    weight_decay: Sequence[float]
    rand_skip: int
    det_fg_threshold: float
    det_bg_threshold: float
    det_fg_fraction: float
    det_context_pad: int
    det_crop_mode: str
    new_num: int
    new_channels: int
    new_height: int
    new_width: int
    shuffle_images: bool
    concat_dim: int
    hdf5_output_param: HDF5OutputParameter


class PReLUParameter(Message, Protocol):
    filler: FillerParameter
    channel_shared: bool


class SolverParameter(Message, Protocol):
    net: str
    net_param: NetParameter
    train_net: str
    test_net: Sequence[str]
    train_net_param: NetParameter
    test_net_param: Sequence[NetParameter]
    train_state: NetState
    test_state: Sequence[NetState]
    test_iter: Sequence[int]
    test_interval: int
    test_compute_loss: bool
    test_initialization: bool
    base_lr: float
    display: int
    average_loss: int
    max_iter: int
    iter_size: int
    lr_policy: str
    gamma: float
    power: float
    momentum: float
    weight_decay: float
    regularization_type: str
    stepsize: int
    stepvalue: Sequence[int]
    clip_gradients: float
    snapshot: int
    snapshot_prefix: str
    snapshot_diff: bool
    snapshot_format: int
    solver_mode: int
    device_id: int
    random_seed: int
    type: str
    delta: float
    momentum2: float
    rms_decay: float
    debug_info: bool
    snapshot_after_train: bool
    solver_type: int
    layer_wise_reduce: bool
    weights: Sequence[str]
    eval_type: str
    ap_version: str


class PermuteParameter(Message, Protocol):
    order: Sequence[int]


class NonMaximumSuppressionParameter(Message, Protocol):
    nms_threshold: float
    top_k: int
    eta: float


class SaveOutputParameter(Message, Protocol):
    output_directory: str
    output_name_prefix: str
    output_format: str
    label_map_file: str
    name_size_file: str
    num_test_image: int


class PriorBoxParameter(Message, Protocol):
    min_size: Sequence[float]
    max_size: Sequence[float]
    aspect_ratio: Sequence[float]
    flip: bool
    clip: bool
    variance: Sequence[float]
    img_size: int
    img_h: int
    img_w: int
    step: float
    step_h: float
    step_w: float
    offset: float
    denser_prior_boxes: bool


class DetectionOutputParameter(Message, Protocol):
    num_classes: int
    share_location: bool
    background_label_id: int
    nms_param: NonMaximumSuppressionParameter
    save_output_param: SaveOutputParameter
    code_type: int
    variance_encoded_in_target: bool
    keep_top_k: int
    confidence_threshold: float
    visualize: bool
    visualize_threshold: float
    save_file: str
    clip: bool
    objectness_score: float
    use_polygon: bool


class NormalizeParameter(Message, Protocol):
    across_spatial: bool
    scale_filler: FillerParameter
    channel_shared: bool
    eps: float


class ShuffleChannelParameter(Message, Protocol):
    group: int


class ROIPoolingParameter(Message, Protocol):
    pooled_h: int
    pooled_w: int
    spatial_scale: float
    pad_ratio: float


class BNParameter(Message, Protocol):
    bn_mode: int
    scale_filler: FillerParameter
    shift_filler: FillerParameter
    slope_filler: FillerParameter
    bias_filler: FillerParameter
    momentum: float
    eps: float
    frozen: bool


class InterpParameter(Message, Protocol):
    height: int
    width: int
    zoom_factor: int
    shrink_factor: int
    pad_beg: int
    pad_end: int


class UpsampleParameter(Message, Protocol):
    scale: int
    scale_h: int
    scale_w: int
    pad_out_h: bool
    pad_out_w: bool
    upsample_h: int
    upsample_w: int


class ReLU6Parameter(Message, Protocol):
    negative_slope: float
    threshold: float


class YoloDetectionOutputParameter(Message, Protocol):
    side: int
    num_classes: int
    num_box: int
    coords: int
    confidence_threshold: float
    nms_threshold: float
    biases: Sequence[float]
    label_map_file: str


class Yolov3DetectionOutputParameter(Message, Protocol):
    num_classes: int
    num_box: int
    confidence_threshold: float
    nms_threshold: float
    biases: Sequence[float]
    anchors_scale: Sequence[int]
    mask_group_num: int
    mask: Sequence[int]
    gaussian_box: bool


class ReorgParameter(Message, Protocol):
    stride: int
    reverse: bool


class MishParameter(Message, Protocol):
    pass


class TransposeParameter(Message, Protocol):
    dim: Sequence[int]


class ReverseParameter(Message, Protocol):
    axis: int


class CTCDecoderParameter(Message, Protocol):
    blank_index: int
    ctc_merge_repeated: bool


class FlipParameter(Message, Protocol):
    flip_width: bool
    flip_height: bool


class PSROIPoolingParameter(Message, Protocol):
    spatial_scale: float
    output_dim: int
    group_size: int


class BBoxRegParameter(Message, Protocol):
    bbox_mean: Sequence[float]
    bbox_std: Sequence[float]
    cls_aware: bool


class DecodeBBoxParameter(Message, Protocol):
    gt_iou_thr: float


class BoxOutputParameter(Message, Protocol):
    fg_thr: float
    iou_thr: float
    nms_type: str
    field_h: Sequence[int]
    field_w: Sequence[int]
    downsample_rate: Sequence[int]
    field_whr: float
    field_xyr: float
    max_nms_num: int
    max_post_nms_num: int
    min_size: float


class BoxGroupParameter(Message, Protocol):
    field_h: Sequence[int]
    field_w: Sequence[int]
    stride: int


class BoxGroupOutputParameter(Message, Protocol):
    fg_thr: float
    iou_thr: float
    nms_type: str
    box_group_param: Sequence[BoxGroupParameter]
    field_whr: float
    field_xyr: float
    max_nms_num: int
    max_post_nms_num: int
    min_size: float


class ScaleRouteParameter(Message, Protocol):
    low_scale: float
    high_scale: float


class UnpoolingParameter(Message, Protocol):
    unpool: int
    pad: int
    pad_h: int
    pad_w: int
    kernel_size: int
    kernel_h: int
    kernel_w: int
    stride: int
    stride_h: int
    stride_w: int
    unpool_size: int
    unpool_h: int
    unpool_w: int


class Convolution3DParameter(Message, Protocol):
    num_output: int
    bias_term: bool
    pad: int
    kernel_size: int
    group: int
    kernel_depth: int
    stride: int
    temporal_stride: int
    weight_filler: FillerParameter
    bias_filler: FillerParameter
    filter_group: int
    temporal_pad: int


class Pooling3DParameter(Message, Protocol):
    pool: int
    kernel_size: int
    stride: int
    pad: int
    kernel_depth: int
    temporal_stride: int


class ResizeParameter(Message, Protocol):
    height: int
    width: int
    is_pyramid_test: bool
    out_height_scale: float
    out_width_scale: float


class HardSigmoidParameter(Message, Protocol):
    alpha: float
    beta: float


class UnsqueezeParameter(Message, Protocol):
    dim: int


class PadParameter(Message, Protocol):
    pad_type: int
    pad_u: int
    pad_d: int
    pad_l: int
    pad_r: int
    pad_value: float


class BilinearInterpolateParameter(Message, Protocol):
    dst_h: int
    dst_w: int
    scale_factor: float
    align_corners: bool


class MaxUnPoolParameter(Message, Protocol):
    dst_h: int
    dst_w: int


class PixelShuffleParameter(Message, Protocol):
    upscale_factor: int


class ProposalParameter(Message, Protocol):
    feat_stride: int
    base_size: int
    min_size: int
    ratio: Sequence[float]
    scale: Sequence[float]
    pre_nms_topn: int
    post_nms_topn: int
    nms_thresh: float


class LstmParameter(Message, Protocol):
    num_output: int
    clipping_threshold: float
    weight_filler: FillerParameter
    bias_filler: FillerParameter
    batch_size: int


class ContinuationIndicatorParameter(Message, Protocol):
    time_step: int
    batch_size: int
    axis: int


class PoolingNDParameter(Message, Protocol):
    pool: int
    pad: Sequence[int]
    kernel_size: Sequence[int]
    stride: Sequence[int]
    pad_h: int
    pad_w: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    engine: int
    global_pooling: bool
    axis: int


class DenseBlockParameter(Message, Protocol):
    numTransition: int
    initChannel: int
    growthRate: int
    pad_h: int
    pad_w: int
    conv_verticalStride: int
    conv_horizentalStride: int
    filter_H: int
    filter_W: int
    Filter_Filler: FillerParameter
    BN_Scaler_Filler: FillerParameter
    BN_Bias_Filler: FillerParameter
    gpuIdx: int
    use_dropout: bool
    dropout_amount: float
    use_BC: bool
    BC_ultra_space_efficient: bool
    workspace_MB: int
    moving_average_fraction: float


class LSTMDebugParameter(Message, Protocol):
    expose: Sequence[str]
    disable_hadamard: bool
    axis_hadamard: int
    num_axes_hadamard: int
    ignore_x: bool


class LSTMConvolutionParameter(Message, Protocol):
    num_output: int
    bias_term: bool
    pad: Sequence[int]
    kernel_size: Sequence[int]
    stride: Sequence[int]
    dilation: Sequence[int]
    pad_h: int
    pad_w: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    group: int
    weight_filler: FillerParameter
    bias_filler: FillerParameter
    engine: int
    axis: int
    force_nd_im2col: bool
    type: str
