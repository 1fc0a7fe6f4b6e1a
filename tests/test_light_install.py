"""`pip install protocaffe` without torch: the codegen commands work, the others say what to
install, and the environment (what a pre-commit hook gets) stays small.

One fresh venv for the module, built from the wheel (`pip wheel . --no-deps`, then `pip install
dist/*.whl`): about 30-40 s, so marked slow; CI runs it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from light_install import LightEnv, make_light_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "examples" / "tinynet"
HOOK_ENV_LIMIT = 150 * 2**20  # issue 16: a hook environment of at most 150 MB
TORCH_MISSING = "needs PyTorch, which is not installed: pip install 'protocaffe[torch]'"


@pytest.fixture(scope="module")
def light(tmp_path_factory: pytest.TempPathFactory) -> LightEnv:
    return make_light_env(tmp_path_factory.mktemp("light"))


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "caffe").mkdir()
    for name in ("deploy.prototxt", "tinynet.caffemodel"):
        shutil.copy(TINY / name, tmp_path / "caffe" / name)
    return tmp_path


def run(light: LightEnv, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(light.protocaffe), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_light_install_has_no_torch_and_is_small(light: LightEnv) -> None:
    found = subprocess.run(
        [str(light.python), "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.strip() == "None"
    assert light.size_bytes() <= HOOK_ENV_LIMIT, f"{light.size_bytes() / 2**20:.0f} MB"


@pytest.mark.parametrize("weights", [False, True], ids=["model.py", "with-weights"])
def test_convert_and_check_run_without_torch(light: LightEnv, project: Path, weights: bool) -> None:
    inputs = ["caffe/deploy.prototxt", *(["caffe/tinynet.caffemodel"] if weights else [])]
    args = [*inputs, "-o", "models/tiny"]
    done = run(light, project, "convert", *args)
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in (project / "models" / "tiny").iterdir())
    expected = ["model.manifest.txt", "model.py", "model.safetensors"] if weights else ["model.py"]
    assert files == expected
    assert done.stderr.startswith("models/tiny: wrote model.py")
    assert run(light, project, "convert", *args, "--check").returncode == 0
    model = project / "models" / "tiny" / "model.py"
    model.write_text(model.read_text().replace("kernel_size=3", "kernel_size=5", 1))
    stale = run(light, project, "convert", *args, "--check")
    assert stale.returncode == 1
    assert "+++ models/tiny/model.py (generated)" in stale.stdout


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (
            ["convert", "caffe/deploy.prototxt", "-o", "out", "--format", "pt"],
            "convert --format pt",
        ),
        (["verify", "caffe/deploy.prototxt"], "verify"),
    ],
    ids=["format-pt", "verify"],
)
def test_commands_that_need_torch_say_how_to_install_it(
    light: LightEnv, project: Path, args: list[str], what: str
) -> None:
    done = run(light, project, *args)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"protocaffe {what} {TORCH_MISSING}\n"
    assert not (project / "out").exists()


def test_load_says_how_to_install_torch(light: LightEnv, project: Path) -> None:
    script = (
        "import protocaffe\n"
        "try:\n"
        "    protocaffe.load('caffe/deploy.prototxt')\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc.name, exc)\n"
    )
    done = subprocess.run(
        [str(light.python), "-c", script], cwd=project, capture_output=True, text=True, check=True
    )
    assert done.stdout == f"torch protocaffe.load {TORCH_MISSING}\n"


def test_generate_runs_without_torch(light: LightEnv, project: Path) -> None:
    (project / "protocaffe.toml").write_text(
        "[[tool.protocaffe.nets]]\n"
        'prototxt = "caffe/deploy.prototxt"\n'
        'weights = "caffe/tinynet.caffemodel"\n'
        'out = "models/tiny"\n'
        "optimize = true\n"
    )
    done = run(light, project / "caffe", "generate")
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("models/tiny: wrote model.py, model.manifest.txt")
    assert run(light, project, "generate", "--check").returncode == 0
