"""senlinuc/caffe_ocr's DenseBlock, TEST phase.

Source: senlinuc/caffe_ocr @ 81642f61, src/caffe/layers/DenseBlock_layer.cpp:
- LayerSetUp: initChannel is bottom[0]->channels(); `this->blobs_` holds, for transition t of
  numTransition T with C_t = initChannel + t * growthRate input channels, the 3x3 filter at t
  ((growthRate, C_t, 3, 3); (growthRate, 4 growthRate, 3, 3) with use_BC), the BN scaler at
  T + t, the bias at 2T + t, the global mean at 3T + t and the global variance at 4T + t (each
  (1, C_t, 1, 1)); with use_BC the 1x1 filter (4 growthRate, C_t, 1, 1) at 5T + t and the BC
  BN's scaler, bias, mean and variance ((1, 4 growthRate, 1, 1)) at 6T, 7T, 8T, 9T + t; then
  one (1,) blob, the moving-average factor (blobs_[5T], or blobs_[10T] with use_BC). It CHECKs
  ("Nope") that the layer gives no param spec: it adds its own.
- Reshape: the top is (N, initChannel + T growthRate, H, W).
- Forward_cpu (TEST): per transition BN_inf_Fwd, ReLU_Fwd, [use_BC: convolution_Fwd 1x1,
  BN_inf_Fwd, ReLU_Fwd], convolution_Fwd 3x3, then mergeChannelData (the old channels first,
  the new growthRate after them). Dropout is never applied there.
- BN_inf_Fwd: scale_factor = factor == 0 ? 0 : 1 / factor (float); mean and variance are the
  stored blobs times it (caffe_cpu_scale, float); denom = 1.0 / sqrt(var + 1e-5) (double,
  stored as float); top = scaler * (denom * (x - mean)) + bias.
- ReLU_Fwd: x >= 0 ? x : 0.
- convolution_Fwd: zero-padded, output size = input size; top[n][o][h][w] is the sum over i,
  fx, fy of filter[o][i][fx][fy] * x[n][i][h + k / 2 - fx][w + k / 2 - fy]: a true
  convolution (the kernel flipped against Caffe's ConvolutionLayer).

Under `--dialect denseblock-gpu`, src/caffe/layers/DenseBlock_layer.cu, Forward_gpu (TEST):
the same chain through cuDNN, each BN a cudnnBatchNormalizationForwardInference on the stored
global mean and variance blobs as they are (the factor blob is never read in the .cu), with
epsilon CUDNN_BN_MIN_EPSILON, which is 1e-5 in the cuDNN headers the fork ships
(3rdparty/include/cudnn-6.0/cudnn.h, 3rdparty/include/cudnn/cudnn.h, 7.0); cuDNN documents
y = bnScale * (x - estimatedMean) / sqrt(epsilon + estimatedVariance) + bnBias (summed here in
float64). The convolutions are cuDNN's CUDNN_CONVOLUTION: convolution_Fwd's true convolution.
"""

from __future__ import annotations

import numpy as np

from protocaffe.verify.reference.params import as_f32
from protocaffe.verify.reference.registry import Array, RefLayer, Shape, register


def convolution_fwd(x: Array, filt: Array) -> Array:
    """convolution_Fwd for a k x k filter (k odd), summed in float64."""
    n, c_in, h, w = x.shape
    c_out, _, k, _ = filt.shape
    half = k // 2
    padded = np.zeros((n, c_in, h + 2 * half, w + 2 * half))
    padded[:, :, half : half + h, half : half + w] = x
    out = np.zeros((n, c_out, h, w))
    for fx in range(k):
        for fy in range(k):
            # x[h + half - fx] sits at padded[h + 2 * half - fx].
            rows = slice(2 * half - fx, 2 * half - fx + h)
            cols = slice(2 * half - fy, 2 * half - fy + w)
            out += np.einsum("oi,nihw->nohw", filt[:, :, fx, fy], padded[:, :, rows, cols])
    return out.astype(np.float32)


def _bn_inf_fwd(
    x: Array, mean: Array, var: Array, scaler: Array, bias: Array, factor: np.float32
) -> Array:
    scale_factor = np.float32(0) if factor == 0 else np.float32(1) / factor
    local_mean = (mean.reshape(-1) * scale_factor).astype(np.float32)
    local_var = (var.reshape(-1) * scale_factor).astype(np.float32)
    denom = (1.0 / np.sqrt(local_var.astype(np.float64) + 1e-5)).astype(np.float32)
    c = x.shape[1]
    centred = x - local_mean.reshape(1, c, 1, 1)
    top: Array = (
        scaler.reshape(1, c, 1, 1) * (denom.reshape(1, c, 1, 1) * centred)
        + bias.reshape(1, c, 1, 1)
    ).astype(np.float32)
    return top


def _cudnn_bn_inference(x: Array, mean: Array, var: Array, scaler: Array, bias: Array) -> Array:
    c = x.shape[1]

    def channel(a: Array) -> Array:
        return a.astype(np.float64).reshape(1, c, 1, 1)

    top = channel(scaler) * (x - channel(mean)) / np.sqrt(1e-5 + channel(var)) + channel(bias)
    return np.asarray(top, dtype=np.float32)


def _relu_fwd(x: Array) -> Array:
    return np.where(x >= 0, x, np.float32(0)).astype(np.float32)


@register("DenseBlock")
def dense_block(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    x = as_f32(bottoms[0])
    p = layer.param.denseblock_param
    layer.check(len(layer.param.param) == 0, "Nope (DenseBlock adds its own param specs)")
    layer.check(x.ndim == 4, f"DenseBlock reads a 4-D bottom (N, C, H, W), got {x.shape}")
    transitions, growth, bc = int(p.numTransition), int(p.growthRate), bool(p.use_BC)
    if transitions < 1 or growth < 1:
        raise layer.fail(
            f"numTransition ({transitions}) and growthRate ({growth}) must be positive"
        )
    init_channel = x.shape[1]
    channels = [init_channel + t * growth for t in range(transitions)]
    quad = 4 * growth
    shapes: list[Shape] = [(growth, quad if bc else c, 3, 3) for c in channels]
    for _ in range(4):  # scaler, bias, global mean, global variance
        shapes += [(1, c, 1, 1) for c in channels]
    if bc:
        shapes += [(quad, c, 1, 1) for c in channels]
        for _ in range(4):
            shapes += [(1, quad, 1, 1) for _ in channels]
    shapes.append((1,))
    blobs = layer.weights(*shapes)
    factor = np.float32(blobs[-1][0])
    gpu = "denseblock-gpu" in layer.dialects

    def blob(group: int, t: int) -> Array:
        return blobs[group * transitions + t]

    def bn(x: Array, mean: Array, var: Array, scaler: Array, bias: Array) -> Array:
        if gpu:
            return _cudnn_bn_inference(x, mean, var, scaler, bias)
        return _bn_inf_fwd(x, mean, var, scaler, bias, factor)

    merged = x
    for t in range(transitions):
        y = _relu_fwd(bn(merged, blob(3, t), blob(4, t), blob(1, t), blob(2, t)))
        if bc:
            y = convolution_fwd(y, blob(5, t))
            y = _relu_fwd(bn(y, blob(8, t), blob(9, t), blob(6, t), blob(7, t)))
        new = convolution_fwd(y, blob(0, t))
        merged = np.concatenate([merged, new], axis=1)
    return [merged]
