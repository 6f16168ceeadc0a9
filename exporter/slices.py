"""Incremental polling: which time slices of the padded window to fetch, and how to merge them.

Pure: no I/O and no clock; the poller passes every time in.

The padded query window is tiled contiguously into slices on a fixed grid of
the server's wall-clock time (the grid never depends on when a poll starts,
so a slice keeps its bounds from poll to poll; only the oldest slice shrinks
and the newest one grows). Adjacent slices share their boundary second, and
the one-day padding stays at the window's outer edge only, so a wrong
``timezone`` shifts items between slices but never loses one; a download on a
boundary comes back from both neighbours and is de-duplicated by id.

Adjacent slices to fetch are asked for in one query (a run), and the
downloads it returns are assigned to its slices by ``created_at`` (each slice
remembers the ids it holds), so a full re-scan costs the pages of the live
part of the window, not a page per slice. A download is only ever assigned to
a slice of the query that returned it; with a wrong ``timezone`` it may sit in
a neighbour of the slice the server files it in, which at worst delays what
happens to it until the next full re-scan.

A cheap poll re-fetches only the slices that can have changed in a way a poll
must see at once:

- slices never fetched with their current bounds (new, or grown);
- *open* slices: ones that ended less than :data:`OPEN_TOLERANCE` before their
  last fetch began, since new downloads may still have arrived in them;
- slices holding a download that is not finished (``in_progress`` or ``other``).

The rest are taken as remembered. A full re-scan, at least every
``poll.full_resync``, re-fetches every slice but the *dead* ones: slices that
had ended more than the padding before they were fetched (their set of
downloads is final even with a wrong zone) and hold nothing within the
lookback any more. What only a full re-scan repairs: changes of finished
downloads (a file removed, a terminal status rewritten), downloads deleted
from a slice no cheap poll looked at, and downloads the server filed in a
slice the exporter took for closed (a VMS clock more than the tolerance
behind the exporter's).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from zoneinfo import ZoneInfo

from exporter.core import STEP, Steps
from exporter.vms.client import QUERY_PADDING, Window, WindowResult
from exporter.vms.models import TERMINAL_STATUSES, Download

SLICE_WIDTH = timedelta(minutes=1)
"""Narrow enough that a lone unfinished download costs one page while a minute holds fewer
than ``per_page`` downloads; adjacent slices go in one query, so narrow ones cost no requests."""
OPEN_TOLERANCE = 300.0
"""Seconds: how far the VMS clock may lag ours before a new download lands in a slice taken as
closed (then only the next full re-scan sees it)."""
FINAL_AFTER = QUERY_PADDING.total_seconds()
"""A slice that ended this long before a fetch can gain no download, even with a wrong zone."""
_GRID_ORIGIN = datetime(2000, 1, 1)


@dataclass(frozen=True, slots=True)
class Slice:
    """One slice of the query window: ``from``/``to`` in the server's zone, inclusive."""

    lower: str
    upper: str
    upper_at: float
    """``upper`` as epoch seconds, read in the configured zone."""

    def window(self, window: Window) -> Window:
        """The query for this slice, keeping the poll's filter on ``created_at``."""
        return Window(self.lower, self.upper, window.keep_from, window.keep_to)


@dataclass(frozen=True, slots=True)
class Fetched:
    """What the last fetch of one slice returned."""

    lower: str
    fetched_at: float
    """Start of the poll that fetched it."""
    ids: tuple[str, ...]
    """Ids it returned that were within the lookback."""
    reported_total: int
    """Its share of the ``meta.total`` of the query that fetched it."""
    final: bool
    """It had ended :data:`FINAL_AFTER` before that fetch: no download can join it any more."""


@dataclass(frozen=True, slots=True)
class SliceMemory:
    """Per target: the remembered slices (keyed by their upper bound) and the last full re-scan."""

    slices: Mapping[str, Fetched]
    timezone: str
    last_full: float


@dataclass(frozen=True, slots=True)
class Plan:
    full: bool
    tiles: list[Slice]
    """The whole window, oldest first."""
    runs: list[tuple[int, int]]
    """Runs of adjacent tiles to fetch this poll (first, last index), one query each."""

    def queries(self) -> list[Slice]:
        """One slice per run: from its first tile's lower bound to its last tile's upper."""
        return [
            Slice(self.tiles[first].lower, self.tiles[last].upper, self.tiles[last].upper_at)
            for first, last in self.runs
        ]


@dataclass(slots=True)
class Merged:
    """A partial fetch merged with what the slices not fetched remember."""

    downloads: list[Download]
    """One per id, within the window: as fetched, or as remembered for slices not fetched."""
    memory: SliceMemory
    reported_total: int
    """Sum of the slices' shares of ``meta.total``: about what the padded query would report."""
    pages: int
    invalid: Counter[str] = field(default_factory=Counter)


def _naive(text: str) -> datetime:
    return datetime.fromisoformat(text)


@lru_cache(maxsize=1 << 16)
def _bound(moment: datetime, timezone: str) -> tuple[str, float]:
    """A cut as query text and as epoch seconds; cached, since polls share almost all cuts."""
    return (
        moment.isoformat(sep=" ", timespec="seconds"),
        moment.replace(tzinfo=ZoneInfo(timezone)).timestamp(),
    )


def tile(
    window: Window, *, started: float, timezone: str, width: timedelta = SLICE_WIDTH
) -> list[Slice]:
    """Slices covering ``[query_from, query_to]`` exactly, cut at multiples of ``width``.

    The grid is in the server's wall-clock time, so the bounds are increasing
    strings even across a DST change (an hour repeated or skipped by the clock
    only makes one slice longer or shorter). The cuts stop at the poll's start:
    the newest slice reaches from the last cut to ``query_to``, so the margin
    ahead of now costs no request of its own.
    """
    start, end = _naive(window.query_from), _naive(window.query_to)
    now = datetime.fromtimestamp(started, ZoneInfo(timezone)).replace(tzinfo=None)
    point = _GRID_ORIGIN + ((start - _GRID_ORIGIN) // width + 1) * width
    bounds = [_bound(start, timezone)]
    while point <= now and point < end:
        bounds.append(_bound(point, timezone))
        point += width
    bounds.append(_bound(end, timezone))
    return [Slice(low, high, high_at) for (low, _), (high, high_at) in pairwise(bounds)]


def _live_ids(fetched: Fetched, records: Mapping[str, Download], keep_from: float) -> list[str]:
    return [
        ident
        for ident in fetched.ids
        if (held := records.get(ident)) is not None and held.created_at >= keep_from
    ]


def plan_steps(
    window: Window,
    *,
    started: float,
    timezone: str,
    memory: SliceMemory | None,
    records: Mapping[str, Download],
    full_resync: float,
    interval: float,
) -> Steps[Plan]:
    """The slices this poll fetches, or all of them in a full re-scan (pausing every
    :data:`~exporter.core.STEP` remembered ids, so that scrapes are served meanwhile).

    Re-scans fall on the last poll of the schedule that keeps them at most
    ``full_resync`` apart (every 10th poll for 10m at 60s; half an interval of
    slack for the jitter of the schedule), so nothing waits longer than that.
    """
    tiles = tile(window, started=started, timezone=timezone)
    period = max(interval, full_resync // interval * interval)
    full = (
        memory is None
        or memory.timezone != timezone
        or started - memory.last_full >= period - interval / 2
    )
    wanted = []
    done = 0
    for piece in tiles:
        held = memory.slices.get(piece.upper) if memory is not None else None
        if held is None or held.lower > piece.lower:
            wanted.append(True)
            continue
        done += len(held.ids)
        if done >= STEP:
            done = 0
            yield
        live = _live_ids(held, records, window.keep_from)
        if held.final and not live:
            wanted.append(False)  # dead: nothing in it can ever be within the lookback again
        else:
            wanted.append(
                full
                or piece.upper_at >= held.fetched_at - OPEN_TOLERANCE
                or any(records[ident].status not in TERMINAL_STATUSES for ident in live)
            )
    runs: list[tuple[int, int]] = []
    for index, fetch in enumerate(wanted):
        if fetch and runs and runs[-1][1] == index - 1:
            runs[-1] = (runs[-1][0], index)
        elif fetch:
            runs.append((index, index))
    return Plan(full, tiles, runs)


def _shares(
    tiles: Sequence[Slice],
    first: int,
    last: int,
    ids: Mapping[int, set[str]],
    result: WindowResult,
    keep_from: float,
) -> dict[int, int]:
    """Each slice's share of one query's ``meta.total``: the downloads assigned to it, and the
    ones outside the lookback (never returned to us) spread evenly over the slices before it."""
    shares = {index: len(ids[index]) for index in range(first, last + 1)}
    rest = max(0, result.reported_total - sum(shares.values()))
    older = [index for index in range(first, last + 1) if tiles[index].upper_at < keep_from]
    older = older or [first]
    each, extra = divmod(rest, len(older))
    for position, index in enumerate(older):
        shares[index] += each + (1 if position < extra else 0)
    return shares


def merge_steps(
    chosen: Plan,
    window: Window,
    *,
    started: float,
    timezone: str,
    memory: SliceMemory | None,
    records: Mapping[str, Download],
    results: Sequence[WindowResult],
) -> Steps[Merged]:
    """Fetched slices as answered, the others as remembered; one result per run of the plan
    (pausing every :data:`~exporter.core.STEP` downloads)."""
    current: dict[str, Download] = {}
    slices: dict[str, Fetched] = {}
    reported = pages = 0
    invalid: Counter[str] = Counter()
    uppers = [piece.upper_at for piece in chosen.tiles]
    done = 0
    fetched_ids: dict[int, set[str]] = {}
    totals: dict[int, int] = {}
    for (first, last), result in zip(chosen.runs, results, strict=True):
        for index in range(first, last + 1):
            fetched_ids[index] = set()
        for number, item in enumerate(result.downloads, 1):
            if number % STEP == 0:
                yield
            other = current.get(item.id)
            if other is None or (item.updated_at or 0.0) >= (other.updated_at or 0.0):
                current[item.id] = item
            index = bisect_left(uppers, item.created_at, first, last)
            fetched_ids[index].add(item.id)
        totals.update(_shares(chosen.tiles, first, last, fetched_ids, result, window.keep_from))
        reported += result.reported_total
        pages += result.pages
        invalid.update(result.invalid)
    for index, piece in enumerate(chosen.tiles):
        if index in fetched_ids:
            slices[piece.upper] = Fetched(
                piece.lower,
                started,
                tuple(fetched_ids[index]),
                totals[index],
                piece.upper_at + FINAL_AFTER < started,
            )
            continue
        assert memory is not None  # planned out, so remembered
        held = memory.slices[piece.upper]
        done += len(held.ids)
        if done >= STEP:
            done = 0
            yield
        live = _live_ids(held, records, window.keep_from)
        for ident in live:
            current.setdefault(ident, records[ident])
        slices[piece.upper] = Fetched(
            held.lower, held.fetched_at, tuple(live), held.reported_total, held.final
        )
        reported += held.reported_total
    last_full = started if chosen.full or memory is None else memory.last_full
    return Merged(
        list(current.values()),
        SliceMemory(slices, timezone, last_full),
        reported,
        pages,
        invalid,
    )
