"""Decoding pages: one odd item never fails a page, a broken envelope always does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core import run_steps
from exporter.vms.decode import LARGE_PAGE, decode_page, decode_page_steps
from exporter.vms.errors import InvalidResponse
from exporter.vms.models import DetailedDownload, Download, InvalidItem, parse_download
from tests.builders import T0, item, page, run_counting_pauses


def body_of(items: list[Any], **meta: Any) -> bytes:
    return json.dumps(page(items, per_page=100, **meta), ensure_ascii=False).encode()


def spliced(odd_item: bytes) -> bytes:
    """A page of two ordinary items with ``odd_item`` (raw JSON text) between them."""
    first, last = (json.dumps(item(i, created=T0 - i)).encode() for i in (1, 2))
    meta = b'"meta":{"last_page":1,"total":3,"per_page":100}'
    return b'{"data":[' + first + b"," + odd_item + b"," + last + b"]," + meta + b"}"


def test_an_ordinary_page() -> None:
    body = body_of([item(1, created=T0 - 5), item("2", "completed", stream_type="low")])
    decoded = decode_page(body)
    assert [(d.id, d.status, d.stream_type) for d in decoded.downloads] == [
        ("1", "in_progress", "high"),
        ("2", "completed", "low"),
    ]
    assert (decoded.last_page, decoded.total, decoded.per_page) == (1, 2, 100)
    assert decoded.downloads[0].created_at == T0 - 5
    assert not decoded.invalid


@pytest.mark.parametrize(
    ("odd", "reason"),
    [
        (b'{"id":' + b"9" * 5000 + b',"created_at":"2026-11-20T11:00:00Z"}', "no_id"),
        (b'{"id":"' + b"9" * 5000 + b'","created_at":"2026-11-20T11:00:00Z"}', "no_id"),
        (b'{"id":' + b"9" * 30 + b',"created_at":"x"}', "bad_created_at"),
        (b'{"id":7,"created_at":"2026-11-20T11:00:00Z","x":' + b"[" * 100_000, None),
        (b'{"id":7,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "undecodable"),
        (b'{"id":7,"x":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}", "undecodable"),
        (b'{"id":7,"name":"\\ud800","created_at":"2026-11-20T11:00:00Z"}', "undecodable"),
        (b'"junk"', "not_an_object"),
        (b"[1,2]", "not_an_object"),
        (b"", "undecodable"),
    ],
)
def test_one_strange_item_is_skipped_and_the_rest_kept(odd: bytes, reason: str | None) -> None:
    body = spliced(odd)
    if reason is None:  # an item left open breaks the envelope: the whole page is invalid
        with pytest.raises(InvalidResponse, match="not valid JSON"):
            decode_page(body)
        return
    decoded = decode_page(body)
    assert sorted(d.id for d in decoded.downloads) == ["1", "2"]
    assert dict(decoded.invalid) == {reason: 1}
    assert decoded.total == 3


def test_invalid_utf8_in_an_unused_field_costs_nothing() -> None:
    odd = b'{"id":7,"name":"\xff\xfe broken","created_at":"2026-11-20T11:00:00Z","status":"failed"}'
    decoded = decode_page(spliced(odd))
    assert {d.id: d.status for d in decoded.downloads} == {
        "1": "in_progress",
        "7": "failed",
        "2": "in_progress",
    }


def test_invalid_utf8_in_a_used_field_loses_only_that_field() -> None:
    odd = b'{"id":7,"status":"\xff","created_at":"2026-11-20T11:00:00Z","stream":{"type":"low"}}'
    decoded = decode_page(spliced(odd))
    by_id = {d.id: d for d in decoded.downloads}
    assert (by_id["7"].status, by_id["7"].stream_type) == ("other", "low")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"data":[{"id":1}', "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b'{"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "no 'meta' object"),
        (b'"page"', "not an object"),
        (b'{"data":{},"meta":{"last_page":1,"total":0}}', "no 'data' list"),
        (b'{"data":[],"meta":[]}', "no 'meta' object"),
        (b'{"data":[],"meta":{"last_page":1,"total":-1}}', "total"),
        (b'{"data":[],"meta":{"last_page":1,"total":' + b"9" * 400 + b"}}", "total"),
        (b'{"data":[],"meta":{"last_page":true,"total":0}}', "last_page"),
    ],
)
def test_a_broken_envelope_is_invalid_response(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidResponse, match=reason):
        decode_page(body)


# Arbitrary JSON values (ints within what JSON parsers agree on).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
timestamps = st.sampled_from(
    [
        "2026-11-20T11:00:00.000000Z",
        "2026-11-20T11:00:00.5Z",
        "2026-11-20T11:00:00+03:00",
        "2026-11-20 11:00:00",
        "2026-11-20",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2026-13-01T00:00:00Z",
        "Z",
        "yesterday",
        "",
    ]
)
fields = {
    "id": st.one_of(json_values, st.integers(0, 10**6), st.text("0123456789 ", max_size=70)),
    "created_at": st.one_of(json_values, timestamps),
    "updated_at": st.one_of(json_values, timestamps),
    "status": st.one_of(json_values, st.sampled_from(["in progress", "Completed", "failed"])),
    "is_file_exists": json_values,
    "stream": st.one_of(
        json_values,
        st.fixed_dictionaries(
            {}, optional={"type": st.one_of(json_values, st.just("LOW")), "camera_id": json_values}
        ),
    ),
    "name": json_values,
}
items = st.one_of(json_values, st.fixed_dictionaries({}, optional=fields))


@settings(max_examples=300, deadline=None)
@given(st.lists(items, max_size=8))
def test_any_items_decode_like_the_reference_parser(data: list[Any]) -> None:
    """Never an unexpected exception; kept items are exactly those stdlib json + parse_download
    keep, field for field, and the skipped ones are counted under the same reasons."""
    decoded = decode_page(body_of(data))
    expected, reasons = [], []
    for value in data:
        try:
            expected.append(parse_download(value))
        except InvalidItem as exc:
            reasons.append(exc.reason)
    assert decoded.downloads == expected
    assert sorted(decoded.invalid.elements()) == sorted(reasons)
    distinct_usable = {d.id for d in expected}
    assert {d.id for d in decoded.downloads} == distinct_usable


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_envelope_decodes_or_is_invalid_response(value: Any) -> None:
    try:
        decoded = decode_page(json.dumps(value).encode())
    except InvalidResponse:
        return
    assert isinstance(value, dict) and isinstance(value.get("data"), list)
    assert len(decoded.downloads) + decoded.invalid.total() == len(value["data"])


def test_a_large_page_decodes_in_steps_to_the_same_result() -> None:
    items: list[Any] = [item(i, created=T0 - i) for i in range(3000)]
    items[7] = "junk"
    body = body_of(items, total=3000)
    assert len(body) > LARGE_PAGE
    steps = decode_page_steps(body)
    stepped, pauses = run_counting_pauses(steps)
    assert pauses >= 3
    once = decode_page(body)
    assert stepped.downloads == once.downloads
    assert stepped.invalid == once.invalid == {"not_an_object": 1}
    assert len(stepped.downloads) == 2999


def _details(downloads: list[Download]) -> list[tuple[str, str | None, str | None]]:
    return [
        (d.id, d.name, d.login) if isinstance(d, DetailedDownload) else (d.id, "-", "-")
        for d in downloads
    ]


def test_details_only_when_asked_on_every_path() -> None:
    name = "г. Город, ул. Улица 1, file.20190924-130316-131213.mp4"
    ordinary = body_of([item(1), item(2) | {"name": None, "user": None}])
    assert _details(decode_page(ordinary).downloads) == [("1", "-", "-"), ("2", "-", "-")]
    assert _details(decode_page(ordinary, details=True).downloads) == [
        ("1", name, "user@mail.com"),
        ("2", None, None),
    ]
    odd = spliced(b'{"id":7,"created_at":"2026-11-20T11:00:00Z","name":5,"user":{"login":"op"}}')
    assert _details(decode_page(odd, details=True).downloads) == [
        ("1", name, "user@mail.com"),
        ("7", None, "op"),
        ("2", name, "user@mail.com"),
    ]
    large = body_of([item(i, created=T0 - i) for i in range(3000)], total=3000)
    stepped = run_steps(decode_page_steps(large, details=True))
    assert _details(stepped.downloads) == [(str(i), name, "user@mail.com") for i in range(3000)]
    assert stepped.downloads == decode_page(large, details=True).downloads
