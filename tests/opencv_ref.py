"""OpenCV's Caffe importer as a reference, run in a separate worker process.

OpenCV 4.14 can corrupt its heap after a forward() it rejects (seen as "munmap_chunk(): invalid
pointer" at exit), so it never runs inside the test process: one long-lived worker evaluates
nets, and a crashed worker is replaced.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np


def _forward(proto: str, weights: str, x: np.ndarray, names: list[str]) -> list[np.ndarray] | str:
    import cv2

    net = cv2.dnn.readNetFromCaffe(proto, weights)
    net.enableFusion(False)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(x)
    # OpenCV 4.14 names some layers (those with weights) after their first top: callers pass
    # (layer name, top name) pairs joined by "\0", and the one OpenCV knows is used.
    known = set(net.getLayerNames())
    wanted = [n.split("\0")[0] if n.split("\0")[0] in known else n.split("\0")[1] for n in names]
    try:
        return [np.array(out) for out in net.forward(wanted)]
    except cv2.error as exc:
        return f"OpenCV cannot run this net: {exc}"


class OpenCVWorker:
    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def forward(
        self, proto: str, weights: str, x: np.ndarray, names: list[str]
    ) -> list[np.ndarray] | str:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            return self._pool.submit(_forward, proto, weights, x, names).result(timeout=120)
        except BrokenProcessPool:
            self._pool = None
            return "OpenCV crashed on this net"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
