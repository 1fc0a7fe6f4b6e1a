"""The README's "Fine-tune a converted net", taken from the README itself and run: its two
commands, then its Python, in a fresh folder beside a link to examples/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Fine-tune a converted net"


def readme_example() -> tuple[list[str], str]:
    """The section's indented command lines and its Python code block."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    commands = re.findall(r"(?m)^    (protocaffe .+)$", section)
    code = section[section.index("```python\n") + len("```python\n") :]
    return commands, code[: code.index("```\n")]


def test_readme_finetune_example_runs(tmp_path: Path) -> None:
    commands, code = readme_example()
    assert [c.split()[1] for c in commands] == ["convert", "solver"]
    (tmp_path / "examples").symlink_to(REPO / "examples")
    for command in commands:
        words = command.split()
        done = subprocess.run(
            [sys.executable, "-m", "protocaffe", *words[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    (tmp_path / "finetune.py").write_text(code)
    done = subprocess.run(
        [sys.executable, "finetune.py"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 20 and lines[0].startswith("iteration 0: loss ")
    # The step policy (stepsize 10, gamma 0.1) as the generated scheduler applied it.
    assert lines[8].endswith("lr 0.01") and lines[9].endswith("lr 0.001")

    before = load_file(str(tmp_path / "finetune" / "model.safetensors"))
    after = torch.load(tmp_path / "finetune" / "finetuned.pt", weights_only=True)
    # Trained: the weights moved; BatchNorm accumulated one batch per iteration with Caffe's
    # rule (factor = 0.999 * factor + 1, twenty times from tinynet's caffemodel's factor).
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    factor = before["conv1_bn.factor"].double()
    for _ in range(20):
        factor = 0.999 * factor + 1
    torch.testing.assert_close(after["conv1_bn.factor"].double(), factor, rtol=1e-6, atol=0)
    assert not torch.equal(before["conv1_bn.running_mean"], after["conv1_bn.running_mean"])
