"""The incremental-polling benchmark as a smoke test: small N, correctness only, never timings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "incremental_bench.py"


def test_benchmark_runs_and_finds_both_modes_equal_at_a_small_n() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--downloads",
            "2000",
            "--minutes",
            "20",
            "--stuck-ratio",
            "0.002",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "correctness: events and re-scan gauges equal to full polls" in done.stdout
    assert "incremental: incremental" in done.stdout
