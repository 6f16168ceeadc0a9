"""One page of the list, decoded into records: fast when it is ordinary, tolerant when not.

The page is decoded with msgspec straight into typed structs that hold only the
fields the exporter uses; every other field is skipped without building it.
When that fails (an item of an odd shape or type, a number too large, invalid
UTF-8 or a broken escape, nesting too deep to decode), the page is read again
item by item, so that only the odd item is skipped and counted under a reason.
A broken envelope (no ``data`` list, no usable ``meta``) raises InvalidResponse.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from exporter.core import Steps
from exporter.vms.errors import InvalidResponse
from exporter.vms.models import (
    IN_PROGRESS,
    TERMINAL_STATUSES,
    Download,
    InvalidItem,
    normalize_id,
    parse_download,
    status_label,
    with_details,
)

NOT_JSON = "page is not valid JSON (truncated?)"
LARGE_PAGE = 2**20
"""Pages larger than this (bytes) are decoded in steps by :func:`decode_page_steps`."""
ITEM_STEP = 1000
_COUNT = re.compile(r"[0-9]{1,15}")
_DIGITS = re.compile(rb"[0-9]{1,100}")
# A JSON string, or one structural character: enough to find the items of ``data``
# in a page too deep or too odd for a decoder, without recursion.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]')
_NULL = msgspec.Raw(b"null")
_STATUSES = {"in progress": IN_PROGRESS, "in_progress": IN_PROGRESS}
_STATUSES.update({s: s for s in TERMINAL_STATUSES})
_STREAM_TYPES = {"high": "high", "low": "low"}
_CAMERAS: dict[int | str, str] = {}
"""Camera ids seen, so that the records of one camera share one string (memory)."""
MAX_SHARED_CAMERAS = 100_000
_Undecodable = (msgspec.DecodeError, RecursionError)  # ValidationError is a DecodeError


class _Stream(msgspec.Struct):
    type: str | None = None
    camera_id: int | str | None = None


class _Item(msgspec.Struct):
    """The used fields of an ordinary item; anything else about it fails the typed decode."""

    id: int | str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    status: str | None = None
    is_file_exists: bool | None = None
    stream: _Stream | None = None


class _User(msgspec.Struct):
    login: Any = None


class _DetailedItem(_Item):
    """An ordinary item with what ``web.show_details`` keeps: its name, its user's login."""

    name: str | None = None
    user: _User | None = None


class _Details(msgspec.Struct):
    """The details of an odd item, decoded on their own (anything unusable: none)."""

    name: Any = None
    user: Any = None


class _LooseItem(msgspec.Struct):
    """The used fields of an odd item, each as raw JSON to be decoded on its own."""

    id: msgspec.Raw = _NULL
    created_at: msgspec.Raw = _NULL
    updated_at: msgspec.Raw = _NULL
    status: msgspec.Raw = _NULL
    is_file_exists: msgspec.Raw = _NULL
    stream: msgspec.Raw = _NULL


class _Meta(msgspec.Struct):
    last_page: Any = None
    total: Any = None
    per_page: Any = None


class _TypedPage(msgspec.Struct):
    data: list[_Item]
    meta: _Meta


class _DetailedPage(msgspec.Struct):
    data: list[_DetailedItem]
    meta: _Meta


class _RawPage(msgspec.Struct):
    data: list[msgspec.Raw]
    meta: _Meta


_TYPED_PAGE = msgspec.json.Decoder(_TypedPage)
_DETAILED_PAGE = msgspec.json.Decoder(_DetailedPage)
_DETAILS = msgspec.json.Decoder(_Details)
_RAW_PAGE = msgspec.json.Decoder(_RawPage)
_ITEM = msgspec.json.Decoder(_Item)
_LOOSE_ITEM = msgspec.json.Decoder(_LooseItem)
_ANY = msgspec.json.Decoder()
_LOOSE_FIELDS = _LooseItem.__struct_fields__


@dataclass(slots=True)
class Page:
    """The usable items of one page, what was skipped, and its paging facts."""

    downloads: list[Download]
    last_page: int
    total: int
    per_page: int | None
    """``meta.per_page`` when usable: the server may cap what was asked for."""
    invalid: Counter[str] = field(default_factory=Counter)


def as_count(value: object) -> int | None:
    """A non-negative count from a JSON number or a decimal string; None if unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 10**15 else None
    if isinstance(value, str) and _COUNT.fullmatch(value):
        return int(value)
    return None


def decode_page_steps(body: bytes | bytearray, *, details: bool = False) -> Steps[Page]:
    """:func:`decode_page`, pausing every :data:`ITEM_STEP` items of a page over
    :data:`LARGE_PAGE` bytes, so that the largest page the cap allows never holds a
    loop for long: the envelope first (items skipped undecoded), then the items."""
    if len(body) <= LARGE_PAGE:
        return decode_page(body, details=details)
    items, meta = _raw_items(body)
    page = _page(meta)
    for start in range(0, len(items), ITEM_STEP):
        yield
        for raw in items[start : start + ITEM_STEP]:
            try:
                page.downloads.append(_from_raw(raw, details))
            except InvalidItem as exc:
                page.invalid[exc.reason] += 1
    return page


def decode_page(body: bytes | bytearray, *, details: bool = False) -> Page:
    """The page in ``body``; InvalidResponse if its envelope is broken.

    With ``details`` (``web.show_details``) the records also keep each item's name
    and its user's login; without, those fields are never decoded at all.
    """
    try:
        typed = (_DETAILED_PAGE if details else _TYPED_PAGE).decode(body)
    except _Undecodable:
        pass
    else:
        page = _page(typed.meta)
        for item in typed.data:
            try:
                record = _from_typed(item)
            except InvalidItem as exc:
                page.invalid[exc.reason] += 1
                continue
            if isinstance(item, _DetailedItem):
                login = item.user.login if item.user is not None else None
                record = with_details(record, item.name, login)
            page.downloads.append(record)
        return page
    items, meta = _raw_items(body)
    page = _page(meta)
    for raw in items:
        try:
            page.downloads.append(_from_raw(raw, details))
        except InvalidItem as exc:
            page.invalid[exc.reason] += 1
    return page


def _page(meta: _Meta) -> Page:
    last_page, total = as_count(meta.last_page), as_count(meta.total)
    if last_page is None or total is None:
        raise InvalidResponse("page meta lacks a valid 'last_page' or 'total'")
    per_page = as_count(meta.per_page)
    return Page([], last_page, total, per_page if per_page else None)


def _from_typed(item: _Item) -> Download:
    """The record of an ordinary item: the common cases inline, the rest via the models."""
    ident: object = item.id
    ident = str(ident) if type(ident) is int else normalize_id(ident)
    if ident is None:
        raise InvalidItem("no_id")
    created_at = item.created_at
    if created_at is None:
        raise InvalidItem("bad_created_at")
    if created_at.tzinfo is None:  # naive means UTC
        created_at = created_at.replace(tzinfo=UTC)
    created = created_at.timestamp()
    status = _STATUSES.get(item.status) or status_label(item.status)  # type: ignore[arg-type]
    stream = item.stream
    camera: str | None = None
    if stream is None:
        stream_type = "unknown"
    else:
        stream_type = _STREAM_TYPES.get(stream.type) or _stream_type(stream.type)  # type: ignore[arg-type]
        raw_camera = stream.camera_id
        camera = _CAMERAS.get(raw_camera)  # type: ignore[arg-type]
        if camera is None:
            camera = str(raw_camera) if type(raw_camera) is int else normalize_id(raw_camera)
            if camera is not None and len(_CAMERAS) < MAX_SHARED_CAMERAS:
                _CAMERAS[raw_camera] = camera  # type: ignore[index]
    exists = item.is_file_exists
    return Download(
        ident,
        status,
        stream_type,
        "unknown" if exists is None else "true" if exists else "false",
        created,
        created if item.updated_at == item.created_at else _timestamp(item.updated_at),
        camera,
    )


def _timestamp(value: datetime | None) -> float | None:
    """Epoch seconds of a time msgspec parsed (RFC 3339); naive means UTC, as parse_timestamp.

    An aware time never overflows here: Python subtracts the epoch without building a date."""
    if value is None:
        return None
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


def _stream_type(kind: str | None) -> str:
    lowered = kind.lower() if kind is not None else None
    return lowered if lowered in ("high", "low") else "unknown"


def _from_raw(raw: msgspec.Raw | bytes, details: bool = False) -> Download:
    """One item on its own (with ``details``, also its name and login, when usable)."""
    record = _record_from_raw(raw)
    if not details:
        return record
    try:
        found = _DETAILS.decode(raw)
    except _Undecodable:
        return with_details(record, None, None)
    login = found.user.get("login") if isinstance(found.user, dict) else None
    return with_details(record, found.name, login)


def _record_from_raw(raw: msgspec.Raw | bytes) -> Download:
    """One item on its own: typed if it can be, else field by field, else InvalidItem."""
    try:
        return _from_typed(_ITEM.decode(raw))
    except _Undecodable:
        pass
    try:
        loose = _LOOSE_ITEM.decode(raw)
    except msgspec.ValidationError:
        raise InvalidItem("not_an_object") from None
    except _Undecodable:
        raise InvalidItem("undecodable") from None
    return parse_download({name: _field_value(getattr(loose, name)) for name in _LOOSE_FIELDS})


def _field_value(raw: msgspec.Raw) -> Any:
    """A field's value; an integer too large for the decoder as its digits, else None."""
    try:
        return _ANY.decode(raw)
    except _Undecodable:
        text = bytes(raw).strip()
        return text.decode() if _DIGITS.fullmatch(text) else None


def _raw_items(body: bytes | bytearray) -> tuple[list[msgspec.Raw] | list[bytes], _Meta]:
    """The items of ``data`` undecoded, and ``meta``; InvalidResponse if the envelope is broken."""
    try:
        page = _RAW_PAGE.decode(body)
    except msgspec.ValidationError:
        raise _envelope_error(body) from None
    except _Undecodable:
        pass
    else:
        return page.data, page.meta
    envelope, items = _split_data(bytes(body))  # rare: a copy is fine here
    try:
        return items, _RAW_PAGE.decode(envelope).meta
    except msgspec.ValidationError:
        raise _envelope_error(envelope) from None
    except _Undecodable:
        raise InvalidResponse(NOT_JSON) from None


def _envelope_error(body: bytes | bytearray) -> InvalidResponse:
    """What is wrong with the envelope of a page that did not fit the expected shape."""
    try:
        value = _ANY.decode(body)
    except _Undecodable:
        return InvalidResponse(NOT_JSON)
    if not isinstance(value, dict):
        return InvalidResponse(f"page is a JSON {type(value).__name__}, not an object")
    if not isinstance(value.get("data"), list):
        return InvalidResponse("page has no 'data' list")
    if not isinstance(value.get("meta"), dict):
        return InvalidResponse("page has no 'meta' object")
    return InvalidResponse("page meta lacks a valid 'last_page' or 'total'")


def _split_data(body: bytes) -> tuple[bytes, list[bytes]]:
    """The page with an empty ``data`` list, and the items of ``data`` as bytes.

    Scans strings and brackets with a regular expression and a depth counter, so
    an item nested too deep for any decoder is still found (and then skipped).
    """
    depth = 0
    after_colon = False
    key: bytes | None = None
    data_key: bytes | None = None
    start = end = item_start = -1
    items: list[bytes] = []
    for match in _TOKEN.finditer(body):
        position = match.start()
        char = body[position]
        if char == 0x22:  # a string
            if depth == 1:
                key = None if after_colon else match.group()
                after_colon = False
        elif char == 0x3A:  # :
            if depth == 1:
                data_key, after_colon = key, True
        elif char in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth == 2 and char == 0x5B and after_colon and data_key == b'"data"' and end < 0:
                start = position
                item_start = position + 1
            after_colon = False if depth == 2 else after_colon
        elif char == 0x2C:  # ,
            if depth == 2 and start >= 0 and end < 0:
                items.append(body[item_start:position])
                item_start = position + 1
            if depth == 1:
                after_colon = False
        else:  # ] }
            if depth == 2 and start >= 0 and end < 0:
                last = body[item_start:position]
                if last.strip() or items:
                    items.append(last)
                end = position + 1
            depth -= 1
            if depth < 0:
                break
    if depth != 0 or start < 0 or end < 0:
        raise InvalidResponse(NOT_JSON)
    return body[:start] + b"[]" + body[end:], items
