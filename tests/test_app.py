"""The Gradio app (app.py) served in-process with a tiny random model and driven through gradio_client."""

import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no calls home
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from appui.handlers import RegionApp  # noqa: E402
from appui.inputs import parse_box  # noqa: E402
from appui.model import ModelHolder  # noqa: E402
from appui.settings import DISPLAY_MAX, DISPLAY_MIN  # noqa: E402
from appui.view import View, canvas  # noqa: E402
from regioncap import testing  # noqa: E402
from regioncap.errors import RegionCapError  # noqa: E402
from regioncap.narrate import reading_order  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # gradio's own pandas calls
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "assets" / "examples" / "shapes-grey.jpg"
DOWNLOADS = tempfile.mkdtemp(prefix="regioncap-client-")  # gradio_client's copies of the outputs


def load_app():
    """app.py as a module, wherever pytest is started from."""
    if "app" in sys.modules:
        return sys.modules["app"]
    spec = importlib.util.spec_from_file_location("app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
    return module


def make_tiny_model(directory: Path, data: str = "none (random weights, for tests)") -> Path:
    """regioncap.testing's tiny random model (the load test's too), saved to ``directory``."""
    return testing.make_tiny_model(directory, data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(model_dir):
    """(demo, url): the app served in this process on a free port, with the queue settings of `python app.py`."""
    app = load_app()
    demo = app.build_app(str(model_dir))
    port = free_port()
    app.serve(demo, server_port=port, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def server(tiny_model):
    demo, url = start_app(tiny_model)
    yield url
    demo.close()


def client(url):
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False, download_files=DOWNLOADS)


def caption(c, path=EXAMPLE, max_regions=10, threshold=0.0):
    from gradio_client import handle_file

    return c.predict(handle_file(str(path)), max_regions, threshold, api_name="/caption")


def test_caption_returns_an_annotated_image_a_table_and_json(server):
    c = client(server)
    image_path, table, json_path = caption(c)
    with Image.open(image_path) as im:
        im.load()
        assert max(im.size) == DISPLAY_MIN  # the 224x185 example is drawn enlarged: legible labels
    assert table["headers"][:3] == ["#", "caption", "entity type"]
    data = json.loads(Path(json_path).read_text())
    assert {"image", "model", "width", "height", "description", "regions", "timings_ms"} <= set(data)
    assert data["image"] == EXAMPLE.name and (data["width"], data["height"]) == Image.open(EXAMPLE).size
    assert 0 < len(data["regions"]) <= 10 and len(table["data"]) == len(data["regions"])
    # the table numbers the regions in reading order; the JSON keeps the model's order
    order = reading_order([r["box"] for r in data["regions"]], data["width"], data["height"])
    assert [row[0] for row in table["data"]] == list(range(1, len(order) + 1))
    for row, i in zip(table["data"], order):
        region = data["regions"][i]
        assert row[1] == region["caption"] and row[2] == region["label"]
        assert row[5] == ", ".join(str(round(v)) for v in region["box"])
    _, table, _ = caption(c, max_regions=2)
    assert len(table["data"]) <= 2


def test_query_reuses_the_session_and_matches_caption_regions(server):
    from gradio_client import handle_file

    c = client(server)
    _, table, _ = caption(c)
    boxes = {row[5] for row in table["data"]}
    image_path, matches = c.predict("a red circle", 3, api_name="/query")  # no image: the session's one
    assert Path(image_path).is_file() and 1 <= len(matches["data"]) <= 3
    assert {row[4] for row in matches["data"]} <= boxes
    sims = [row[3] for row in matches["data"]]
    assert sims == sorted(sims, reverse=True)
    assert all(table["data"][row[1] - 1][5] == row[4] for row in matches["data"])  # "region #" = table row
    fresh = client(server)  # a new session passes the image itself
    _, standalone = fresh.predict("a red circle", 3, handle_file(str(EXAMPLE)), 10, 0.0, api_name="/query")
    assert standalone["data"] == matches["data"]


def test_user_box_and_sentence_alignment(server):
    c = client(server)
    _, table, _ = caption(c)
    _, with_box, json_path = c.predict("10, 20, 120, 90", api_name="/caption_box")
    assert len(with_box["data"]) == len(table["data"]) + 1
    assert [row[5] for row in with_box["data"] if row[2] == "your box"] == ["10, 20, 120, 90"]
    assert json.loads(Path(json_path).read_text())["regions"][-1]["label"] == "user"
    image_path, highlighted, summary = c.predict("a red circle next to a blue square", api_name="/align")
    assert Path(image_path).is_file() and "S_kl" in summary
    tagged = [(t["token"], t["class_or_confidence"]) for t in highlighted if t["class_or_confidence"]]
    assert tagged == [("a red circle", "1"), ("a blue square", "2")]
    _, highlighted, _ = c.predict("A zebra near a Red Circle.", api_name="/align")  # "a zebra": no known word
    assert [t["token"] for t in highlighted if t["class_or_confidence"]] == ["a Red Circle"]


def test_box_parsing_and_display_size():
    assert parse_box("[120, 90, 10.5, 20]", 200, 100) == [10.5, 20, 120, 90]  # any corner order
    with pytest.raises(RegionCapError, match="four numbers.*200x100"):
        parse_box("10 20 30", 200, 100)
    assert canvas(Image.new("RGB", (4000, 1000)))[1] == DISPLAY_MAX / 4000
    assert canvas(Image.new("RGB", (1000, 1100)))[1] == 1.0


def test_bad_input_gives_a_readable_error_and_the_app_keeps_serving(server, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    c = client(server)
    with pytest.raises(AppError, match="No image yet"):
        c.predict("a red circle", 3, api_name="/query")
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is not a picture")
    with pytest.raises(AppError, match="notes.jpg: not an image"):
        caption(c, not_image)
    huge = tmp_path / "huge.png"
    Image.new("1", (8000, 6000)).save(huge)  # 48 Mpixel, a few kB on disk
    with pytest.raises(AppError, match="too large"):
        caption(c, huge)
    big_file = tmp_path / "big.jpg"
    big_file.write_bytes(b"\xff\xd8" + os.urandom(21 * 1024 * 1024))  # over the app's 20 MB upload limit
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # gradio_client checks first...
        caption(c, big_file)
    import httpx  # ...and the server refuses it too

    with big_file.open("rb") as f:
        answer = httpx.post(f"{server}gradio_api/upload", files={"files": ("big.jpg", f, "image/jpeg")}, timeout=30)
    assert answer.status_code == 413 and "maximum allowed size" in answer.text
    caption(c)
    for phrase, message in [("", "empty phrase"), ("qwzx vbnm", "vocabulary"), ("word " * 100, "too long")]:
        with pytest.raises(AppError, match=message):
            c.predict(phrase, 3, api_name="/query")
    with pytest.raises(AppError, match="four numbers"):
        c.predict("1, 2, 3", api_name="/caption_box")
    with pytest.raises(AppError, match="empty"):
        c.predict("", api_name="/align")
    with pytest.raises(AppError, match="No image"):
        c.predict(None, 10, 0.0, api_name="/caption")
    _, matches = c.predict("a red circle", 3, handle_file(str(EXAMPLE)), 10, 0.0, api_name="/query")
    assert matches["data"]  # still serving


def test_concurrent_identical_requests_all_get_complete_identical_images(server):
    """DESIGN.md section 6: with Gradio writing identical output images into its cache at the same
    moment, a plain "return the PIL image" app lost about 1 request in 40 to a truncated file under
    8 concurrent gradio_client users, in about half of the runs. Here 8 users (each its own client,
    session and download folder) send the same request in 8 rounds: 64 answers, each must arrive,
    decode whole and be byte-for-byte the same file (same input, same model, same picture)."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    users = [Client(server, verbose=False, analytics_enabled=False, httpx_kwargs={"timeout": 120},  # a busy CI
                    download_files=tempfile.mkdtemp(prefix="regioncap-user-")) for _ in range(8)]

    def caption(user):
        path = user.predict(handle_file(str(EXAMPLE)), 10, 0.0, api_name="/caption")[0]
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # a truncated file fails here
        return data

    with ThreadPoolExecutor(len(users)) as pool:
        answers = [data for _ in range(8) for data in pool.map(caption, users)]
    assert len(answers) == 64
    assert len(set(answers)) == 1, f"{len(set(answers))} different files for one request"


def test_model_panel_describes_the_model_or_the_failure(tiny_model, tmp_path):
    holder = ModelHolder(str(tiny_model))
    holder.load()
    banner, text, curves = RegionApp(holder).model_panel()
    assert not banner.visible and str(tiny_model) in text and "random weights, for tests" in text
    assert not curves.visible  # the tiny model has no loss_curves.png
    assert "vocabulary" in text and "shapes world" not in text  # the note is for models trained on shapes
    holder = ModelHolder(str(make_tiny_model(tmp_path / "shapes", data="synthetic scenes, seed 0")))
    holder.load()
    Image.new("RGB", (40, 30)).save(tmp_path / "shapes" / "loss_curves.png")
    banner, text, curves = RegionApp(holder).model_panel()
    assert banner.visible and "only on synthetic scenes" in banner.value and "circle = people" in text
    assert curves.visible and Path(curves.value["path"]).name == "loss_curves.png" and "loss" in curves.alt_text
    holder = ModelHolder(str(tmp_path / "missing"))
    holder.load()
    banner, text, curves = RegionApp(holder).model_panel()
    assert banner.visible and "No model loaded" in text and "missing" in text and not curves.visible


# `python app.py` with the model's loading held until a gate file exists: the page must be served while
# the model is still loading (startup time itself is measured by benchmarks/bench_startup.py).
HELD_APP = """
import os, runpy, sys, time
from appui.model import ModelHolder

load = ModelHolder.load

def held(self):
    while not os.path.exists(os.environ["REGIONCAP_TEST_GATE"]):
        time.sleep(0.05)
    load(self)

ModelHolder.load = held
sys.argv = ["app.py"]
runpy.run_path("app.py", run_name="__main__")
"""


def test_python_app_py_answers_while_the_model_loads_and_explains_a_missing_model(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client.exceptions import AppError

    port, gate = free_port(), tmp_path / "gate"
    env = {**os.environ, "REGIONCAP_MODEL": str(tmp_path / "no-such-model"), "GRADIO_SERVER_PORT": str(port),
           "REGIONCAP_TEST_GATE": str(gate)}
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen([sys.executable, "-c", HELD_APP], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        while True:  # no deadline: how long the import takes is the benchmark's business (pytest-timeout: hangs)
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.2)
        assert not gate.exists()  # so the model is still loading: the page did not wait for it
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(caption, client(url))  # a request made while the model loads waits for it
            time.sleep(1)
            assert not pending.done()
            gate.touch()
            with pytest.raises(AppError, match="No model is loaded.*no-such-model"):
                pending.result()
        with pytest.raises(AppError, match="No model is loaded.*no-such-model"):
            caption(client(url))
        urllib.request.urlopen(url, timeout=5)  # still serving
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert "Traceback" not in output


def test_search_endpoint_ranks_the_example_collection(server):
    c = client(server)
    gallery, results = c.predict("a red circle next to a blue square", 3, api_name="/search")
    examples = load_app().example_images()
    assert results["collection"] == f"the example images ({len(examples)} photos)"
    assert len(gallery) == len(results["results"]) == 3
    assert {r["name"] for r in results["results"]} <= {Path(e).name for e in examples}
    scores = [r["score"] for r in results["results"]]
    assert scores == sorted(scores, reverse=True)
    assert [m["phrase"] for m in results["results"][0]["matches"]] == ["a red circle", "a blue square"]
    for item, result in zip(gallery, results["results"]):
        assert Path(item["image"]).is_file() and item["caption"].startswith(result["name"])
    from gradio_client.exceptions import AppError

    for text, message in [("", "empty"), ("qwzx vbnm", "knows"), ("word " * 300, "too long")]:
        with pytest.raises(AppError, match=message):
            c.predict(text, 3, api_name="/search")


class NoProgress:
    """gr.Progress outside a request."""

    def __call__(self, *args, **kwargs):
        pass

    def tqdm(self, iterable, **kwargs):
        return iterable


def test_visitor_collections_are_bounded_and_searched_before_the_shared_one(tiny_model, tmp_path):
    app = load_app()
    holder = ModelHolder(str(tiny_model))
    holder.load()
    region_app = RegionApp(holder)
    region_app.open_collection(app.example_images()[:2])
    sessions = region_app.sessions()
    sessions.max_photos = 3
    own = [tmp_path / f"own-{i}.png" for i in range(4)]
    for i, path in enumerate(own):
        Image.new("RGB", (64, 48), (40 * i, 90, 200 - 40 * i)).save(path)
    request = type("Request", (), {"session_hash": "visitor-1"})()
    gallery, results, paths = region_app.search_collection("a red circle", 5, request)
    assert results["collection"] == "the example images (2 photos)" and len(paths) == 2
    note = region_app.add_photos([str(p) for p in own], request, progress=NoProgress())
    assert "Your collection: 3 photos" in note  # one left out: the collection is full
    gallery, results, paths = region_app.search_collection("a red circle", 5, request)
    assert results["collection"] == "your 3 photos" and sorted(paths) == sorted(str(p) for p in own[:3])
    other = type("Request", (), {"session_hash": "visitor-2"})()
    assert region_app.search_collection("a red circle", 5, other)[1]["collection"].startswith("the example")
    region_app.drop_session(request)  # the tab closed: the collection is freed
    assert len(sessions) == 0 and region_app.search_collection("a red circle", 5, request)[1]["collection"] \
        .startswith("the example")


def test_a_collection_dropped_right_after_its_upload_is_told_not_a_crash(tiny_model, tmp_path):
    """Another request (the tab closing, another visitor's upload evicting it) may drop the collection between
    the add and the note."""
    load_app()
    holder = ModelHolder(str(tiny_model))
    holder.load()
    region_app = RegionApp(holder)
    region_app.open_collection([])
    sessions = region_app.sessions()
    photo = tmp_path / "own.png"
    Image.new("RGB", (64, 48), (200, 90, 40)).save(photo)
    add = sessions.add

    def add_then_dropped(session, *args, **kwargs):
        counts = add(session, *args, **kwargs)
        sessions.drop(session)
        return counts

    sessions.add = add_then_dropped
    request = type("Request", (), {"session_hash": "visitor-1"})()
    note = region_app.add_photos([str(photo)], request, progress=NoProgress())
    assert "Your collection was closed meanwhile" in note and len(sessions) == 0


def test_weak_matches_are_not_listed_and_a_bad_box_keeps_the_results(tiny_model, tmp_path):
    app = load_app()
    holder = ModelHolder(str(tiny_model))
    holder.load()
    region_app = RegionApp(holder)
    view = region_app.analyze(str(EXAMPLE), 10, 0.0)
    _, rows, note = region_app.query_outputs(view, "a red circle", 3)
    found = view.result.query("a red circle", top_k=3)
    assert len(rows) == sum(sim >= 0 for _, sim in found)  # uncalibrated: a negative similarity is no match
    (tiny_model / "calibration.json").write_text(json.dumps({"match_threshold": 1.5}))
    try:
        assert region_app.match_threshold() == 0.0  # read once per loaded model, not per request
        reloaded = ModelHolder(str(tiny_model))
        reloaded.load()
        calibrated = RegionApp(reloaded)
        assert calibrated.match_threshold() == 1.5
        view = calibrated.analyze(str(EXAMPLE), 10, 0.0)
        picture, rows, note = calibrated.query_outputs(view, "a red circle", 3)
    finally:
        (tiny_model / "calibration.json").unlink()
    assert rows == [] and "No region matches this phrase well" in note and "1.50" in note
    assert picture.alt_text == "No region matches 'a red circle' well; the picture is shown dimmed."
    out = region_app.caption_box_ui("1, 2, 3", None, 10, 0.0, view, progress=NoProgress())
    assert out[:3] == (app.gr.skip(),) * 3 and out[3] is view and "four numbers" in out[4]


def test_candidate_table_lists_each_regions_candidates_chosen_first(tiny_model):
    from regioncap import RegionCaptioner

    model = RegionCaptioner.from_pretrained(str(tiny_model))
    boxes = [[10, 10, 60, 60], [0, 20, 120, 90]]
    plain = model.analyze(EXAMPLE, boxes=boxes)
    view = View(str(EXAMPLE), EXAMPLE.name, (10, 0.0), plain, Image.new("RGB", (8, 8)), 1.0)
    assert RegionApp(None).candidate_rows(view) == [] and RegionApp(None).candidate_rows(None) == []
    model.config.captioner.rerank_weight = 2.0
    result = model.analyze(EXAMPLE, boxes=boxes)
    view = View(str(EXAMPLE), EXAMPLE.name, (10, 0.0), result, Image.new("RGB", (8, 8)), 1.0)
    rows = RegionApp(None).candidate_rows(view)
    assert len(rows) == sum(len(c) for c in result.candidates) >= 2
    for region in result.regions:
        mine = [r for r in rows if r[0] == view.numbers()[id(region)]]
        assert mine[0][1] == region.caption and mine[0][6] == "✓" and all(r[6] == "" for r in mine[1:])
        assert mine[0][5] == round(region.caption_score, 3) and all(r[4] == "" for r in mine)  # no group here
    # a box made up of two detected objects: the objects' similarity is listed
    found = model.analyze(EXAMPLE, boxes=[[10, 10, 40, 60], [50, 10, 90, 60]], captions=False)
    for r in found.regions:  # stand-ins for two confident detections
        r.label, r.score = "people", 0.9
    model.config.captioner.group_weight = 5.0
    grouped = model.analyze(EXAMPLE, boxes=[[10, 10, 90, 60]], objects=found)
    rows = RegionApp(None).candidate_rows(View(str(EXAMPLE), EXAMPLE.name, (10, 0.0), grouped,
                                               Image.new("RGB", (8, 8)), 1.0))
    assert rows and all(isinstance(r[4], float) for r in rows) and rows[0][1] == grouped.regions[0].caption


def test_regioncap_index_names_the_shared_collection(tiny_model, tmp_path, monkeypatch):
    from regioncap import RegionCaptioner
    from regioncap.index import RegionIndex

    with RegionIndex(tmp_path / "index", RegionCaptioner.from_pretrained(tiny_model), score_threshold=0.0) as index:
        index.add([EXAMPLE])
    monkeypatch.setenv("REGIONCAP_INDEX", str(tmp_path / "index"))
    holder = ModelHolder(str(tiny_model))
    holder.load()
    region_app = RegionApp(holder)
    region_app.open_collection([])
    _, results, paths = region_app.search_collection("a red circle", 3, None)
    assert results["collection"] == f"{tmp_path / 'index'} (1 photo)" and paths == [str(EXAMPLE)]
    region_app.sessions().shared.close()
    other = make_tiny_model(tmp_path / "other", data="another model")
    holder = ModelHolder(str(other))
    holder.load()
    holder.model.load_state_dict({k: v + 1 for k, v in holder.model.state_dict().items()})  # other weights
    region_app = RegionApp(holder)
    region_app.open_collection([])
    with pytest.raises(RegionCapError, match="built by the model"):
        region_app.search_collection("a red circle", 3, None)


def test_a_box_around_two_detected_objects_of_one_shape_is_captioned_with_their_help():
    """The app hands add_box the photo's regions as objects: with the demo model (group_weight set), a box
    around the example's two squares is "two squares", chosen with the squares' similarity."""
    from types import SimpleNamespace

    from regioncap import RegionCaptioner

    model = RegionCaptioner.from_pretrained(str(ROOT / "assets" / "demo-model"))
    assert model.config.captioner.group_weight > 0
    result = model.analyze(EXAMPLE, max_regions=10, score_threshold=0.5)
    squares = [r for r in result.regions if r.caption.endswith(" square")]
    assert len(squares) == 2  # the example holds a small blue and a large black square
    a, b = squares[0].box, squares[1].box
    box = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
    view = View(str(EXAMPLE), EXAMPLE.name, (10, 0.5), result, Image.new("RGB", (8, 8)), 1.0)
    added = RegionApp(SimpleNamespace(get=lambda: model)).add_box(view, box)
    mine = added.result.regions[-1]
    assert mine.label == "user" and "squares" in mine.caption.split()
    cands = added.result.candidates[-1]
    assert cands[0].caption == mine.caption and all(c.member_similarity is not None for c in cands)
    rows = [r for r in RegionApp(None).candidate_rows(added) if r[0] == added.numbers()[id(mine)]]
    assert rows[0][1] == mine.caption and rows[0][6] == "✓" and isinstance(rows[0][4], float)
    # without the photo's regions (a box captioned alone) nothing tells the squares apart from the box
    assert model.analyze(EXAMPLE, boxes=[box]).candidates == [[]]


def hand_view(regions, width=300, height=200) -> View:
    """A View of a hand-made result (no model): ``regions`` as (box, caption, label)."""
    from regioncap.models.results import AnalysisResult, Region

    made = [Region(list(box), caption, 0.9, -1.0, label) for box, caption, label in regions]
    result = AnalysisResult(made, None, None, width, height, {}, None)
    return View("scene.png", "scene.png", (10, 0.5), result, Image.new("RGB", (width, height)), 1.0)


SCENE = [([200, 10, 290, 60], "a red circle", "people"),  # top right; first in the model's order
         ([10, 140, 60, 190], "a blue square", "vehicles"),  # bottom left
         ([20, 20, 80, 60], "a green star", "animals")]  # top left


def test_caption_picture_speaks_the_narration_and_the_regions_are_buttons_in_reading_order():
    from types import SimpleNamespace

    from appui.narration import explorer_html
    from regioncap.narrate import region_label

    view = hand_view(SCENE)
    picture, rows, json_path = RegionApp(SimpleNamespace(path="m")).caption_outputs(view)
    narration = view.result.describe()
    assert Path(picture).is_file() and narration.startswith("Three regions: a green star, a red circle")
    assert [(row[0], row[1]) for row in rows] == [(1, "a green star"), (2, "a red circle"), (3, "a blue square")]
    assert json.loads(Path(json_path).read_text())["description"] == narration
    alt, description, explorer, box = RegionApp(None).narration_outputs(view)
    assert alt["alt_text"] == narration and narration in description and "300 × 200 pixels" in box["info"]
    assert explorer == explorer_html(view)
    names = [region_label(k + 1, 3, view.result.regions[i], 300, 200) for k, i in enumerate([2, 0, 1])]
    assert names[0] == "Region 1 of 3, at the top left: a green star"
    buttons = [part.split(">")[1].split("<")[0] for part in explorer.split("<button")[1:]]
    assert buttons == names
    assert 'data-box="6.67,10.00,20.00,20.00"' in explorer  # the star's box in percent: left, top, width, height
    empty = RegionApp(None).narration_outputs(None)
    assert empty[0]["alt_text"] is None and "Upload a picture" in empty[1] and empty[2] == ""


def test_search_and_alignment_pictures_say_which_regions_they_show():
    from appui.narration import alignment_alt, matches_alt
    from regioncap.models.results import PhraseAlignment

    view = hand_view(SCENE)
    circle, square, star = view.result.regions
    assert matches_alt(view, "a shape", [(star, 0.8), (square, 0.6)]) == (
        "2 regions match 'a shape': region 1, a green star at the top left; region 3, a blue square at the "
        "bottom left.")
    assert matches_alt(view, "a circle", [(circle, 0.9)]).startswith("1 region matches 'a circle': region 2, a red")
    assert matches_alt(view, "a cat", []) == "No region matches 'a cat' well; the picture is shown dimmed."
    alignment = [PhraseAlignment("a red circle", 0, circle, 0.9), PhraseAlignment("the sky", None, None, 0.2)]
    assert alignment_alt(view, alignment) == ("Each phrase's best region: 'a red circle' is region 2, a red circle "
                                              "at the top right; 'the sky' is the whole picture.")


def test_phrase_matching_is_one_helper_with_one_threshold_and_one_wording():
    from types import SimpleNamespace

    from appui.matching import phrase_matches

    view = hand_view(SCENE)
    circle, square, star = view.result.regions
    result = SimpleNamespace(query=lambda phrase, top_k: [(circle, 0.7), (star, 0.4), (square, 0.1)][:top_k])
    found = phrase_matches(result, "  a red circle ", 3, 0.5)
    assert found.phrase == "a red circle" and found.matches == [(circle, 0.7)] and found.note == ""
    none = phrase_matches(result, "a red circle", 2, 0.9)
    assert none.matches == [] and none.note.startswith("*No region matches this phrase well: the best "
                                                       "similarity is 0.70, below 0.90*")
    with pytest.raises(RegionCapError, match="too long for a phrase"):
        phrase_matches(result, "word " * 60, 3, 0.5)


def test_a_part_of_the_picture_chosen_by_words_fills_the_box_field():
    view = hand_view(SCENE)
    assert RegionApp(None).box_for_part("the top left quarter", view) == "0, 0, 150, 100"
    assert RegionApp(None).box_for_part("the middle", view) == "75, 50, 225, 150"
    assert RegionApp(None).box_for_part("the top left quarter", None) == load_app().gr.skip()
