"""The real-Caffe reference: pycaffe in this process when `import caffe` works, otherwise the
oracle wrapper `/opt/caffe-oracle/run-oracle.sh` (see ../shared/oracle/README.md), which runs
Caffe in its own Python.

Both run the net one layer at a time (`net._forward(i, i)`) and take each layer's tops right
after it ran, so in-place layers give one snapshot per step, as the SSA values in the IR do.
The oracle writes each snapshot to a file as soon as the layer ran; they are read (and
deleted) while it goes on, so the comparison follows Caffe layer by layer.

Before running, `prepare` checks what makes Caffe refuse a net for certain: a layer type this
build lacks (named with its line) and a caffemodel larger than protobuf's 512 MiB read limit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protocaffe.frontend.prototxt import LayerDef, NetDef
from protocaffe.verify.backend import (
    ReferenceUnavailable,
    RefStep,
    file_size,
    layer_at_line,
    match_layer_list,
)
from protocaffe.verify.opencv import LayerQuery

ORACLE = Path(os.environ.get("PROTOCAFFE_CAFFE_ORACLE", "/opt/caffe-oracle/run-oracle.sh"))
INSTALL_HINT = (
    "build pycaffe (or the oracle: ../shared/oracle/build.sh) so that `import caffe` works"
)
# Caffe reads a binary proto with protobuf's default total-bytes limit (ReadProtoFromBinaryFile
# raises it to INT_MAX only with a newer protobuf API than this build uses): 512 MiB.
CAFFEMODEL_LIMIT = 512 * 2**20

_known_types: frozenset[str] | None = None


def _same_name_other_layer(layer: LayerDef) -> str | None:
    """Why this build's layer of the same type name computes something else, if it does. The
    oracle's `Upsample` is darknet's (nearest neighbour by `scale`, one bottom): SegNet's
    max-unpooling (a mask as second bottom) shares the name only."""
    if layer.type == "Upsample" and len(layer.bottoms) > 1:
        return (
            "this Caffe build's Upsample is darknet's (nearest neighbour, one bottom), not "
            "SegNet's max-unpooling with a mask"
        )
    return None


def _import_caffe() -> Any:
    try:
        import caffe  # type: ignore[import-not-found]
    except ImportError:
        return None
    return caffe


def available() -> bool:
    return _import_caffe() is not None or ORACLE.exists()


def _oracle_env(verbose: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env["GLOG_minloglevel"] = "0" if verbose else "2"
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def known_types() -> frozenset[str]:
    """The layer types this Caffe build registers (asked once per process)."""
    global _known_types
    if _known_types is None:
        caffe = _import_caffe()
        if caffe is not None:
            _known_types = frozenset(caffe.layer_type_list())
        else:
            done = subprocess.run(
                [str(ORACLE), "layers"],
                capture_output=True,
                text=True,
                check=False,
                env=_oracle_env(),
            )
            if done.returncode != 0:
                raise ReferenceUnavailable(
                    f"the Caffe oracle does not start: {_caffe_failure(done.stderr)}",
                    reference="caffe",
                )
            _known_types = frozenset(done.stdout.split())
    return _known_types


def _caffe_failure(stderr: str) -> str:
    """The line that says why Caffe stopped: glog's fatal 'F...] Check failed' line, protobuf's
    parse error, else the last line that is not part of a stack trace or a log line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    fatal = [line for line in lines if re.match(r"F\d{4} ", line) and "] " in line]
    if fatal:
        return fatal[0].split("] ", 1)[-1]
    parse = [line for line in lines if "Error parsing text-format" in line]
    if parse:
        return parse[0].split("] ", 1)[-1]
    plain = [
        line
        for line in lines
        if not line.startswith(("***", "@", "Traceback", "File"))
        and not re.match(r"[IWE]\d{4} ", line)
    ]
    return plain[-1] if plain else "Caffe stopped"


class CaffeReference:
    """Real Caffe: pycaffe in this process, else the oracle wrapper in its own process."""

    name = "caffe"

    def __init__(
        self,
        net: NetDef,
        prototxt: str | os.PathLike[str],
        caffemodel: str | os.PathLike[str] | None,
        level: int = 0,
        stages: tuple[str, ...] = (),
    ) -> None:
        self.net = net
        self.prototxt = str(prototxt)
        self.caffemodel = str(caffemodel) if caffemodel is not None else None
        # The net state's level (caffe.Net's argument) and the stages Caffe gets in the file's
        # own state {} (which it adds to its argument's: one way for pycaffe and the oracle).
        self.level = level
        self.stages = stages
        # How to name the caffemodel in messages ("the random weights" for verify's own).
        self.weights_label: str | None = None
        self._version = "real Caffe"
        self._work: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def version(self) -> str:
        return self._version

    def prepare(self) -> None:
        caffe = _import_caffe()
        if caffe is None and not ORACLE.exists():
            raise ReferenceUnavailable(
                f"the Caffe reference is not available: {INSTALL_HINT}", reference=self.name
            )
        self._version = (
            f"Caffe {getattr(caffe, '__version__', '?')} (pycaffe)"
            if caffe is not None
            else f"Caffe (oracle {ORACLE})"
        )
        if self.level and caffe is None:
            raise ReferenceUnavailable(
                "the oracle wrapper builds every net at level 0 (it takes no --level)",
                reference=self.name,
            )
        known = known_types()
        for layer in self.net.layers:
            if layer.type not in known:
                raise ReferenceUnavailable.at_layer(
                    layer,
                    f"this Caffe build has no layer type {layer.type!r}",
                    self.name,
                )
            other = _same_name_other_layer(layer) if caffe is None else None
            if other is not None:
                raise ReferenceUnavailable.at_layer(layer, other, self.name)
        size = file_size(self.caffemodel)
        if size > CAFFEMODEL_LIMIT:
            what = self.weights_label or self.caffemodel
            raise ReferenceUnavailable(
                f"{what} is {size / 2**20:.0f} MiB; Caffe reads at most "
                f"{CAFFEMODEL_LIMIT // 2**20} MiB of caffemodel (protobuf's limit on a binary "
                "message)",
                reference=self.name,
            )

    def run(self, inputs: Mapping[str, np.ndarray]) -> Iterator[RefStep]:
        # MemoryData aborts without a Reset and DummyData fills its own tops: Caffe runs the
        # net with those layers made Input layers of the same names and shapes.
        original = self.prototxt
        rewritten = net_for_caffe(Path(original).read_text(errors="replace"), inputs, self.stages)
        work = Path(tempfile.mkdtemp(prefix="protocaffe-net-")) if rewritten else None
        try:
            if work is not None and rewritten is not None:
                self.prototxt = str(work / "net.prototxt")
                Path(self.prototxt).write_text(rewritten)
            caffe = _import_caffe()
            if caffe is not None:
                yield from self._in_process(caffe, inputs)
            else:
                yield from self._via_oracle(inputs)
        finally:
            self.prototxt = original
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)

    def _in_process(self, caffe: Any, inputs: Mapping[str, np.ndarray]) -> Iterator[RefStep]:
        caffe.set_mode_cpu()
        if self.caffemodel:
            net = caffe.Net(self.prototxt, caffe.TEST, level=self.level, weights=self.caffemodel)
        else:
            net = caffe.Net(self.prototxt, caffe.TEST, level=self.level)
        for name, array in inputs.items():
            net.blobs[name].reshape(*array.shape)
        net.reshape()
        for name, array in inputs.items():
            net.blobs[name].data[...] = array
        names = list(net._layer_names)
        positions = match_layer_list(self.net, names)
        blob_names = list(net._blob_names)
        for index in range(len(names)):
            net._forward(index, index)
            if index in positions:
                # By the layer's index: pycaffe's top_names is keyed by layer name, which
                # layers may share.
                tops = {
                    j: np.array(net.blobs[blob_names[i]].data, dtype=np.float32, copy=True)
                    for j, i in enumerate(net._top_ids(index))
                }
                yield RefStep(positions[index], tops)

    def _layer_list(self) -> list[dict[str, Any]]:
        done = subprocess.run(
            [str(ORACLE), "info", self.prototxt],
            capture_output=True,
            text=True,
            check=False,
            env=_oracle_env(verbose=True),
        )
        if done.returncode != 0:
            raise self._failure(done.stderr)
        layers: list[dict[str, Any]] = json.loads(done.stdout)["layers"]
        return layers

    def _failure(self, stderr: str, layer_index: int | None = None) -> ReferenceUnavailable:
        """Caffe's reason, at the layer it stopped at: a protobuf parse error names a line, a
        CHECK failure comes after the 'Creating Layer' log line of the layer being set up."""
        reason = "Caffe cannot run the net: " + _caffe_failure(stderr)
        layer = None
        parse = re.search(r"Error parsing text-format [\w.]+: (\d+):\d+", stderr)
        if parse:
            layer = layer_at_line(self.net, int(parse.group(1)))
        elif layer_index is not None:
            layer = self.net.layers[layer_index]
        else:
            created = re.findall(r"Creating Layer (.+)$", stderr, flags=re.MULTILINE)
            if created:
                name = created[-1].strip()
                layer = next((x for x in self.net.layers if x.name == name), None)
        if layer is not None:
            return ReferenceUnavailable.at_layer(layer, reason, self.name)
        return ReferenceUnavailable(reason, reference=self.name)

    def _via_oracle(self, inputs: Mapping[str, np.ndarray]) -> Iterator[RefStep]:
        layers = self._layer_list()
        positions = match_layer_list(self.net, [layer["name"] for layer in layers])
        # The oracle finds a layer's tops by its name (pycaffe's top_names), so for layers
        # that share a name it saves another layer's tops: those are not used.
        counts = Counter(layer.name for layer in self.net.layers)
        positions = {
            index: position
            for index, position in positions.items()
            if counts[self.net.layers[position].name] == 1
        }
        work = Path(tempfile.mkdtemp(prefix="protocaffe-caffe-"))
        self._work = work
        out = work / "out"
        command = [str(ORACLE), "run", self.prototxt, "--per-layer", "--out", str(out)]
        if self.caffemodel:
            command += ["--weights", self.caffemodel]
        for index, (name, array) in enumerate(inputs.items()):
            path = work / f"input{index}.npy"
            np.save(path, array)
            command += ["--input", f"{name}={path}"]
        log = work / "stderr.txt"
        with open(log, "wb") as err:
            self._process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=err, env=_oracle_env(verbose=True)
            )
        expected = _per_layer_files(layers)
        process = self._process
        try:
            for k, (caffe_index, top, filename) in enumerate(expected):
                path = out / "layers" / filename
                following = out / "layers" / expected[k + 1][2] if k + 1 < len(expected) else None
                while (following is None or not following.exists()) and process.poll() is None:
                    time.sleep(0.002)
                if process.poll() not in (None, 0):
                    position = positions.get(caffe_index)
                    at = position if not path.exists() else None
                    raise self._failure(log.read_text(errors="replace"), at)
                if not path.exists():
                    break  # the names were not as expected: read the manifest below
                array = np.load(path)
                path.unlink()
                if caffe_index in positions:
                    yield RefStep(positions[caffe_index], {top: array})
                del array
            else:
                process.wait()
                self._read_version(out)
                return
            process.wait()
            if process.returncode != 0:
                raise self._failure(log.read_text(errors="replace"))
            yield from self._from_manifest(out, positions, done=k)
        finally:
            self.close()

    def _read_version(self, out: Path) -> None:
        try:
            manifest = json.loads((out / "manifest.json").read_text())
        except (OSError, ValueError):
            return
        if manifest.get("caffe_version"):
            self._version = f"Caffe {manifest['caffe_version']} (oracle {ORACLE})"

    def _from_manifest(
        self, out: Path, positions: Mapping[int, int], done: int
    ) -> Iterator[RefStep]:
        manifest = json.loads((out / "manifest.json").read_text())
        self._read_version(out)
        index_of = {layer["name"]: layer["index"] for layer in manifest["layers"]}
        tops_seen: dict[int, int] = {}
        for k, entry in enumerate(manifest["per_layer"]):
            caffe_index = index_of[entry["layer"]]
            top = tops_seen.get(caffe_index, 0)
            tops_seen[caffe_index] = top + 1
            if k < done or caffe_index not in positions:
                continue
            yield RefStep(positions[caffe_index], {top: np.load(out / entry["file"])})

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None


def _sanitize(name: str) -> str:
    """How the oracle names a blob's file (oracle.py, sanitize)."""
    text = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return text or "_"


def _per_layer_files(layers: Sequence[Mapping[str, Any]]) -> list[tuple[int, int, str]]:
    """(Caffe layer index, top position, file name) of each snapshot the oracle writes with
    --per-layer, in the order it writes them (oracle.py, cmd_run and UniqueNamer)."""
    used: set[str] = set()
    files: list[tuple[int, int, str]] = []
    for layer in layers:
        for top, blob in enumerate(layer["tops"]):
            base = _sanitize(f"{layer['index']:04d}_{layer['name']}__{blob}")
            name, suffix = base, 1
            while name.lower() in used:
                name = f"{base}__{suffix}"
                suffix += 1
            used.add(name.lower())
            files.append((int(layer["index"]), top, name + ".npy"))
    return files


# Data layers whose tops protocaffe makes the module's inputs (see layers/sources.py).
INPUT_DATA_LAYERS = ("MemoryData", "DummyData")


def net_for_caffe(
    text: str, inputs: Mapping[str, np.ndarray], stages: Sequence[str] = ()
) -> str | None:
    """The net for Caffe, from one parse of the file's text, or None when the file serves as
    it is (or is not a net this schema parses, and has no stages to add).

    MemoryData aborts without a Reset (set_input_arrays) and DummyData fills its tops itself:
    each such layer that provides an input becomes an Input layer of the same name with the
    tops the module takes as inputs (so per-layer results line up). `stages` go into the
    file's own state {}: Caffe's Net constructor adds the stages it is given to those
    (net.cpp), so the file, built at the TEST phase, is the net of those stages wherever it
    runs (pycaffe or the oracle wrapper)."""
    from google.protobuf import text_format

    from protocaffe.proto.schema import message_class

    net: Any = message_class("NetParameter")()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as exc:
        if stages:
            raise ReferenceUnavailable(
                f"cannot add the stages to the net for Caffe: {exc}", reference="caffe"
            ) from None
        return None
    net.state.stage.extend(stages)
    replaced = False
    for layer in net.layer:
        tops = [top for top in layer.top if top in inputs]
        if layer.type not in INPUT_DATA_LAYERS or not tops:
            continue
        name, include = layer.name, list(layer.include)
        layer.Clear()
        layer.name, layer.type = name, "Input"
        layer.include.extend(include)
        for top in tops:
            layer.top.append(top)
            layer.input_param.shape.add().dim.extend(inputs[top].shape)
        replaced = True
    return str(text_format.MessageToString(net)) if replaced or stages else None


def run_caffe(
    prototxt: str | os.PathLike[str],
    caffemodel: str | os.PathLike[str] | None,
    inputs: Mapping[str, np.ndarray],
    layers: Sequence[LayerQuery],
) -> dict[tuple[str, int], np.ndarray]:
    """{(layer name, top index): the top right after the layer ran}, for every layer."""
    from protocaffe.errors import Reporter
    from protocaffe.frontend.prototxt import read_prototxt

    net = read_prototxt(prototxt, Reporter())
    reference = CaffeReference(net, prototxt, caffemodel)
    reference.prepare()
    found: dict[tuple[str, int], np.ndarray] = {}
    for step in reference.run(inputs):
        for top, array in step.tops.items():
            found[(net.layers[step.layer].name, top)] = np.array(array, dtype=np.float32)
    return found
