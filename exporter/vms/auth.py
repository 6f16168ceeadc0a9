"""Where the Bearer token comes from: a long-lived token, or a service account's login.

Logging in opens a session on the VMS and sessions per user are limited, so a
:class:`ServiceAccount` keeps its token in memory, logs in again only after a
401 (at most once per poll), closes its session when the process stops, and
remembers the id of the session it opened (:class:`SessionMemory`) so that the
next login, even after a kill, replaces that session instead of adding one.
It never closes or replaces a session it did not open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from exporter.config import read_secret_file, strip_bearer
from exporter.state import StateDirectory
from exporter.vms.errors import Unauthorized

log = logging.getLogger(__name__)

SESSION_KIND = "session"


@dataclass(frozen=True, slots=True)
class LoginAnswer:
    token: str
    session_id: int | None
    """``user.access_token_id``: the session this login opened (None if not told)."""


LoginCall = Callable[[str, str, int | None], Awaitable[LoginAnswer]]
"""(login, password, session to replace) → answer, raising a PollError when refused."""
CloseCall = Callable[[str, int], Awaitable[None]]
"""(token, session id) → None once the VMS closed it, raising a PollError otherwise."""


class StaleSessionId(Unauthorized):
    """The VMS refused the ``session_id`` sent at login (unknown to it)."""


class Credentials(Protocol):
    def begin_poll(self) -> None: ...

    async def token(self) -> str: ...

    async def renew_after_401(self, rejected: str) -> bool:
        """Called on a 401 for ``rejected``; True if the request should be retried once."""
        ...

    async def log_out(self, close: CloseCall) -> None:
        """End what this process opened on the VMS, if anything."""
        ...


def _read(secret: SecretStr | None, path: Path | None, key: str) -> str:
    if path is not None:
        try:
            return read_secret_file(path, token=key == "token_file")
        except (OSError, ValueError, UnicodeDecodeError):
            raise Unauthorized(f"cannot read {key} {path}") from None
    assert secret is not None
    return secret.get_secret_value()


class StaticToken:
    """``token`` or ``token_file``; the file is re-read after a 401 (a rotated secret)."""

    def __init__(self, token: SecretStr | None, token_file: Path | None) -> None:
        self._inline = token
        self._file = token_file
        self._token = strip_bearer(_read(token, token_file, "token_file"))

    def begin_poll(self) -> None:
        return None

    async def token(self) -> str:
        return self._token

    async def renew_after_401(self, rejected: str) -> bool:
        if self._file is None:
            return False
        self._token = _read(None, self._file, "token_file")
        return True

    async def log_out(self, close: CloseCall) -> None:
        return None  # a long-lived token is not a session of ours

    def __repr__(self) -> str:
        return f"StaticToken(token_file={self._file!s})"


class SessionMemory:
    """The id of the last session this exporter opened for one target, across restarts.

    Kept in ``<state>/<target>.session.json`` with the URL and login it belongs
    to (never the token or password); without a state directory only in memory.
    A saved id for another URL or login is ignored: it is not ours to replace.
    """

    def __init__(self, state: StateDirectory | None, target: str, url: str, login: str) -> None:
        self._state = state
        self._target = target
        self._owner = {"url": url, "login": login}
        self.session_id: int | None = None
        if state is not None:
            saved = state.read(target, SESSION_KIND)
            if saved is not None and all(saved.get(k) == v for k, v in self._owner.items()):
                remembered = saved.get("session_id")
                if isinstance(remembered, int) and not isinstance(remembered, bool):
                    self.session_id = remembered

    def opened(self, session_id: int | None) -> None:
        self.session_id = session_id
        if session_id is not None:
            self._save(lambda state: state.write(
                self._target, SESSION_KIND, {**self._owner, "session_id": session_id}
            ))  # fmt: skip

    def closed(self) -> None:
        self.session_id = None
        self._save(lambda state: state.remove(self._target, SESSION_KIND))

    def _save(self, action: Callable[[StateDirectory], None]) -> None:
        if self._state is None:
            return
        try:
            action(self._state)
        except OSError as exc:
            log.warning(
                "cannot save the login session id; a restart after a kill may leave "
                "one extra session on the VMS",
                extra={"target": self._target, "error": exc.strerror},
            )


class ServiceAccount:
    """``login`` with ``password``/``password_file``; one login per poll at most."""

    def __init__(
        self,
        login: str,
        password: SecretStr | None,
        password_file: Path | None,
        login_call: LoginCall,
        memory: SessionMemory,
    ) -> None:
        self._login = login
        self._password = password
        self._password_file = password_file
        self._call = login_call
        self._memory = memory
        self._token: str | None = None
        self._opened_here = False
        self._logged_in_this_poll = False
        self._lock = asyncio.Lock()

    def begin_poll(self) -> None:
        self._logged_in_this_poll = False

    async def _log_in(self) -> str:
        if self._logged_in_this_poll:
            raise Unauthorized(
                "the VMS rejected the token of this poll's login (or the login failed); "
                "not logging in again until the next poll"
            )
        self._logged_in_this_poll = True
        self._token = None
        password = _read(self._password, self._password_file, "password_file")
        previous = self._memory.session_id
        try:
            answer = await self._call(self._login, password, previous)
        except StaleSessionId:
            # The remembered session is gone already: nothing to replace.
            self._memory.closed()
            answer = await self._call(self._login, password, None)
        self._memory.opened(answer.session_id)
        self._opened_here = answer.session_id is not None
        self._token = answer.token
        return self._token

    async def token(self) -> str:
        async with self._lock:
            return self._token if self._token is not None else await self._log_in()

    async def renew_after_401(self, rejected: str) -> bool:
        async with self._lock:
            if self._token is not None and self._token != rejected:
                return True  # another request of this poll has logged in already
            await self._log_in()
            return True

    async def log_out(self, close: CloseCall) -> None:
        """Close the session this process opened; on failure keep its id for the next login."""
        session_id, token = self._memory.session_id, self._token
        if not self._opened_here or session_id is None or token is None:
            return
        await close(token, session_id)
        self._token = None
        self._opened_here = False
        self._memory.closed()

    def __repr__(self) -> str:
        return f"ServiceAccount(login={self._login!r})"
