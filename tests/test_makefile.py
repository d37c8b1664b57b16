"""The Makefile keeps its pins: `.venv/.pins` records the TORCH a venv was built with, and
another TORCH rebuilds it. Run for real with make, in a copy, with a stand-in for python3
whose "venv" holds a pip that only logs what it is asked to install (nothing is
downloaded)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU = "torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu"
FAKE_PYTHON = """#!/bin/sh
# stands in for python3: "-m venv DIR" makes DIR/bin/pip, which logs its arguments
mkdir -p "$3/bin"
printf '#!/bin/sh\\necho "$*" >> %s/pip.log\\n' "$PWD" > "$3/bin/pip"
chmod +x "$3/bin/pip"
"""


@pytest.fixture
def make(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("no make here")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)

    # As a user's shell runs it: under `make test` the outer make's MAKELEVEL and MAKEFLAGS
    # would make this one print "Entering directory" lines (CI runs the tests that way).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}

    def run(*args: str) -> tuple[str, list[str]]:
        done = subprocess.run(["make", "install", f"PYTHON={fake}", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, check=True)  # fmt: skip
        log = tmp_path / "pip.log"
        installed = log.read_text().splitlines() if log.is_file() else []
        log.unlink(missing_ok=True)
        return done.stdout, [line for line in installed if "torch" in line]

    return run, tmp_path


def test_a_venv_is_built_once_and_again_when_torch_changes(make):
    run, folder = make
    _, torch = run()
    assert torch == ["install -q torch==2.14.1 torchvision==0.29.1"]
    assert (folder / ".venv" / ".pins").read_text().strip() == "torch==2.14.1 torchvision==0.29.1"
    assert run() == ("", [])  # the same pins: nothing to do
    said, torch = run(f"TORCH={CPU}")
    assert f'.venv was built with "torch==2.14.1 torchvision==0.29.1", not "{CPU}"' in said
    assert torch == [f"install -q {CPU}"]
    assert run(f"TORCH={CPU}") == ("", [])


def test_a_venv_made_before_the_pins_were_recorded_is_kept(make):
    run, folder = make
    run()
    (folder / ".venv" / ".pins").unlink()  # as the Makefile before .pins left it
    assert run() == ("", [])
    assert (folder / ".venv" / ".pins").is_file()
