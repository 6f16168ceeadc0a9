"""Mutation check of the alert rules: small wrong versions of each rule that the
promtool tests of tests/rules/ must reject.

A mutant changes one thing in one alert: a threshold or constant (doubled,
halved, 0 → 1), a range (doubled, halved; not the lost-scrape window inside
last_over_time, a setting), a clause dropped (`and`/`unless`), `for:` or
`keep_firing_for:` dropped, replicas summed instead of max-ed, gauges read
instantly instead of with last_over_time. For each mutant, the rule file
holds only that alert, the tests only the cases about it; mutants run two at
a time.
"""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.promql_names import ALERTS_PATH, RULE_TESTS_DIR

_NUMBER = re.compile(r"(?<![\w.\[$])(\d+(?:\.\d+)?)(?![\w.\]])")
_RANGE = re.compile(r"(\b\w+(?:\{[^}]*\})?)\[(\d+)([smhd])\]")
_INSTANT = re.compile(r"last_over_time\((\w+(?:\{[^}]*\})?)\[[^\]]+\]\)")


@dataclass(frozen=True)
class Mutant:
    alert: str
    change: str
    rule: dict[str, Any]


def _clauses(expr: str) -> list[tuple[int, int]]:
    """(start, end) of each `and`/`unless` clause, at any depth of parentheses:
    from the operator to the next one at the same depth or the closing paren."""
    out: list[tuple[int, int]] = []
    open_at: list[int | None] = [None]  # per depth: start of the pending clause
    for match in re.finditer(r"[()]|\b(?:and|unless)\b", expr):
        token = match.group(0)
        if token == "(":
            open_at.append(None)
            continue
        pending = open_at.pop() if token == ")" else open_at[-1]
        if pending is not None:
            out.append((pending, match.start()))
        if token != ")":
            open_at[-1] = match.start()
    if open_at and open_at[-1] is not None:
        out.append((open_at[-1], len(expr)))
    return out


def _expr_mutants(expr: str) -> Iterator[tuple[str, str]]:
    seen: dict[str, int] = {}

    def label(what: str) -> str:
        seen[what] = seen.get(what, 0) + 1
        return f"{what} (#{seen[what]})"

    for match in _NUMBER.finditer(expr):
        value = float(match.group(1))
        replacements = ["1"] if value == 0 else [f"{value * 2:g}", f"{value / 2:g}"]
        for new in replacements:
            mutated = expr[: match.start()] + new + expr[match.end() :]
            yield label(f"{match.group(1)} -> {new}"), mutated
    for match in _RANGE.finditer(expr):
        if expr[: match.start()].endswith("last_over_time("):
            continue
        value, unit = int(match.group(2)), match.group(3)
        for size in (value * 2, value // 2):
            if size:
                start = match.start(2) - 1
                mutated = f"{expr[:start]}[{size}{unit}]{expr[match.end() :]}"
                yield label(f"[{value}{unit}] -> [{size}{unit}]"), mutated
    for start, end in _clauses(expr):
        yield f"drop clause {' '.join(expr[start:end].split())[:50]!r}", expr[:start] + expr[end:]
    if "max by (target" in expr:
        yield "sum instead of max across replicas", expr.replace("max by (target", "sum by (target")
    if _INSTANT.search(expr):
        yield "instant gauges, no last_over_time", _INSTANT.sub(r"\1", expr)


def mutants(path: Path = ALERTS_PATH) -> Iterator[Mutant]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            for change, expr in _expr_mutants(rule["expr"]):
                yield Mutant(rule["alert"], change, {**rule, "expr": expr})
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    yield Mutant(
                        rule["alert"], f"no {key}", {k: v for k, v in rule.items() if k != key}
                    )


@functools.cache
def _cases_for(alert: str, tests_dir: Path) -> dict[str, dict[str, Any]]:
    """Each rule-test file reduced to the cases about ``alert`` (files without any left out)."""
    out = {}
    for path in sorted(tests_dir.glob("*.yml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        tests = []
        for test in document["tests"]:
            cases = [c for c in test.get("alert_rule_test", []) if c["alertname"] == alert]
            if cases:
                tests.append({**test, "alert_rule_test": cases})
        if tests:
            out[path.name] = {**document, "tests": tests}
    return out


def survives(
    mutant_rule: dict[str, Any],
    alert: str,
    workdir: Path,
    promtool: Callable[..., subprocess.CompletedProcess[str]],
    tests_dir: Path = RULE_TESTS_DIR,
) -> bool:
    """True when every promtool test about ``alert`` still passes with ``mutant_rule``."""
    rules = workdir / "prometheus" / "alerts.yml"
    rules.parent.mkdir(parents=True, exist_ok=True)
    rules.write_text(
        yaml.safe_dump({"groups": [{"name": "mutant", "rules": [mutant_rule]}]}), "utf-8"
    )
    files = []
    for name, document in _cases_for(alert, tests_dir).items():
        path = workdir / "tests" / "rules" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        files.append(str(path))
    assert files, f"no rule test about {alert}"
    return promtool("test", "rules", *files).returncode == 0


def survivors(
    promtool: Callable[..., subprocess.CompletedProcess[str]],
    path: Path = ALERTS_PATH,
    tests_dir: Path = RULE_TESTS_DIR,
) -> list[Mutant]:
    """The mutants of ``path`` that no rule test rejects."""

    def run(mutant: Mutant) -> bool:
        with tempfile.TemporaryDirectory(prefix="rule-mutant-") as workdir:
            return survives(mutant.rule, mutant.alert, Path(workdir), promtool, tests_dir)

    candidates = list(mutants(path))
    with ThreadPoolExecutor(max_workers=2) as pool:
        alive = list(pool.map(run, candidates))
    return [m for m, ok in zip(candidates, alive, strict=True) if ok]
