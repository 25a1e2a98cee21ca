"""The layer contracts in setup.cfg ([importlinter]) hold, and they catch what they are for.

``lint-imports`` builds the import graph of the four packages (function-level imports included)
and checks: reports over analysis over ablations over faap (only faap.cli composes them all),
faap.data free of the detector and training, and no import cycles between sibling modules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("faap", "ablations", "analysis", "reports")
LINT = str(Path(sys.executable).with_name("lint-imports"))


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the tree under test, before the installed one
    return subprocess.run([LINT, str(root / "setup.cfg"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages and setup.cfg, to plant imports in."""
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "assets"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    return tmp_path


def _plant(tree: Path, module: str, line: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {line}\n")


@pytest.mark.parametrize("module, line, broken, names", [
    ("faap.variants.infonce", "from reports import figures", "faap is not allowed to import reports",
     "faap.variants.infonce -> reports.figures"),
    ("faap.trainer", "import analysis.bootstrap", "faap is not allowed to import analysis",
     "faap.trainer -> analysis.bootstrap"),
    ("ablations.runner", "from reports.build import build", "ablations is not allowed to import reports",
     "ablations.runner -> reports.build"),
    ("analysis.study", "import reports.build", "analysis is not allowed to import reports",
     "analysis.study -> reports.build"),
    ("faap.data.synth", "from faap.detector import load_detector", "faap.data is not allowed to import faap.detector",
     "faap.data.synth -> faap.detector"),
    ("faap.losses", "import faap.trainer", "No cycles are allowed in faap.", ".losses -> .trainer"),
])
def test_planted_import_breaks_a_contract(tree, module, line, broken, names):
    assert _lint(tree).returncode == 0  # the copy holds before the plant
    _plant(tree, module, line)  # inside a function: it counts all the same
    result = _lint(tree)
    assert result.returncode != 0
    assert broken in result.stdout and names in result.stdout, result.stdout
