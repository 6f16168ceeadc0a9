"""Decoding pages shaped like the API sample: stdlib json, orjson, msgspec, and the exporter.

    .venv/bin/python benchmarks/decode_bench.py [--downloads 10000] [--runs 5]

Times (best of ``--runs``, milliseconds per page of 100 items) decoding the
pre-rendered pages of ``benchmarks/pages.py`` into generic objects with each
decoder, msgspec's typed decode of only the fields the exporter uses, and the
exporter's whole ``decode_page`` (typed decode plus the compact records).
msgspec's typed decode alone is timed on the ordinary pages only (a page with an
odd item fails it, and ``decode_page`` then reads that page item by item). Exits 1
unless ``decode_page`` keeps and skips exactly what stdlib json and the
reference parser ``parse_download`` do, page by page.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import msgspec  # noqa: E402
import orjson  # noqa: E402
from pages import render  # noqa: E402

from exporter.vms.decode import _TYPED_PAGE, decode_page  # noqa: E402
from exporter.vms.models import Download, InvalidItem, parse_download  # noqa: E402


def best(pages: list[bytes], decode: Callable[[bytes], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        for body in pages:
            decode(body)
        times.append(time.perf_counter() - began)
    return 1000 * min(times) / len(pages)


def typed_ok(body: bytes) -> bool:
    try:
        _TYPED_PAGE.decode(body)
    except msgspec.DecodeError:
        return False
    return True


def reference(body: bytes) -> tuple[list[Download], int]:
    """The records and the number of skipped items as stdlib json + parse_download see them."""
    kept, skipped = [], 0
    for item in json.loads(body)["data"]:
        try:
            kept.append(parse_download(item))
        except InvalidItem:
            skipped += 1
    return kept, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--downloads", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    pages, _ = render(args.downloads, 100, 0.002, 1)
    size = sum(map(len, pages)) / args.downloads
    head = f"{len(pages)} pages of 100 items, {size:.0f} bytes per item"
    print(f"{head}; ms per page, best of {args.runs}")
    for number, body in enumerate(pages, 1):
        page = decode_page(body)
        if (page.downloads, sum(page.invalid.values())) != reference(body):
            sys.exit(f"WRONG: page {number} decodes unlike the reference parser")
    ordinary = [body for body in pages if typed_ok(body)]
    print(f"every page decoded like the reference parser; {len(ordinary)} ordinary pages")
    contenders: dict[str, Callable[[bytes], object]] = {
        "stdlib json.loads (generic objects)": json.loads,
        "orjson.loads (generic objects)": orjson.loads,
        "msgspec.json.decode (generic objects)": msgspec.json.decode,
        "msgspec typed, used fields only (ordinary)": _TYPED_PAGE.decode,
        "exporter decode_page (typed + records)": decode_page,
    }
    for name, decode in contenders.items():
        timed = ordinary if decode == _TYPED_PAGE.decode else pages
        print(f"  {name:42} {best(timed, decode, args.runs):6.3f}")


if __name__ == "__main__":
    main()
