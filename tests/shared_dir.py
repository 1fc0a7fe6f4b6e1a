"""Where the shared material is (../shared: the conformance corpus, the OpenCV/Caffe cases, the
oracle): one rule for every test, the benchmarks and tests/conformance.py.

$PROTOCAFFE_SHARED when set; else the `shared` folder next to the repository, or next to the
folder that holds it (a git worktree such as /work/wt/<branch>). Tests that need it skip when
it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    if os.environ.get("PROTOCAFFE_SHARED"):
        return Path(os.environ["PROTOCAFFE_SHARED"])
    candidates = [REPO.parent / "shared", REPO.parent.parent / "shared"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


SHARED = shared_dir()
CORPUS = SHARED / "corpus"
