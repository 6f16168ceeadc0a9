"""The runbook of the shipped alerts (docs/runbook.md) as one HTML page for `/runbook`.

The wheel carries the Markdown as ``exporter/runbook.md`` (hatch force-include), so the
page always matches the installed version; a source checkout reads ``docs/runbook.md``.
Rendered with Python-Markdown; its ``toc`` extension gives each heading the anchor the
alerts' ``runbook_url`` points at (the alert name in lower case). The Markdown is the
project's own file, never user input.
"""

from __future__ import annotations

import functools
import html
from importlib import resources
from pathlib import Path

from exporter import __version__

_CHECKOUT_COPY = Path(__file__).resolve().parents[1] / "docs" / "runbook.md"


def source() -> str:
    packaged = resources.files("exporter").joinpath("runbook.md")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return _CHECKOUT_COPY.read_text(encoding="utf-8")


@functools.cache
def page() -> str:
    """The whole HTML page, rendered once per process (Python-Markdown imported only then)."""
    import markdown

    body = markdown.markdown(source(), extensions=["toc", "fenced_code", "tables"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Runbook: VMS downloads exporter {html.escape(__version__)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}
pre{{background:#f4f4f4;padding:.6em;overflow-x:auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em}}</style>
</head><body><p><a href="./">VMS downloads exporter</a> {html.escape(__version__)}</p>
{body}
</body></html>
"""
