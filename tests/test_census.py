"""The census of public Caffe nets (tests/census.py says where it lives and its format).

Every net without a Python layer must do what tests/census_expectations.tsv says: convert
(under the dialect named there, if any) unless it is listed as failing, and a listed failure
that converts now is stale. Skipped when the census folder is absent (it is fetched material,
not part of the repository). PROTOCAFFE_SLOW=2 converts every net; otherwise a seeded sample
of 30 plus the nets that need a dialect.
"""

from __future__ import annotations

import os
import random

import pytest
from census import census_dir, convert_net, file_digest, read_expectations, read_manifest

FOLDER = census_dir()
pytestmark = pytest.mark.skipif(
    FOLDER is None, reason="no census (set PROTOCAFFE_CENSUS or create ../shared/census)"
)
NETS = {net.id: net for net in read_manifest(FOLDER)} if FOLDER is not None else {}
EXPECTED = read_expectations()
SAMPLE = 30


def _chosen() -> list[str]:
    plain = sorted(i for i, net in NETS.items() if not net.python_layer)
    if os.environ.get("PROTOCAFFE_SLOW") == "2":
        return plain
    sample = set(random.Random(15).sample(plain, min(SAMPLE, len(plain))))
    sample |= {i for i, e in EXPECTED.items() if e.dialects and i in NETS}
    return sorted(sample)


def test_manifest_names_the_files_as_fetched() -> None:
    assert NETS
    for net in NETS.values():
        assert net.repository.count("/") == 1 and len(net.commit) == 40, net.id
        assert net.licence, net.id
        assert file_digest(net.file) == net.sha256, f"{net.id}: {net.file} changed"
    assert set(EXPECTED) <= set(NETS), set(EXPECTED) - set(NETS)


@pytest.mark.parametrize("net_id", _chosen())
def test_census_net(net_id: str) -> None:
    net = NETS[net_id]
    expected = EXPECTED.get(net_id)
    outcome = convert_net(net, expected.dialects if expected else ())
    if expected is None or expected.converts:
        assert outcome.converts, f"{net_id} ({net.repository}/{net.path}): {outcome.error}"
    else:
        assert not outcome.converts, f"{net_id} converts now: drop it from census_expectations"


@pytest.mark.skipif("hed-deploy" not in NETS, reason="the census has no HED deploy net")
def test_hed_deploy_takes_the_forks_offsets() -> None:
    """s9xie/hed's CropLayer::LayerSetUp gives its five crops 34, 35, 36, 38 and 42."""
    from protocaffe.api import compile

    graph = compile(NETS["hed-deploy"].file, dialects=["hed-crop"])
    offsets = [tuple(node.attrs.offsets) for node in graph.nodes if node.op == "Crop"]
    assert offsets == [(34, 34), (35, 35), (36, 36), (38, 38), (42, 42)]
