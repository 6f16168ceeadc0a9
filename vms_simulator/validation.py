"""Request validation the way a Laravel 8 controller does it, messages included.

Reasons follow Laravel's English defaults ("The per page field is required."), one
per failing field, fields in rule order. Empty strings count as missing (Laravel's
ConvertEmptyStringsToNull middleware); for a repeated parameter the last one wins (PHP).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from multidict import MultiMapping

Errors = dict[str, list[str]]

INVALID_MESSAGE = "The given data was invalid."

_PHP_INT_MAX = 2**63 - 1
_INTEGER = re.compile(r"\s*[+-]?(0|[1-9][0-9]*)\s*")
# The forms PHP's strtotime reads that a client would plausibly send: a date, a date
# and time (space or T, optional seconds and fraction) and an optional zone suffix.
_DATE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,6})?)?"
    r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)


def _attribute(field: str) -> str:
    return field.replace("_", " ")


def required_message(field: str) -> str:
    return f"The {_attribute(field)} field is required."


def integer_message(field: str) -> str:
    return f"The {_attribute(field)} must be an integer."


def parse_integer(value: object) -> int | None:
    """An int for what PHP's FILTER_VALIDATE_INT accepts (JSON numbers too), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _INTEGER.fullmatch(value):
        number = int(value)
    else:
        return None
    return number if -_PHP_INT_MAX - 1 <= number <= _PHP_INT_MAX else None


def parse_wall_time(value: str) -> datetime | None:
    """The wall-clock time a date string names, or None if it is not a valid date.

    A zone suffix is accepted but ignored: Laravel binds the parsed date to the query
    as ``Y-m-d H:i:s`` without converting it, so the database reads the digits in the
    server's own zone. Fractions of a second are dropped for the same reason.
    """
    match = _DATE.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) if g else 0 for g in match.groups())
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:  # 2024-02-30, 25:00 and the like
        return None


@dataclass(frozen=True, slots=True)
class ListQuery:
    per_page: int
    page: int
    start: float
    """``from`` as epoch seconds (read in the server's zone)."""
    end: float
    """``to`` as epoch seconds (read in the server's zone)."""


def _last(query: MultiMapping[str], field: str) -> str | None:
    values = query.getall(field, [])
    return values[-1] if values and values[-1] != "" else None


def parse_list_query(query: MultiMapping[str], zone: ZoneInfo) -> ListQuery | Errors:
    """The list endpoint's parameters, or the validation errors Laravel would report."""
    errors: Errors = {}
    numbers: dict[str, int] = {}
    for field in ("per_page", "page"):
        raw = _last(query, field)
        number = None if raw is None else parse_integer(raw)
        if raw is None:
            errors[field] = [required_message(field)]
        elif number is None:
            errors[field] = [integer_message(field)]
        elif number < 1:
            errors[field] = [f"The {_attribute(field)} must be at least 1."]
        else:
            numbers[field] = number
    bounds: dict[str, float] = {}
    for field in ("from", "to"):
        raw = _last(query, field)
        wall = None if raw is None else parse_wall_time(raw)
        if raw is None:
            errors[field] = [required_message(field)]
        elif wall is None:
            errors[field] = [f"The {field} is not a valid date."]
        else:
            bounds[field] = wall.replace(tzinfo=zone).timestamp()
    if errors:
        return errors
    return ListQuery(numbers["per_page"], numbers["page"], bounds["from"], bounds["to"])
