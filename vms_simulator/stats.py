"""Counters of what the simulator was asked, for tests that count requests and logins."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from multidict import MultiMapping

_MAX_HEADER_VALUES = 64  # distinct X-Client / X-UUID values kept; the rest count as "(other)"


def _count_bounded(counter: Counter[str], value: str) -> None:
    if value in counter or len(counter) < _MAX_HEADER_VALUES:
        counter[value] += 1
    else:
        counter["(other)"] += 1


@dataclass
class Stats:
    list_codes: Counter[int] = field(default_factory=Counter)
    token_codes: Counter[int] = field(default_factory=Counter)
    close_codes: Counter[int] = field(default_factory=Counter)
    """Answers to ``POST /api/v1/sessions/{id}``."""
    logins: int = 0
    """Successful logins (sessions opened)."""
    x_client: Counter[str] = field(default_factory=Counter)
    x_uuid: Counter[str] = field(default_factory=Counter)
    last_query: dict[str, str] = field(default_factory=dict)

    def count_list(self, status: int, headers: MultiMapping[str], query: MultiMapping[str]) -> None:
        self.list_codes[status] += 1
        _count_bounded(self.x_client, headers.get("X-Client", ""))
        _count_bounded(self.x_uuid, headers.get("X-UUID", ""))
        self.last_query = {
            key: query[key] for key in ("per_page", "page", "from", "to") if key in query
        }

    def as_json(self, sessions: list[dict[str, object]], downloads: int) -> dict[str, object]:
        def codes(counter: Counter[int]) -> dict[str, object]:
            return {
                "total": counter.total(),
                "by_code": {str(code): n for code, n in sorted(counter.items())},
            }

        return {
            "requests": codes(self.list_codes),
            "token_requests": codes(self.token_codes),
            "logins": self.logins,
            "session_closes": codes(self.close_codes),
            "active_sessions": len(sessions),
            "sessions": sessions,
            "downloads": downloads,
            "x_client": dict(self.x_client),
            "x_uuid": dict(self.x_uuid),
            "last_query": self.last_query,
        }
