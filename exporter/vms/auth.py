"""Where the Bearer token comes from: a long-lived token, or a service account's login.

Logging in opens a session on the VMS and sessions per user are limited, so a
:class:`ServiceAccount` keeps its token in memory and logs in again only after
a 401, at most once per poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from exporter.config import read_secret_file
from exporter.vms.errors import Unauthorized

LoginCall = Callable[[str, str], Awaitable[str]]
"""(login, password) → token, raising a PollError when refused."""


class Credentials(Protocol):
    def begin_poll(self) -> None: ...

    async def token(self) -> str: ...

    async def renew_after_401(self, rejected: str) -> bool:
        """Called on a 401 for ``rejected``; True if the request should be retried once."""
        ...


def _read(secret: SecretStr | None, path: Path | None, key: str) -> str:
    if path is not None:
        try:
            return read_secret_file(path)
        except (OSError, ValueError, UnicodeDecodeError):
            raise Unauthorized(f"cannot read {key} {path}") from None
    assert secret is not None
    return secret.get_secret_value()


class StaticToken:
    """``token`` or ``token_file``; the file is re-read after a 401 (a rotated secret)."""

    def __init__(self, token: SecretStr | None, token_file: Path | None) -> None:
        self._inline = token
        self._file = token_file
        self._token = _read(token, token_file, "token_file")

    def begin_poll(self) -> None:
        return None

    async def token(self) -> str:
        return self._token

    async def renew_after_401(self, rejected: str) -> bool:
        if self._file is None:
            return False
        self._token = _read(None, self._file, "token_file")
        return True

    def __repr__(self) -> str:
        return f"StaticToken(token_file={self._file!s})"


class ServiceAccount:
    """``login`` with ``password``/``password_file``; one login per poll at most."""

    def __init__(
        self,
        login: str,
        password: SecretStr | None,
        password_file: Path | None,
        login_call: LoginCall,
    ) -> None:
        self._login = login
        self._password = password
        self._password_file = password_file
        self._call = login_call
        self._token: str | None = None
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
        self._token = await self._call(self._login, password)
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

    def __repr__(self) -> str:
        return f"ServiceAccount(login={self._login!r})"
