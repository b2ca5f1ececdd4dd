"""The app audited by axe-core (axe-playwright-python's bundled copy) in Debian's chromium: on the page as
it opens and on every tab after an example is captioned, WCAG 2.0/2.1/2.2 A and AA rules, no critical or
serious violation of ours. Gradio's own, which the app cannot fix, are named in axe_audit.GRADIO_OWN with
the component they come from (docs/accessibility.md lists them too). The states, the axe call and the
allow-list are benchmarks/axe_audit.py's, which prints the counts for the docs.
"""

import os
import sys

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
from test_app import EXAMPLE, ROOT  # noqa: E402
from test_browser import TIMEOUT_MS, browser_context, server  # noqa: E402,F401  (fixtures)

sys.path.insert(0, str(ROOT / "benchmarks"))
from axe_audit import STATES, ours, upload, violations, visit  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]
def test_no_critical_or_serious_axe_violation_of_ours_on_any_tab(server, browser_context):  # noqa: F811
    page = browser_context.new_page()
    page.goto(server, timeout=TIMEOUT_MS)
    page.locator("#model-banner").get_by_text("synthetic scenes").wait_for(timeout=TIMEOUT_MS)  # page loaded
    found = {"page": ours(page, violations(page))}
    upload(page, EXAMPLE, threshold=0, timeout=TIMEOUT_MS)  # a random model scores low: show everything
    page.locator("#region-explorer button").first.wait_for(timeout=TIMEOUT_MS)
    for state in STATES[1:]:
        visit(page, state, timeout=TIMEOUT_MS)
        found[state] = ours(page, violations(page))
    page.close()
    assert found == {state: [] for state in STATES}
