"""The app in a real browser: Debian's chromium driven by playwright (never `playwright install`).

Uploads an example, waits for the drawn regions, captions a box clicked on the picture, searches a
phrase and aligns a sentence (each picture's text alternative saying which regions it shows), searches
the example collection and opens a found image. Screenshots go
to a temp folder and to $REGIONCAP_SCREENSHOTS if set.
Without /usr/bin/chromium the test is skipped, unless REGIONCAP_REQUIRE_BROWSER=1.
"""

import os
import shutil
import tempfile
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
from test_app import EXAMPLE, ROOT, make_tiny_model, start_app  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        if os.environ.get("REGIONCAP_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing and REGIONCAP_REQUIRE_BROWSER=1")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="regioncap-chromium-")  # a fresh --user-data-dir
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                                                       viewport={"width": 1280, "height": 1000})
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_server():
    """The app with the demo model (assets/demo-model): it finds the example's shapes at the defaults."""
    demo, url = start_app(ROOT / "assets" / "demo-model")
    yield url
    demo.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # REGIONCAP_BROWSER_MODEL=assets/demo-model takes the screenshots with a real model instead.
    model = os.environ.get("REGIONCAP_BROWSER_MODEL") or make_tiny_model(
        tmp_path_factory.mktemp("tiny-model"), data="synthetic scenes (random weights)")
    demo, url = start_app(model)
    yield url
    demo.close()


def shoot(page, name: str, folder: Path) -> None:
    page.screenshot(path=str(folder / name), full_page=True)
    extra = os.environ.get("REGIONCAP_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / name, Path(extra) / name)


def wait_for_image(page, elem_id: str, previous: str | None = None) -> str:
    """The src of the picture shown in component `elem_id`, once there is one (different from `previous`)."""
    img = page.locator(f"#{elem_id} img").first
    img.wait_for(state="visible", timeout=TIMEOUT_MS)
    page.wait_for_function(
        "([id, prev]) => { const i = document.querySelector(`#${id} img`);"
        " return i && i.complete && i.naturalWidth > 0 && i.src !== prev; }",
        arg=[elem_id, previous], timeout=TIMEOUT_MS)
    return img.get_attribute("src")


def table_rows(page, elem_id: str) -> int:
    """Rows of a gr.Dataframe (its grid counts the header row too; the body is virtualised)."""
    count = page.locator(f"#{elem_id} [role=grid]").first.get_attribute("aria-rowcount")
    return int(count or 1) - 1


def test_upload_caption_search_align_in_chromium(server, browser_context, tmp_path):
    page = browser_context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        run_steps(page, server, tmp_path)
    except Exception:
        shoot(page, "failure.png", tmp_path)
        raise
    assert not errors, errors


def run_steps(page, server, tmp_path):
    page.goto(server, timeout=TIMEOUT_MS)
    page.locator("#input-image input[type=file]").wait_for(state="attached", timeout=TIMEOUT_MS)
    page.locator("#model-banner").get_by_text("synthetic scenes").wait_for(timeout=TIMEOUT_MS)

    # A random model scores its detections low: show everything it finds.
    page.locator("#threshold input[type=number]").fill("0")
    page.locator("#threshold input[type=number]").press("Enter")
    page.locator("#threshold input[type=number]").blur()  # now, not on the first click on the picture
    page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLE))
    first = wait_for_image(page, "annotated")
    page.wait_for_function("(Number(document.querySelector('#regions-table [role=grid]')"
                           "?.getAttribute('aria-rowcount')) || 0) > 1", timeout=TIMEOUT_MS)
    detected = table_rows(page, "regions-table")
    assert detected >= 1
    shoot(page, "1-caption.png", tmp_path)

    # Two clicks on the picture caption a box of the user's own.
    picture = page.locator("#annotated img").first
    box = picture.bounding_box()
    picture.click(position={"x": box["width"] * 0.2, "y": box["height"] * 0.2})
    page.locator("#box-note").get_by_text("First corner").wait_for(timeout=TIMEOUT_MS)
    picture.click(position={"x": box["width"] * 0.6, "y": box["height"] * 0.7})
    page.wait_for_function("Number(document.querySelector('#regions-table [role=grid]')"
                           f".getAttribute('aria-rowcount')) === {detected + 2}", timeout=TIMEOUT_MS)
    assert page.locator("#regions-table").get_by_text("your box").count() >= 1
    assert page.locator("#box textarea, #box input").first.input_value().count(",") == 3
    wait_for_image(page, "annotated", first)
    shoot(page, "2-own-box.png", tmp_path)

    page.get_by_role("tab", name="Search").click()
    page.locator("#phrase textarea, #phrase input").first.fill("a blue square")
    page.locator("#phrase textarea, #phrase input").first.press("Enter")
    wait_for_image(page, "search-image")
    assert table_rows(page, "matches") >= 1
    page.wait_for_function("(document.querySelector('#search-image img')?.alt || '').includes(\"match\")",
                           timeout=TIMEOUT_MS)  # the picture says which regions it lights
    alt = page.locator("#search-image img").first.get_attribute("alt")
    assert f" match{'es' if table_rows(page, 'matches') == 1 else ''} 'a blue square': region " in alt, alt
    shoot(page, "3-search.png", tmp_path)

    page.get_by_role("tab", name="Sentence").click()
    page.locator("#sentence textarea, #sentence input").first.fill("a red circle next to a blue square")
    page.locator("#sentence textarea, #sentence input").first.press("Enter")
    wait_for_image(page, "align-image")
    page.wait_for_function("(document.querySelector('#align-image img')?.alt || '')"
                           ".startsWith(\"Each phrase's best region: 'a red circle' is \")", timeout=TIMEOUT_MS)
    page.locator("#align-note").get_by_text("S_kl").wait_for(timeout=TIMEOUT_MS)
    assert page.locator("#aligned-text").get_by_text("a blue square").count() >= 1
    shoot(page, "4-sentence.png", tmp_path)

    page.get_by_role("tab", name="Collection").click()
    page.locator("#collection-query textarea, #collection-query input").first.fill("a red circle next to a blue square")
    page.locator("#collection-query textarea, #collection-query input").first.press("Enter")
    thumbs = page.locator("#collection-gallery img")
    thumbs.first.wait_for(state="visible", timeout=TIMEOUT_MS)
    page.wait_for_function("document.querySelectorAll('#collection-gallery img').length >= 3 && "
                           "[...document.querySelectorAll('#collection-gallery img')].every(i => i.complete && "
                           "i.naturalWidth > 0)", timeout=TIMEOUT_MS)
    assert page.locator("#collection-gallery").get_by_text("S_kl").count() >= 1  # captions name the score
    shoot(page, "5-collection.png", tmp_path)
    before = page.locator("#annotated img").first.get_attribute("src")
    shown = page.locator("#input-image img").first.get_attribute("src")
    thumbs.nth(1).click()  # the second best image opens in the main view, on the Caption tab
    page.locator("#annotated img").first.wait_for(state="visible", timeout=TIMEOUT_MS)
    wait_for_image(page, "annotated", before)
    assert page.locator("#input-image img").first.get_attribute("src") != shown
    shoot(page, "6-opened.png", tmp_path)

    page.get_by_role("tab", name="Model").click()
    page.locator("#model-info").get_by_text("Training data").wait_for(timeout=TIMEOUT_MS)
    shoot(page, "7-model.png", tmp_path)
