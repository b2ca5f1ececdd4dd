"""The served app under hostile input and concurrent users (issue 7).

* the app's handlers turn every bad image / phrase into a gr.Error with a readable message;
* ``python app.py`` (a subprocess on a free loopback port, tiny random model) under a small load test
  (benchmarks/load_test.py: 4 users x 3 requests here, 8 x 10 with ``-m slow``), and one user's bad
  input never touching another user's session;
* the queue bounds how many analyses run at once.
"""

import importlib.util
import json
import re
import os
import sys
import threading
import time
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no calls home
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from appui.settings import DISPLAY_MAX, DISPLAY_MIN  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")
ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def app():
    return _load("app", ROOT / "app.py")


@pytest.fixture(scope="module")
def load_test():
    return _load("load_test", ROOT / "benchmarks" / "load_test.py")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from regioncap.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("load-model"))


@pytest.fixture(scope="module")
def inputs(load_test, tmp_path_factory):
    return load_test.make_inputs(tmp_path_factory.mktemp("load-inputs"))


# -- the handlers, in this process ----------------------------------------------------------------
@pytest.fixture(scope="module")
def handlers(app, model_dir):
    holder = app.ModelHolder(str(model_dir))
    holder.load()
    return app.RegionApp(holder)


def test_bad_images_are_a_readable_gr_error_naming_the_users_file(app, handlers, inputs, tmp_path):
    import gradio as gr

    caption = app.user_errors(handlers.caption)
    _, bad = inputs
    for name, (path, message) in bad.items():
        upload = {"path": str(path), "orig_name": f"holiday-{name}"}  # Gradio's cache copy, the user's name
        with pytest.raises(gr.Error) as info:
            caption(upload, 10, 0.0)
        text = info.value.message
        assert f"holiday-{name}" in text and str(path) not in text, text
        assert "\n" not in text and "Traceback" not in text and "Something went wrong" not in text
        assert re.search(message.split(": ", 1)[-1], text), text


@pytest.mark.parametrize("phrase, message", [
    ("", "empty phrase"), ("\n\t ", "empty phrase"), ("一只红色的圆", "vocabulary"), ("🔴🟦", "vocabulary"),
    ("red " * 2500, "too long"), ("qwzx", "vocabulary")])
def test_bad_phrases_are_a_readable_gr_error(app, handlers, inputs, phrase, message):
    import gradio as gr

    scene = str(inputs[0]["scene.jpg"])
    with pytest.raises(gr.Error, match=message):
        app.user_errors(handlers.query)(phrase, 3, scene, 10, 0.0, None)
    with pytest.raises(gr.Error, match="empty|phrase|too long|knows"):
        app.user_errors(handlers.align)(phrase * 3 if "too long" in message else phrase, scene, 10, 0.0, None)


def test_odd_but_legal_images_are_answered_in_their_own_pixels(app, handlers, tmp_path):
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (60, 30), (200, 30, 30)).save(rotated, exif=exif.tobytes())
    cases = {rotated: (30, 60)}
    for size in ((1, 1), (5, 5), (1, 300), (4000, 3000)):
        path = tmp_path / f"{size[0]}x{size[1]}.png"
        Image.new("RGB", size, (30, 30, 200)).save(path)
        cases[path] = size
    for path, (w, h) in cases.items():
        picture, table, json_path, view = app.user_errors(handlers.caption)(str(path), 10, 0.0)
        data = json.loads(Path(json_path).read_text())
        assert (data["width"], data["height"]) == (w, h) and len(table) == len(data["regions"])
        assert all(0 <= r["box"][0] < r["box"][2] <= w and 0 <= r["box"][1] < r["box"][3] <= h
                   for r in data["regions"])
        with Image.open(picture) as im:
            assert max(im.size) >= min(max(w, h), DISPLAY_MIN) and max(im.size) <= DISPLAY_MAX


def test_a_pinned_revision_reaches_every_hub_call_of_the_app(app, model_dir, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append(kwargs.get("revision"))
        return str(model_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("REGIONCAP_MODEL_REVISION", "0123abc")
    holder = app.ModelHolder("someone/regioncap-tiny")
    holder.load()
    assert holder.model is not None, holder.error
    assert calls and calls == ["0123abc"] * len(calls), f"a Hub call without the pinned revision: {calls}"


# -- python app.py under load ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(load_test, model_dir, tmp_path_factory):
    server = load_test.Server(model_dir, tmp_path_factory.mktemp("served"))
    try:
        server.wait()
        yield server
    finally:
        server.stop()
        assert "Traceback" not in server.log.read_text(errors="replace"), server.log.read_text()[-3000:]


def test_small_load_test_every_request_answered_as_expected(load_test, served, model_dir, capsys):
    report = load_test.run(users=4, requests=3, model=str(model_dir), url=served.url, timeout=120)
    load_test.print_report(report)
    assert report["sent"] == report["answered"] == 12 and report["lost"] == report["wrong"] == 0, report["failures"]
    assert report["good_correct"] == report["good"] > 0 and report["bad_refused"] == report["bad"] > 0
    assert report["server_alive_after"] and report["good_request_after"] and report["oversized_upload_413"]
    assert served.proc.poll() is None


def test_one_users_bad_input_never_touches_another_users_session(load_test, served, inputs, model_dir):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from regioncap.data.image import load_image
    from regioncap.models.model import RegionCaptioner

    good, bad = inputs
    scene = good["scene.jpg"]
    expected = [r.caption for r, _ in RegionCaptioner.from_pretrained(model_dir).analyze(
        load_image(scene), max_regions=10, score_threshold=0.0).query("a red circle", top_k=3)]

    def user():
        return Client(served.url, verbose=False, analytics_enabled=False, download_files=str(scene.parent / "dl"))

    alice, bob = user(), user()
    alice.predict(handle_file(str(scene)), 10, 0.0, api_name="/caption")
    with pytest.raises(AppError, match="not an image"):
        bob.predict(handle_file(str(bad["notes.jpg"][0])), 10, 0.0, api_name="/caption")
    with pytest.raises(AppError, match="No image yet"):  # bob's failed upload left him no image...
        bob.predict("a red circle", 3, api_name="/query")
    _, matches = alice.predict("a red circle", 3, api_name="/query")  # ...and alice still has hers
    assert [row[2] for row in matches["data"]] == expected
    with pytest.raises(AppError, match="too large"):  # alice's own bad upload keeps her last good image
        alice.predict(handle_file(str(bad["huge.png"][0])), 10, 0.0, api_name="/caption")
    _, matches = alice.predict("a red circle", 3, api_name="/query")
    assert [row[2] for row in matches["data"]] == expected


@pytest.mark.slow
def test_full_load_test_8_users_x_10_requests(load_test):
    report = load_test.run(users=8, requests=10, timeout=300)  # its own `python app.py`
    load_test.print_report(report)
    assert report["ok"], report["failures"]
    assert report["answered"] == 80 and report["lost"] == report["wrong"] == 0


# -- the queue ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def counted(app, model_dir):
    """The app served in this process, every analysis counted and held for 0.3 s."""
    state = {"active": 0, "peak": 0}
    lock = threading.Lock()
    real = app.RegionApp.analyze

    def counting(self, *args, **kwargs):
        with lock:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
        try:
            time.sleep(0.3)
            return real(self, *args, **kwargs)
        finally:
            with lock:
                state["active"] -= 1

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(app.RegionApp, "analyze", counting)
        demo = app.build_app(str(model_dir), examples=[])
        port = _load("load_test", ROOT / "benchmarks" / "load_test.py").free_port()
        app.serve(demo, server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{port}/", state
        finally:
            demo.close()


def _burst(url, calls):
    from gradio_client import Client

    client = Client(url, verbose=False, analytics_enabled=False)
    jobs = [client.submit(*args, api_name=name) for name, args in calls]
    return [job.result(timeout=120) for job in jobs]


def test_the_queue_bounds_concurrent_analyses_per_endpoint(counted, inputs):
    from gradio_client import handle_file

    url, state = counted
    state["peak"] = 0
    scene = handle_file(str(inputs[0]["scene.jpg"]))
    answers = _burst(url, [("/caption", (scene, 10, 0.0))] * 10)
    assert len(answers) == 10 and 2 <= state["peak"] <= 4  # default_concurrency_limit=4, and it does run in parallel


def test_the_queue_bounds_concurrent_analyses_across_endpoints(counted, inputs):
    from gradio_client import handle_file

    url, state = counted
    state["peak"] = 0
    scene = handle_file(str(inputs[0]["scene.jpg"]))
    calls = [("/caption", (scene, 10, 0.0)), ("/query", ("a red circle", 3, scene, 10, 0.0)),
             ("/align", ("a red circle", scene, 10, 0.0))] * 4
    assert len(_burst(url, calls)) == 12
    assert 2 <= state["peak"] <= 4, f"{state['peak']} analyses ran at once: the model's events share one limit of 4"
