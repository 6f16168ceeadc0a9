"""The simulated downloads: a seeded population, and new ones arriving as the clock moves.

Each download has its whole future drawn at birth (when it finishes, how, when its
file disappears), so its state at any instant is a pure function of the clock:
nothing ticks in the background, and reading one item costs the same at 100 items
as at 100,000. Items live in parallel typed arrays in id order; ids grow with
``created_at``, so newest-first is simply reverse index order and a creation-time
window is two binary searches.
"""

from __future__ import annotations

import math
import random
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import NamedTuple

from vms_simulator.config import SimulatorConfig

IN_PROGRESS = "in progress"
COMPLETED = "completed"
FAILED = "failed"

_NEVER = -1
_NEVER_FINISH_SHARE = 0.25  # of the stuck exports
_STUCK_TIME = (3600.0, 30 * 3600.0)
_VANISH_DELAY = (60.0, 2 * 86400.0)  # after completion, log-uniform
_FAILED_WITHOUT_FILE_SHARE = 0.5
_FAST_FAIL_TIME = (3.0, 20.0)
_VIDEO_LENGTH = (30.0, 3600.0)
_VIDEO_AGE = (10.0, 3 * 86400.0)  # from the end of the video to the export request
_LOW_STREAM_SHARE = 0.4
_ID_GAP_SHARE = 0.03  # rows deleted long ago leave holes in the ids

_CITIES = ("г. Москва", "г. Тверь", "г. Казань", "г. Пермь", "г. Самара", "г. Город")
_STREETS = (
    "ул. Ленина",
    "ул. Садовая",
    "пр-т Мира",
    "ул. Школьная",
    "пер. Почтовый",
    "ул. Гагарина",
    "наб. Речная",
    "ул. Улица",
)


@dataclass(frozen=True, slots=True)
class Camera:
    id: int
    address: str
    has_sound: bool


@dataclass(frozen=True, slots=True)
class User:
    id: int
    login: str
    name: str
    parent_id: int
    created_at: int
    updated_at: int


class Item(NamedTuple):
    """One download as of a given instant."""

    id: int
    created: int
    updated: int
    status: str
    file_exists: bool
    camera: int
    """Index into ``Dataset.cameras``."""
    low_stream: bool
    user: int
    """Index into ``Dataset.users``."""
    video_from: int
    video_to: int


def _log_uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _make_cameras(rng: random.Random, count: int) -> tuple[Camera, ...]:
    return tuple(
        Camera(
            id=number,
            address=f"{rng.choice(_CITIES)}, {rng.choice(_STREETS)} {rng.randint(1, 120)}",
            has_sound=rng.random() < 0.3,
        )
        for number in range(1, count + 1)
    )


def _make_operators(start: float) -> tuple[User, ...]:
    joined = int(start) - 90 * 86400
    return tuple(
        User(
            id=10 + n,
            login=f"operator{n}@example.com",
            name=f"operator{n}",
            parent_id=3,
            created_at=joined + n * 3600,
            updated_at=joined + n * 7200,
        )
        for n in range(1, 5)
    )


class Dataset:
    """All downloads ever created, up to the last instant passed to ``advance``."""

    def __init__(self, config: SimulatorConfig, start: float) -> None:
        self._config = config
        self._rng = random.Random(config.seed)
        self.cameras = _make_cameras(self._rng, config.cameras)
        self.users = _make_operators(start)
        self._fail_new = config.faults.fail_new_exports
        self._last_id = 0
        self._ids = array("q")
        self._created = array("q")
        self._done_after = array("i")  # seconds from creation to the final status, or _NEVER
        self._failed = bytearray()
        self._gone_after = array("i")  # seconds from the final status to file removal, or _NEVER
        self._camera = array("H")
        self._low = bytearray()
        self._user = bytearray()
        self._video_age = array("i")
        self._video_length = array("i")

        origin = start - config.history
        for offset in sorted(self._rng.random() for _ in range(config.downloads)):
            self._add(int(origin + offset * config.history), fail_fast=False)
        self._arrival_rate = 1 / config.arrival_interval if config.arrival_interval else 0.0
        self._next_arrival = start + self._wait() if self._arrival_rate else math.inf

    def __len__(self) -> int:
        return len(self._ids)

    def _wait(self) -> float:
        return self._rng.expovariate(self._arrival_rate)

    def _add(self, created: int, fail_fast: bool) -> None:
        rng = self._rng
        config = self._config
        self._last_id += 1 + (rng.randint(1, 3) if rng.random() < _ID_GAP_SHARE else 0)
        if fail_fast:
            done = _log_uniform(rng, _FAST_FAIL_TIME)
            failed = True
        else:
            failed = rng.random() < config.fail_ratio
            if rng.random() >= config.stuck_ratio:
                done = _log_uniform(rng, config.export_time)
            elif rng.random() < _NEVER_FINISH_SHARE:
                done = _NEVER
            else:
                done = rng.uniform(*_STUCK_TIME)
        if failed:
            gone = 0 if rng.random() < _FAILED_WITHOUT_FILE_SHARE else _NEVER
        elif rng.random() < config.vanish_ratio:
            gone = round(_log_uniform(rng, _VANISH_DELAY))
        else:
            gone = _NEVER
        length = round(_log_uniform(rng, _VIDEO_LENGTH))
        self._ids.append(self._last_id)
        self._created.append(created)
        self._done_after.append(max(1, round(done)) if done != _NEVER else _NEVER)
        self._failed.append(failed)
        self._gone_after.append(gone)
        self._camera.append(int(len(self.cameras) * rng.random() ** 2))
        self._low.append(rng.random() < _LOW_STREAM_SHARE)
        self._user.append(rng.randrange(len(self.users)))
        self._video_age.append(length + round(_log_uniform(rng, _VIDEO_AGE)))
        self._video_length.append(length)

    def advance(self, now: float) -> None:
        """Create the downloads that arrived up to ``now``."""
        while self._next_arrival <= now:
            self._add(int(self._next_arrival), fail_fast=self._fail_new)
            self._next_arrival += self._wait()

    def arrive(self, count: int, now: float) -> None:
        """Create ``count`` downloads at ``now`` (the ``arrivals_between_pages`` fault)."""
        self.advance(now)
        for _ in range(count):
            self._add(int(now), fail_fast=self._fail_new)

    def set_fail_new(self, on: bool, now: float) -> None:
        """From ``now`` on, new downloads fail within seconds (or behave normally again)."""
        self.advance(now)
        self._fail_new = on

    def window(self, start: float, end: float) -> range:
        """Indices of the downloads created within [start, end], oldest first."""
        low = bisect_left(self._created, math.ceil(start))
        return range(low, max(low, bisect_right(self._created, math.floor(end))))

    def item(self, index: int, now: float) -> Item:
        created = self._created[index]
        done_after = self._done_after[index]
        status = IN_PROGRESS
        updated = created
        file_exists = True
        if done_after != _NEVER and created + done_after <= now:
            updated = created + done_after
            status = FAILED if self._failed[index] else COMPLETED
            gone_after = self._gone_after[index]
            if gone_after != _NEVER and updated + gone_after <= now:
                updated += gone_after
                file_exists = False
        video_from = created - self._video_age[index]
        return Item(
            id=self._ids[index],
            created=created,
            updated=updated,
            status=status,
            file_exists=file_exists,
            camera=self._camera[index],
            low_stream=bool(self._low[index]),
            user=self._user[index],
            video_from=video_from,
            video_to=video_from + self._video_length[index],
        )
