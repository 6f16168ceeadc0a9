"""Who may read the list: the static token, and sessions opened by logging in."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from vms_simulator.config import Account
from vms_simulator.dataset import User

_FIRST_ACCOUNT_ID = 5


def _same(given: str, expected: str) -> bool:
    """A constant-time comparison that, unlike hmac's on str, takes any characters."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


class BadCredentials(Exception):
    """Unknown login or wrong password."""


class SessionLimit(Exception):
    """The account already has as many sessions as it may; ``oldest`` may be ended."""

    def __init__(self, oldest: int) -> None:
        super().__init__(oldest)
        self.oldest = oldest


@dataclass(frozen=True, slots=True)
class Session:
    id: int
    account: int
    """Index into the configured accounts."""
    token: str
    expires: float | None


class TokenStore:
    """Checks bearer tokens and opens sessions, at most ``max_sessions`` per account."""

    def __init__(
        self,
        static_token: str | None,
        accounts: tuple[Account, ...],
        max_sessions: int,
        ttl: float | None,
        start: float,
    ) -> None:
        self._static = static_token
        self._accounts = accounts
        self._max = max_sessions
        self._ttl = ttl
        joined = int(start) - 365 * 86400
        self.users = tuple(
            User(
                id=_FIRST_ACCOUNT_ID + n,
                login=account.login,
                name=account.login.partition("@")[0],
                parent_id=3,
                created_at=joined,
                updated_at=joined + 86400,
            )
            for n, account in enumerate(accounts)
        )
        self._sessions: dict[str, Session] = {}
        self._last_id = 0

    def _expire(self, now: float) -> None:
        for token, session in list(self._sessions.items()):
            if session.expires is not None and session.expires <= now:
                del self._sessions[token]

    def is_valid(self, token: str | None, now: float) -> bool:
        if token is None:
            return False
        if self._static is not None and _same(token, self._static):
            return True
        self._expire(now)
        return token in self._sessions

    def login(self, login: str, password: str, drop: int | None, now: float) -> Session:
        """Open a session; ``drop`` names one of the account's sessions to end first."""
        index = next(
            (
                n
                for n, account in enumerate(self._accounts)
                if account.login == login and _same(password, account.password)
            ),
            None,
        )
        if index is None:
            raise BadCredentials
        self._expire(now)
        mine = [s for s in self._sessions.values() if s.account == index]
        for session in mine:
            if session.id == drop:
                del self._sessions[session.token]
                mine.remove(session)
                break
        if len(mine) >= self._max:
            raise SessionLimit(min(s.id for s in mine))
        self._last_id += 1
        session = Session(
            id=self._last_id,
            account=index,
            token=f"{self._last_id}|{secrets.token_urlsafe(30)}",
            expires=None if self._ttl is None else now + self._ttl,
        )
        self._sessions[session.token] = session
        return session

    def close(self, caller: str, session_id: int, now: float) -> bool:
        """End session ``session_id`` for a valid ``caller`` token; False if it has none such.

        A login token may end the sessions of its own account; the static token any.
        """
        self._expire(now)
        by_caller = self._sessions.get(caller)
        for token, session in self._sessions.items():
            if session.id == session_id and (
                by_caller is None or by_caller.account == session.account
            ):
                del self._sessions[token]
                return True
        return False

    def sessions(self, now: float) -> list[dict[str, object]]:
        """The open sessions, oldest first: id and login (never the token)."""
        self._expire(now)
        return [
            {"id": s.id, "login": self._accounts[s.account].login}
            for s in sorted(self._sessions.values(), key=lambda s: s.id)
        ]

    def revoke_all(self) -> None:
        self._sessions.clear()
