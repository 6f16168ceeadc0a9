"""/runbook: the runbook the alerts link to, served by the exporter that raised them."""

from __future__ import annotations

import re
import tomllib

from exporter import __version__, runbook
from tests.exporter_harness import exporter_on_simulator
from tests.promql_names import REPO, RUNBOOK_PATH, load_rules


async def test_runbook_page_has_an_anchor_per_alert_and_is_linked_from_the_landing_page() -> None:
    async with exporter_on_simulator() as h:
        status, page, headers = await h.get("/runbook")
        assert status == 200 and "text/html" in headers["Content-Type"]
        assert __version__ in page
        anchors = set(re.findall(r'<h\d id="([^"]+)"', page))
        for rule in load_rules():
            url = rule.annotations["runbook_url"]
            assert url.rsplit("#", 1)[1] in anchors, rule.name
        assert "<pre><code" in page  # fenced PromQL is code, not paragraphs
        _, landing, _ = await h.get("/")
        assert 'href="runbook"' in landing


def test_runbook_is_the_repositorys_and_is_packaged_with_the_exporter() -> None:
    assert runbook.source() == RUNBOOK_PATH.read_text(encoding="utf-8")
    build = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = build["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["force-include"]["docs/runbook.md"] == "exporter/runbook.md"
    assert "exporter" in wheel["packages"]
