"""The benchmarks as CI smoke tests: at a small N they run and find the exporter correct.

Only correctness is checked (the exporter's counts equal the page server's truth,
exactly one request per page, no events from identical polls); never timings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_poll_benchmark_finds_the_exporter_correct_at_a_small_n() -> None:
    done = run("poll_bench.py", "--downloads", "2000", "--rounds", "1", "--check-only")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "correct: 1 round(s) at N=2000" in done.stdout


def test_the_many_targets_benchmark_finds_every_poll_correct() -> None:
    done = run(
        "many_targets_bench.py",
        *("--targets", "3", "--downloads", "300", "--interval", "2", "--duration", "5"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every poll succeeded within its timeout" in done.stdout


def test_the_exposition_benchmark_finds_our_renderer_identical() -> None:
    done = run("exposition_bench.py", "--targets", "1", "3", "--downloads", "50", "--rounds", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "identical to prometheus-client" in done.stdout


def test_the_decode_benchmark_finds_the_decoder_like_the_reference_parser() -> None:
    done = run("decode_bench.py", "--downloads", "2000", "--runs", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every page decoded like the reference parser" in done.stdout
