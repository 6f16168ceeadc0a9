"""Lets aioresponses 0.7.x build responses on aiohttp >= 3.14.

aiohttp 3.14 added a required keyword ``stream_writer`` to ``ClientResponse``; aioresponses
does not pass it yet (its open pull request #288 is the same fix). ``install()`` swaps the
class aioresponses instantiates for a subclass that supplies a writer which has sent
nothing. Remove this module, and its call in ``conftest.py``, once an aioresponses release
passes ``stream_writer`` itself.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import aioresponses.core
from aiohttp import ClientResponse
from yarl import URL


class _CompatResponse(ClientResponse):
    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


def install() -> None:
    """Patch aioresponses where it needs it; a no-op on aiohttp without ``stream_writer``."""
    if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
        aioresponses.core.ClientResponse = _CompatResponse  # type: ignore[attr-defined]
