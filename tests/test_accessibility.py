"""The app audited by axe-core (axe-playwright-python's bundled copy) in Debian's chromium: on the page as
it opens and on every tab after an example is captioned, WCAG 2.0/2.1/2.2 A and AA rules, no critical or
serious violation of ours. Gradio's own, which the app cannot fix, are named in ``GRADIO_OWN`` with the
component they come from (docs/accessibility.md lists them too). The states and the axe call are
benchmarks/axe_audit.py's, which prints the counts for the docs.
"""

import os
import sys

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
from test_app import EXAMPLE, ROOT  # noqa: E402
from test_browser import TIMEOUT_MS, browser_context, server  # noqa: E402,F401  (fixtures)

sys.path.insert(0, str(ROOT / "benchmarks"))
from axe_audit import STATES, upload, violations, visit  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]
BLOCKING = ("critical", "serious")
# (rule, the Gradio component it comes from, a CSS selector that element sits in): Gradio renders these
# itself and gives the app no way to name or restyle them.
GRADIO_OWN = [
    ("button-name", "gr.Examples: each example thumbnail is a <button> holding only an <img alt=''>",
     "button.gallery-item"),
    ("aria-prohibited-attr", "gr.Image with no picture yet: a <div aria-label='Empty value'> without a role",
     "div.empty[aria-label]"),
    ("target-size", "gr.Image's download button: a <button> inside an <a>, which it covers but for 1 px",
     "a.download-link"),
]


def allowed(page, rule: str, target: str) -> str | None:
    """The GRADIO_OWN entry (its component) covering this violating element, else None."""
    for own_rule, component, selector in GRADIO_OWN:
        if own_rule == rule and page.evaluate("([t, s]) => !!document.querySelector(t)?.closest(s)",
                                              [target, selector]):
            return component
    return None


def ours(page, found: list[dict]) -> list[str]:
    """The critical and serious violations not on the allow-list: "rule (impact): element"."""
    left = []
    for v in found:
        if v["impact"] not in BLOCKING:
            continue
        for node in v["nodes"]:
            target = node["target"][0] if isinstance(node["target"][0], str) else str(node["target"][0])
            if allowed(page, v["id"], target) is None:
                left.append(f"{v['id']} ({v['impact']}): {node['html'][:160]}")
    return left


def test_no_critical_or_serious_axe_violation_of_ours_on_any_tab(server, browser_context):  # noqa: F811
    page = browser_context.new_page()
    page.goto(server, timeout=TIMEOUT_MS)
    found = {"page": ours(page, violations(page))}
    upload(page, EXAMPLE, threshold=0, timeout=TIMEOUT_MS)  # a random model scores low: show everything
    page.locator("#region-explorer button").first.wait_for(timeout=TIMEOUT_MS)
    for state in STATES[1:]:
        visit(page, state, timeout=TIMEOUT_MS)
        found[state] = ours(page, violations(page))
    page.close()
    assert found == {state: [] for state in STATES}
