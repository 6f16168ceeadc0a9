"""The fault switches in force, and the dice that decide which request they hit."""

from __future__ import annotations

import dataclasses
import random

from vms_simulator.config import Faults


class FaultState:
    def __init__(self, initial: Faults, seed: int) -> None:
        self.current = initial
        self._rng = random.Random(seed)

    def hits(self, rate: float) -> bool:
        """Whether this request is one of the ``rate`` share that get the fault."""
        return rate > 0 and self._rng.random() < rate

    def jitter(self) -> float:
        """Extra seconds for one list request: uniform in [0, ``jitter``]."""
        return self._rng.uniform(0, self.current.jitter) if self.current.jitter else 0.0

    def cut_point(self, length: int) -> int:
        """Where to cut a body of ``length`` bytes: somewhere in its middle half."""
        return self._rng.randint(length // 4, max(length // 4, 3 * length // 4))

    def merged(self, changes: object) -> Faults:
        """The switches with ``changes`` (a JSON object) applied; ValueError if invalid."""
        if not isinstance(changes, dict):
            raise ValueError("expected a JSON object of fault fields")
        unknown = sorted(set(changes) - set(Faults.field_names()))
        if unknown:
            raise ValueError(
                f"unknown fault field(s) {', '.join(unknown)}; "
                f"known: {', '.join(Faults.field_names())}"
            )
        values = dict(changes)
        # JSON has one number type: 0 or 1 are fine for a float field.
        for name in (
            "latency",
            "jitter",
            "error_rate",
            "rate_limit_rate",
            "truncate_rate",
            "odd_items_rate",
        ):
            if type(values.get(name)) is int:
                values[name] = float(values[name])
        return dataclasses.replace(self.current, **values)
