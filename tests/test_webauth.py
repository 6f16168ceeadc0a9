"""Basic auth checks: the header as Go parses it, bcrypt as Go compares it, and the cache."""

from __future__ import annotations

import base64

import bcrypt
import pytest

from exporter.webauth import BasicAuthChecker, parse_basic
from tests.certs import bcrypt_hash


def header(user: str | bytes, password: str | bytes) -> str:
    raw = (user if isinstance(user, bytes) else user.encode()) + b":"
    raw += password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(raw).decode()


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The hashes bcrypt really checked (the real function still runs)."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return calls


def test_header_parsing_follows_go() -> None:
    assert parse_basic(header("u", "p:with:colons")) == (b"u", b"p:with:colons")
    assert parse_basic("basic " + header("u", "p")[6:]) == (b"u", b"p")  # scheme: any case
    assert parse_basic(header("u", "")) == (b"u", b"")
    assert parse_basic(None) is None
    assert parse_basic("Bearer abc") is None
    assert parse_basic("Basic not*base64") is None
    assert parse_basic("Basic " + base64.b64encode(b"no colon").decode()) is None


async def test_right_password_accepted_and_cached_wrong_ones_rejected(
    bcrypt_calls: list[bytes],
) -> None:
    users = {"u": bcrypt_hash("right").encode()}
    checker = BasicAuthChecker()
    assert await checker.check(users, header("u", "right"))
    assert await checker.check(users, header("u", "right"))
    assert len(bcrypt_calls) == 1  # the second scrape did not pay bcrypt
    assert not await checker.check(users, header("u", "wrong"))
    assert not await checker.check(users, header("u", "right "))
    assert len(bcrypt_calls) == 3  # a wrong password never meets the cached success


async def test_a_changed_hash_never_meets_a_cached_success() -> None:
    checker = BasicAuthChecker()
    assert await checker.check({"u": bcrypt_hash("old").encode()}, header("u", "old"))
    new = {"u": bcrypt_hash("new").encode()}
    assert not await checker.check(new, header("u", "old"))
    assert await checker.check(new, header("u", "new"))


async def test_an_unknown_user_still_costs_a_bcrypt_check(bcrypt_calls: list[bytes]) -> None:
    """So that timing does not tell which user names exist (exporter-toolkit does the same)."""
    checker = BasicAuthChecker()
    users = {"u": bcrypt_hash("pw").encode()}
    assert not await checker.check(users, header("nobody", "pw"))
    assert len(bcrypt_calls) == 1
    # The same password under a known user's name is a different key: no cached answer.
    assert await checker.check(users, header("u", "pw"))
    assert not await checker.check({}, header("u", "pw"))


async def test_passwords_beyond_72_bytes_compare_as_go_does() -> None:
    """bcrypt uses 72 bytes; Go ignores the rest, the Python library would raise."""
    long = "x" * 72
    users = {"u": bcrypt_hash(long).encode()}
    checker = BasicAuthChecker()
    assert await checker.check(users, header("u", long + "ignored"))
    assert not await checker.check(users, header("u", long[:71]))


async def test_the_cache_is_bounded() -> None:
    checker = BasicAuthChecker(size=8)
    users = {"u": bcrypt_hash("pw").encode()}
    for attempt in range(20):
        assert not await checker.check(users, header("u", f"guess {attempt}"))
    assert len(checker) == 8
