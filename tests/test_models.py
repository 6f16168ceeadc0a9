"""The compact record, and the details kept only with web.show_details."""

from __future__ import annotations

from exporter.vms.models import MAX_DETAIL_LENGTH, DetailedDownload, Download, with_details
from tests.builders import rec


def test_the_compact_record_has_no_field_for_a_name_or_login() -> None:
    assert "name" not in Download.__struct_fields__
    assert "login" not in Download.__struct_fields__


def test_details_are_added_to_a_copy_of_the_record() -> None:
    record = rec(7, "failed", camera="3")
    detailed = with_details(record, " ул. Улица 1 ", "user@mail.com")
    assert isinstance(detailed, DetailedDownload)
    assert (detailed.name, detailed.login) == ("ул. Улица 1", "user@mail.com")
    assert (detailed.id, detailed.status, detailed.camera_id) == ("7", "failed", "3")


def test_odd_details_are_dropped_or_capped() -> None:
    capped = with_details(rec(7), "x" * 10_000, 5)
    assert (capped.name, capped.login) == ("x" * MAX_DETAIL_LENGTH, None)
    blank = with_details(rec(8), "  ", None)
    assert (blank.name, blank.login) == (None, None)


def test_logins_are_shared_between_records() -> None:
    first = with_details(rec(1), None, "".join(["op", "@x"]))
    second = with_details(rec(2), None, "".join(["op", "@", "x"]))
    assert first.login is second.login
