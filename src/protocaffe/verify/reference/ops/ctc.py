"""The OCR forks' CTC greedy decoder.

Source: senlinuc/caffe_ocr @ 81642f61, src/caffe/layers/ctc_decoder_layer.cpp
(CTCDecoderLayer::LayerSetUp, Reshape, Forward_cpu; CTCGreedyDecoderLayer::Decode, the
3-argument overload). With a label bottom the layer is an accuracy (the net leaves it out).
"""

from __future__ import annotations

import numpy as np

from protocaffe.verify.reference.params import as_f32, count
from protocaffe.verify.reference.registry import Array, RefLayer, register


def ctc_greedy(scores: Array, blank_index: int, merge_repeated: bool) -> Array:
    """(T, N, C, ...) scores -> (N, T, 1, 1): per n, for t < T, the first maximum class is
    appended unless it is the blank or (merging) equals the previous step's; the rest is -1."""
    steps, batch, classes = scores.shape[0], scores.shape[1], scores.shape[2]
    inner = count(scores.shape, 2)
    flat = as_f32(scores).reshape(-1)
    blank = blank_index if blank_index >= 0 else classes - 1
    top = np.full((batch, steps), -1.0, np.float32)
    for n in range(batch):
        previous = -1
        emitted = 0
        for t in range(steps):
            probs = flat[(t * batch + n) * inner : (t * batch + n) * inner + classes]
            best, best_value = 0, probs[0]
            for c in range(1, classes):
                if probs[c] > best_value:
                    best, best_value = c, probs[c]
            if best != blank and not (merge_repeated and best == previous):
                top[n, emitted] = best
                emitted += 1
            previous = best
    return top.reshape(batch, steps, 1, 1)


@register("CTCGreedyDecoder", bottoms=(1, 1))
def ctc_greedy_decoder(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.ctc_decoder_param
    x = bottoms[0]
    layer.check(x.ndim >= 3, f"expects (T, N, C) scores, got {x.shape}")
    return [ctc_greedy(x, int(p.blank_index), bool(p.ctc_merge_repeated))]
