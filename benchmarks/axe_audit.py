"""The app's accessibility audit: axe-core (the copy axe-playwright-python bundles) in Debian's chromium,
WCAG 2.0/2.1/2.2 A and AA rules, on the page as it opens and on every tab after an example is captioned.

    python benchmarks/axe_audit.py                                 # this checkout, the demo model
    python benchmarks/axe_audit.py --root /tmp/old --json old.json # another checkout (e.g. a `git archive`)

Prints, for each of the seven states, the violated rules by impact (critical, serious, moderate, minor)
with the number of elements each, and "ours": the critical or serious elements not on ``GRADIO_OWN`` (the
allow-list of Gradio's own markup the app cannot change). tests/test_accessibility.py runs the same
states (``STATES``, ``visit``) and fails on any of ours.
The app runs as ``python app.py`` in ``--root`` (a subprocess on a free loopback port).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _server import ROOT, alive, free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]
IMPACTS = ("critical", "serious", "moderate", "minor")
STATES = ("page", "Caption", "Search", "Sentence", "Collection", "Live", "Video", "Model")
PHRASE, SENTENCE = "a red circle", "a red circle next to a blue square"
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


TIMEOUT_MS, LOAD_MS = 60_000, 600_000  # a step; the model loading on a busy machine


def violations(page) -> list[dict]:
    """axe-core's violations on the page as it is now (WCAG 2.0–2.2 A/AA rules)."""
    from axe_playwright_python.sync_playwright import Axe

    options = {"runOnly": {"type": "tag", "values": TAGS}, "resultTypes": ["violations"]}
    return Axe().run(page, options=options).response["violations"]


def wait_for_image(page, elem_id: str, timeout: int = TIMEOUT_MS) -> None:
    page.wait_for_function("id => { const i = document.querySelector(`#${id} img`);"
                           " return i && i.complete && i.naturalWidth > 0; }", arg=elem_id, timeout=timeout)


def upload(page, image: Path, threshold: float | None = None, timeout: int = TIMEOUT_MS) -> None:
    """The page open with its model loaded: set the threshold (if given), upload ``image``, wait for the
    annotated picture."""
    page.locator("#input-image input[type=file]").wait_for(state="attached", timeout=timeout)
    page.locator("#model-banner").get_by_text("synthetic scenes").wait_for(timeout=timeout)
    if threshold is not None:
        number = page.locator("#threshold input[type=number]")
        number.fill(str(threshold))
        number.press("Enter")
        number.blur()
    page.locator("#input-image input[type=file]").set_input_files(str(image))
    wait_for_image(page, "annotated", timeout)


def visit(page, state: str, timeout: int = TIMEOUT_MS) -> None:
    """Bring the page to ``state`` (one of STATES after "page"): open the tab and do its one thing."""
    page.get_by_role("tab", name=state).click()
    if state == "Search":
        page.locator("#phrase textarea, #phrase input").first.fill(PHRASE)
        page.locator("#phrase textarea, #phrase input").first.press("Enter")
        wait_for_image(page, "search-image", timeout)
    elif state == "Sentence":
        page.locator("#sentence textarea, #sentence input").first.fill(SENTENCE)
        page.locator("#sentence textarea, #sentence input").first.press("Enter")
        wait_for_image(page, "align-image", timeout)
    elif state == "Collection":
        page.locator("#collection-query textarea, #collection-query input").first.fill(SENTENCE)
        page.locator("#collection-query textarea, #collection-query input").first.press("Enter")
        page.locator("#collection-gallery img").first.wait_for(state="visible", timeout=timeout)
    elif state == "Model":
        page.locator("#model-info").get_by_text("Training data").wait_for(timeout=timeout)
    page.wait_for_timeout(500)  # transitions and late renders settle


def summary(found: list[dict]) -> dict[str, int]:
    return {impact: sum(v["impact"] == impact for v in found) for impact in IMPACTS}


def start(root: Path, model: str, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (work / "gradio-tmp").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "REGIONCAP_MODEL": model, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "GRADIO_TEMP_DIR": str(work / "gradio-tmp")}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=open(work / "server.log", "w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while not alive(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"app.py did not start:\n{(work / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    return proc, url


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose app.py is audited")
    parser.add_argument("--model", help="default: the root's assets/demo-model (the app serves files under its root)")
    parser.add_argument("--image", type=Path, default=ROOT / "assets" / "examples" / "shapes-grey.jpg")
    parser.add_argument("--json", type=Path, help="write every state's violations here")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).is_file():
        sys.exit(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="regioncap-axe-"))
    proc, url = start(args.root.resolve(), args.model or str(args.root.resolve() / "assets" / "demo-model"), work)
    found = {}
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(str(work / "profile"), executable_path=CHROMIUM,
                                                           headless=True, args=ARGS,
                                                           viewport={"width": 1280, "height": 1000})
            page = context.new_page()
            page.goto(url, timeout=TIMEOUT_MS)
            page.locator("#model-banner").get_by_text("synthetic scenes").wait_for(timeout=LOAD_MS)
            found["page"] = violations(page)
            left = {"page": ours(page, found["page"])}
            upload(page, args.image)
            for state in STATES[1:]:
                visit(page, state)
                found[state] = violations(page)
                left[state] = ours(page, found[state])
            context.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'state':<11} {'critical':>8} {'serious':>8} {'moderate':>8} {'minor':>6} {'ours':>5}  rules (elements)")
    for state, vs in found.items():
        counts = summary(vs)
        rules = ", ".join(f"{v['id']}[{v['impact'][:3]}]×{len(v['nodes'])}" for v in vs)
        print(f"{state:<11} {counts['critical']:>8} {counts['serious']:>8} {counts['moderate']:>8} "
              f"{counts['minor']:>6} {len(left[state]):>5}  {rules}")
    total = {impact: sum(summary(vs)[impact] for vs in found.values()) for impact in IMPACTS}
    print(f"{'all':<11} {total['critical']:>8} {total['serious']:>8} {total['moderate']:>8} {total['minor']:>6} "
          f"{sum(map(len, left.values())):>5}  (rules broken, summed over the states; ours: critical or serious "
          "elements not on GRADIO_OWN)")
    for state, items in left.items():
        for item in items:
            print(f"  {state}: {item}")
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
