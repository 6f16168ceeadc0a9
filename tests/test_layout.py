"""The layout's rules: the simulator is a peer of the exporter, loaded only when it runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_simulator_imports_nothing_from_the_exporter() -> None:
    offenders = []
    for path in sorted((REPO / "vms_simulator").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "exporter"]
    assert not offenders


def test_the_exporter_does_not_load_the_simulator_to_run() -> None:
    code = "import sys, exporter.cli; sys.exit('vms_simulator' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
