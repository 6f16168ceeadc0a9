"""JSON the way the VMS writes it: Laravel API resources and its length-aware paginator.

Bodies are encoded like PHP's ``json_encode`` with default flags, as Laravel sends
them: non-ASCII as ``\\uXXXX`` and ``/`` as ``\\/``. Any JSON parser reads that;
a client that greps raw bodies does not. Items are rendered only for the page asked.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from vms_simulator.config import SimulatorConfig
from vms_simulator.dataset import Camera, Dataset, Item, User

_ON_EACH_SIDE = 3  # Laravel's default paginator window


def utc_timestamp(epoch: int) -> str:
    """``2019-09-24T13:54:44.000000Z``: how Laravel serialises a date."""
    t = time.gmtime(epoch)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.000000Z"
    )


def php_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":")).replace("/", "\\/")


def user_object(user: User, access_token_id: int | None = None) -> dict[str, object]:
    return {
        "id": user.id,
        "login": user.login,
        "name": user.name,
        "parent_id": user.parent_id,
        "created_at": utc_timestamp(user.created_at),
        "updated_at": utc_timestamp(user.updated_at),
        "access_token_id": access_token_id,
        "can_update_password": True,
    }


def _stream_object(camera: Camera, low: bool) -> dict[str, object]:
    return {
        "id": 2 * camera.id - (0 if low else 1),
        "type": "low" if low else "high",
        "camera_id": camera.id,
        "is_preview_from_server": True,
        "is_archive_from_server": None,
        "status": None,
        "has_sound": camera.has_sound,
        "width": None,
        "height": None,
    }


def _page_numbers(page: int, last_page: int) -> list[int | None]:
    """The paginator's numbered buttons; None is a "..." gap (Laravel's UrlWindow)."""
    if last_page < _ON_EACH_SIDE * 2 + 8:
        return list(range(1, last_page + 1))
    window = _ON_EACH_SIDE + 4
    start = [1, 2]
    finish = [last_page - 1, last_page]
    if page <= window:
        return [*range(1, window + _ON_EACH_SIDE + 1), None, *finish]
    if page > last_page - window:
        return [*start, None, *range(last_page - (window + _ON_EACH_SIDE - 1), last_page + 1)]
    return [*start, None, *range(page - _ON_EACH_SIDE, page + _ON_EACH_SIDE + 1), None, *finish]


def paginator(
    path_url: str, page: int, per_page: int, total: int, count: int
) -> tuple[dict[str, object], dict[str, object]]:
    """``links`` and ``meta`` of a page holding ``count`` of ``total`` items.

    URLs carry only ``?page=N``: Laravel drops the rest of the query string unless
    the controller asks it not to, which this one does not.
    """
    last_page = max(1, -(-total // per_page))

    def url(number: int) -> str:
        return f"{path_url}?page={number}"

    prev_url = url(page - 1) if page > 1 else None
    next_url = url(page + 1) if page < last_page else None
    buttons: list[dict[str, object]] = [
        {"url": prev_url, "label": "pagination.previous", "active": False}
    ]
    for number in _page_numbers(page, last_page):
        if number is None:
            buttons.append({"url": None, "label": "...", "active": False})
        else:
            buttons.append({"url": url(number), "label": str(number), "active": number == page})
    buttons.append({"url": next_url, "label": "pagination.next", "active": False})
    first_item = (page - 1) * per_page + 1 if count else None
    links: dict[str, object] = {
        "first": url(1),
        "last": url(last_page),
        "prev": prev_url,
        "next": next_url,
    }
    meta: dict[str, object] = {
        "current_page": page,
        "from": first_item,
        "last_page": last_page,
        "links": buttons,
        "path": path_url,
        "per_page": per_page,
        "to": None if first_item is None else first_item + count - 1,
        "total": total,
    }
    return links, meta


_ODDITIES: tuple[tuple[tuple[re.Pattern[str], str], ...], ...] = (
    ((re.compile(r'"status":"[^"]*"'), '"status":"queued"'),),  # a status nobody documented
    ((re.compile(r'^\{"id":\d+'), '{"id":null'),),  # no usable id
    ((re.compile(r'"created_at":"[^"]*"'), '"created_at":"yesterday"'),),  # not a date
    (  # no stream at all, and no file flag
        (re.compile(r'"stream":\{[^{}]*\}'), '"stream":null'),
        (re.compile(r'"is_file_exists":(?:true|false)'), '"is_file_exists":null'),
    ),
    ((re.compile(r'^\{"id":(\d+)'), r'{"id":"\1"'),),  # the id as a string
)


def _oddly(text: str, item_id: int) -> str:
    """One rendered item made odd in the way ``item_id % 5`` picks (see ``odd_items_rate``)."""
    for pattern, replacement in _ODDITIES[item_id % len(_ODDITIES)]:
        text = pattern.sub(replacement, text, count=1)
    return text


class Renderer:
    """Turns a window of the dataset into the body of one page."""

    def __init__(self, dataset: Dataset, config: SimulatorConfig) -> None:
        self._dataset = dataset
        self._zone = ZoneInfo(config.server_timezone)
        base = config.public_url.rstrip("/")
        self._path_url = base + config.path
        self._omit_status = config.omit_status
        # Constant parts, encoded once.
        self._url = php_json(base + "/storage/")
        self._addresses = [php_json(camera.address)[1:-1] for camera in dataset.cameras]
        self._streams = [
            (php_json(_stream_object(camera, False)), php_json(_stream_object(camera, True)))
            for camera in dataset.cameras
        ]
        self._users = [(user.id, php_json(user_object(user))) for user in dataset.users]

    def _item(self, item: Item) -> str:
        start = datetime.fromtimestamp(item.video_from, self._zone)
        end = datetime.fromtimestamp(item.video_to, self._zone)
        user_id, user = self._users[item.user]
        status = "" if self._omit_status else f'"status":"{item.status}",'
        return (
            f'{{"id":{item.id},"attributes":[],'
            f'"name":"{self._addresses[item.camera]}, '
            f'file.{start:%Y%m%d-%H%M%S}-{end:%H%M%S}.mp4",'
            f'"type":"mp4","url":{self._url},'
            f'"from":"{start:%Y-%m-%d %H:%M:%S}","to":"{end:%Y-%m-%d %H:%M:%S}",'
            f'"created_at":"{utc_timestamp(item.created)}",'
            f'"updated_at":"{utc_timestamp(item.updated)}",'
            f'{status}"is_file_exists":{"true" if item.file_exists else "false"},'
            f'"stream":{self._streams[item.camera][item.low_stream]},'
            f'"user_id":{user_id},"user":{user}}}'
        )

    def page(
        self,
        window: range,
        page: int,
        per_page: int,
        now: float,
        odd: Callable[[], bool] = lambda: False,
    ) -> bytes:
        """Page ``page`` of ``window``, newest first (ids grow with creation time).

        Items for which ``odd()`` is true are sent with odd or broken fields.
        """
        newest = window.stop - 1 - (page - 1) * per_page
        indices = range(newest, max(window.start, newest - per_page + 1) - 1, -1)
        rendered = []
        for index in indices:
            item = self._dataset.item(index, now)
            text = self._item(item)
            rendered.append(_oddly(text, item.id) if odd() else text)
        items = ",".join(rendered)
        links, meta = paginator(self._path_url, page, per_page, len(window), len(indices))
        return f'{{"data":[{items}],"links":{php_json(links)},"meta":{php_json(meta)}}}'.encode()
