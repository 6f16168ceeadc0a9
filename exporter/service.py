"""The running exporter: one poll task per target, and reloading the configuration.

A reload (SIGHUP or ``POST /-/reload``) re-validates the configuration and
re-reads the web configuration file; an invalid one changes nothing. A valid
one adds and removes targets and applies poll and metrics settings; a target
whose identity (name, URL, path) stayed keeps its remembered records and
counters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from exporter.config import ConfigError, Settings, TargetSettings
from exporter.metrics import ExporterMetrics
from exporter.poller import TargetPoller, identity
from exporter.records_store import store_for
from exporter.state import StateDirectory
from exporter.webconfig import LiveWebConfig, WebConfigError

log = logging.getLogger("exporter")

MAX_STAGGER = 5.0


class Service:
    """Owns the pollers (a list the web app reads live) and their tasks."""

    def __init__(
        self,
        settings: Settings,
        metrics: ExporterMetrics,
        stop: asyncio.Event,
        load: Callable[[], Settings] | None = None,
    ) -> None:
        """``load`` re-reads the configuration for a reload (None: reloads are refused)."""
        self.settings = settings
        self.metrics = metrics
        self.pollers: list[TargetPoller] = []
        self.died: list[str] = []
        self._stop = stop
        self._load = load
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._background: list[asyncio.Task[None]] = []
        self.web_config: LiveWebConfig | None = None
        """The web configuration in force, re-read by a reload too."""
        self._reloading = asyncio.Lock()
        self._state = StateDirectory(settings.state.directory) if settings.state.directory else None
        for name, target in settings.targets.items():
            self.pollers.append(self._poller(name, target, settings))

    def _poller(self, name: str, target: TargetSettings, settings: Settings) -> TargetPoller:
        """A poller whose login session id and records live in the state directory, if any."""
        directory = self._state.directory if self._state else None  # [state]: only at start
        store = store_for(directory, name, target, settings.poll.lookback)
        return TargetPoller(name, target, settings, self.metrics, state=self._state, store=store)

    def start(self) -> None:
        stagger = min(MAX_STAGGER, self.settings.poll.interval / len(self.pollers))
        for i, poller in enumerate(self.pollers):
            self._start(poller, i * stagger)

    def _start(self, poller: TargetPoller, first_delay: float) -> None:
        task = asyncio.create_task(
            poller.run(self._stop, first_delay=first_delay), name=f"poll-{poller.name}"
        )
        task.add_done_callback(self._check_alive)
        self._tasks[poller.name] = task

    def supervise(self, task: asyncio.Task[None]) -> None:
        """A background task that must run until the stop (cancelled by :meth:`close`)."""
        task.add_done_callback(self._check_alive)
        self._background.append(task)

    def _check_alive(self, task: asyncio.Task[None]) -> None:
        """A poll loop (or the web config watch) never ends on its own: stop loudly, not quietly."""
        if task.cancelled() or self._stop.is_set():
            return
        log.error(
            "a background task ended unexpectedly",
            exc_info=task.exception(),
            extra={"task": task.get_name()},
        )
        self.died.append(task.get_name())
        self._stop.set()

    async def _halt(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        """Stop every poll task, then close the pollers (login sessions) concurrently."""
        for task in self._background:
            task.cancel()
        for name in list(self._tasks):
            await self._halt(name)
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(*(p.close() for p in self.pollers), return_exceptions=True)

    async def reload(self) -> list[str]:
        """Re-read and apply the configuration; the problems if it is invalid (nothing changed)."""
        if self._load is None:
            return ["this exporter was started without a configuration to re-read"]
        async with self._reloading:
            try:
                new = self._load()
            except ConfigError as exc:
                log.error(
                    "reload failed: the configuration is invalid, the running one stays",
                    extra={"problems": exc.problems},
                )
                return exc.problems
            if self.web_config is not None and new.web.config_file is not None:
                try:
                    self.web_config.reload(new.web.config_file)
                except WebConfigError as exc:
                    problems = [f"web.config_file: {problem}" for problem in exc.problems]
                    log.error(
                        "reload failed: the web configuration is invalid, the running one stays",
                        extra={"problems": problems},
                    )
                    return problems
            try:
                await self._apply(new)
            except Exception as exc:  # a bug of ours: say so, keep running what runs
                log.error("reload failed unexpectedly (please report it)", exc_info=exc)
                return [f"reload failed unexpectedly: {type(exc).__name__}"]
            return []

    async def _apply(self, new: Settings) -> None:
        old = self.settings
        web_in_place = self.web_config is not None and new.web.config_file is not None
        for section in ("web", "state"):
            before, after = getattr(old, section), getattr(new, section)
            if section == "web" and web_in_place:  # the web config file was re-read above
                before, after = before.listen_address, after.listen_address
            if before != after:
                log.warning(
                    f"[{section}] changed; it takes effect only after a restart",
                    extra={"section": section},
                )
        self.metrics.per_camera = new.metrics.per_camera
        self.metrics.max_staleness = new.poll.max_staleness
        current = {p.name: p for p in self.pollers}
        removed = [
            p for name, p in current.items()
            if name not in new.targets or identity(name, new.targets[name]) != p.identity()
        ]  # fmt: skip
        for gone in removed:
            await self._halt(gone.name)
            await gone.close()
            self.pollers.remove(gone)
            self.metrics.remove_target(gone.name)
        kept = {p.name: p for p in self.pollers}
        added: list[str] = []
        for name, target in new.targets.items():
            poller = kept.get(name)
            if poller is None:
                fresh = self._poller(name, target, new)
                self.pollers.append(fresh)
                added.append(name)
                self._start(fresh, 0.0)
            elif target != poller.target or new.poll != old.poll or new.metrics != old.metrics:
                await self._halt(name)
                await poller.reconfigure(target, new)
                self._start(poller, _until_next_poll(poller, new.poll.interval))
        self.pollers.sort(key=lambda p: list(new.targets).index(p.name))
        self.settings = new
        log.info(
            "configuration reloaded",
            extra={
                "targets": list(new.targets),
                "added": added,
                "removed": [p.name for p in removed],
            },
        )


def _until_next_poll(poller: TargetPoller, interval: float) -> float:
    """Seconds until the poller's next poll on its old schedule (0 if due)."""
    if poller.last is None:
        return 0.0
    return max(0.0, poller.last.finished_at + interval - time.time())
