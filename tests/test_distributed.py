"""regioncap.index.distributed: ``index --ray`` gives the index one process gives; a killed driver is
completed by a re-run; without Ray, one line says how to install it.

One local Ray (2 CPUs) serves the module; the CLI runs in subprocesses join it by its address.
"""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEXTS, tiny_config
from test_cli import run_main, scene_files
from test_index import scene

from regioncap.errors import RegionCapError
from regioncap.index import RegionIndex
from regioncap.index.distributed import index_with_ray
from regioncap.models.model import RegionCaptioner

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"max_regions": 4, "score_threshold": 0.0}


@pytest.fixture(scope="module")
def cluster():
    """The address of a local Ray started once for the module."""
    ray = pytest.importorskip("ray")
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                       object_store_memory=256 * 2**20)
    yield context.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model saved to a folder, so that the actors can load it by name."""
    from regioncap.data.vocab import Vocabulary

    vocab = Vocabulary.build(TEXTS)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "tiny-model"
    RegionCaptioner(tiny_config(len(vocab)), vocab).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """40 pictures, one of them again under another name, and a file that is no picture."""
    folder = tmp_path_factory.mktemp("photos")
    files = scene_files(folder, 40)
    shutil.copy(files[7], folder / "copy-of-7.png")
    (folder / "notes.jpg").write_text("not a picture")
    return folder


def points(index) -> dict:
    """hash -> (payload, multivector [1 + N, D]) of every image."""
    digests = [image["hash"] for image in index.images()]
    return index.store.get_images(digests, ["hash", "paths", "width", "height", "regions", "max_regions",
                                            "threshold"])


def assert_same_points(index, expected_index) -> dict:
    """The same images (ids, payloads; floats within 1e-5) with the same vectors (within 1e-5) and rows."""
    expected, got = points(expected_index), points(index)
    assert sorted(got) == sorted(expected)
    for digest, (payload, vectors) in expected.items():
        (shape, numbers), (shape_got, numbers_got) = split(payload), split(got[digest][0])
        assert shape_got == shape  # paths, size, captions, labels, settings
        np.testing.assert_allclose(numbers_got, numbers, rtol=0, atol=1e-5)  # boxes, scores: 1 thread or 2
        assert got[digest][1].shape == vectors.shape and vectors.shape[0] >= 1
        np.testing.assert_allclose(got[digest][1], vectors, rtol=0, atol=1e-5)
    assert index.store.count_regions() == expected_index.store.count_regions() == sum(
        len(v) for _, v in expected.values())
    return got


def split(data):
    """(data with every float replaced by None, the floats in order)."""
    numbers = []

    def walk(x):
        if isinstance(x, float):
            numbers.append(x)
            return None
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(data), numbers


def test_ray_gives_the_points_and_search_results_of_one_process(cluster, model_dir, photos, tmp_path):
    model = RegionCaptioner.from_pretrained(model_dir)
    with RegionIndex(tmp_path / "one", model, **SETTINGS) as one, RegionIndex(tmp_path / "ray", model,
                                                                              **SETTINGS) as ray_index:
        counts_one = one.add([photos])
        counts_ray = index_with_ray(ray_index, [photos])
        assert counts_ray == counts_one
        assert (counts_ray["added"], len(ray_index)) == (41, 40)  # the copy: a second path of one image
        assert [f["path"] for f in counts_ray["failed"]] == [str((photos / "notes.jpg").resolve())]
        assert "not an image" in counts_ray["failed"][0]["error"]

        got = assert_same_points(ray_index, one)
        assert len(got) == 40 and any(len(p["paths"]) == 2 for p, _ in got.values())

        for text, by in [("a large red circle next to the small blue square", "images"),
                         ("a green striped triangle", "images"), ("a red circle", "regions"),
                         ("the dotted square", "regions")]:
            a, b = one.search(text, by=by, top_k=10), ray_index.search(text, by=by, top_k=10)
            (shape_a, numbers_a), (shape_b, numbers_b) = (split([h.to_dict() for h in hits]) for hits in (a, b))
            assert shape_b == shape_a and len(a) == 10  # paths, phrases, captions, order
            np.testing.assert_allclose(numbers_b, numbers_a, rtol=0, atol=1e-5)  # scores, similarities, boxes

        again = index_with_ray(ray_index, [photos])  # nothing to analyse: no Ray job at all
        assert (again["added"], again["updated"], again["unchanged"]) == (0, 0, 41)


def test_ray_writes_a_server_index_as_one_process_does(cluster, model_dir, tmp_path):
    from qdrant_client import QdrantClient

    files = scene_files(tmp_path / "photos", 6)
    model = RegionCaptioner.from_pretrained(model_dir)
    server = QdrantClient(":memory:")  # qdrant-client's in-process mode plays the server, as in test_index
    try:
        with RegionIndex(server, model, prefix="one", **SETTINGS) as one, RegionIndex(server, model, prefix="ray",
                                                                                      **SETTINGS) as ray_index:
            assert index_with_ray(ray_index, [tmp_path / "photos"]) == one.add([tmp_path / "photos"])
            assert len(assert_same_points(ray_index, one)) == len(files)
    finally:
        server.close()


def descendants() -> list[tuple[int, str]]:
    """(pid, command line) of every process below this one (the local Ray's raylet and its workers)."""
    rows = [line.split(None, 2) for line in subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True,
                                                           text=True, check=True).stdout.splitlines()]
    mine, found = {os.getpid()}, []
    while True:
        new = [(int(r[0]), r[2] if len(r) > 2 else "") for r in rows if int(r[1]) in mine and int(r[0]) not in mine]
        if not new:
            return found
        mine.update(pid for pid, _ in new)
        found += new


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (user + system), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_actor(window: float = 0.3, tries: int = 50) -> tuple[int, float] | None:
    """(pid, CPU seconds in ``window``) of an analysing actor of the pool that is working right now (its CPU
    time grows: a batch in progress, not an actor waiting for one), or None when none is."""
    for _ in range(tries):
        actors = [pid for pid, command in descendants() if "MapWorker(MapBatches(Analyzer))" in command]
        before = {pid: cpu_seconds(pid) for pid in actors}
        time.sleep(window)
        used = {pid: cpu_seconds(pid) - t for pid, t in before.items() if os.path.exists(f"/proc/{pid}")}
        if used and max(used.values()) >= window / 3:
            pid = max(used, key=used.get)
            return pid, used[pid]
    return None


def test_a_busy_actor_killed_mid_run_is_replaced_and_the_index_completes(cluster, model_dir, tmp_path):
    """An actor killed while it analyses a batch (its CPU time growing, after the first results came back):
    Ray Data restarts it and runs its batch again; the index is complete, every image once."""
    files = scene_files(tmp_path / "photos", 40) + [scene(tmp_path / "photos" / f"big-{k}.png", 100 + k,
                                                          (640, 480)) for k in range(20)]
    killed = []

    def progress(records):  # once the first analysed image is written, SIGKILL an actor that is at work
        for record in records:
            if record[2] is not None and not killed:
                found = busy_actor()
                assert found is not None, "no actor was busy: nothing to kill"
                os.kill(found[0], signal.SIGKILL)
                killed.append(found)
            yield record

    with RegionIndex(tmp_path / "index", RegionCaptioner.from_pretrained(model_dir), **SETTINGS) as index:
        counts = index_with_ray(index, [tmp_path / "photos"], progress=progress)
        assert killed and (counts["added"], counts["failed"], len(index)) == (60, [], 60)
        listed = sorted(p for image in index.images() for p in image["paths"])
        assert listed == sorted(str(p.resolve()) for p in files)
        assert index.store.count_regions() == sum(1 + len(i["regions"]) for i in index.images())


def test_driver_killed_mid_run_then_rerun_completes(cluster, model_dir, tmp_path):
    files = scene_files(tmp_path / "photos", 40)
    index = tmp_path / "index"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "regioncap", "index", str(tmp_path / "photos"), "--index", str(index),
           "--model", str(model_dir), "--threshold", "0", "--max-regions", "3", "--batch-size", "1",
           "--ray", cluster]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    progress, reached, log = [0], threading.Event(), []

    def watch():  # our progress bar counts images written (its count moves after each write)
        text = ""
        while chunk := proc.stderr.read1(256).decode(errors="replace"):
            text += chunk
            counts = re.findall(r"indexing:[^\r\n]*?(\d+)/40", text)
            if counts and int(counts[-1]) >= 2:
                progress[0] = int(counts[-1])
                reached.set()
        log.append(text)

    threading.Thread(target=watch, daemon=True).start()
    reached.wait(240)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    stored = progress[0]
    assert proc.returncode == -signal.SIGKILL and 2 <= stored < len(files), f"killed too late: {stored} {log}"

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    d = json.loads(done.stdout)
    assert list(d) == ["index", "model", "images", "added", "updated", "unchanged", "removed", "failed"]
    assert d["images"] == len(files) and d["unchanged"] >= stored and d["added"] + d["unchanged"] == len(files)
    assert "indexing" in done.stderr and "Traceback" not in done.stderr
    with RegionIndex(index, RegionCaptioner.from_pretrained(model_dir), create=False) as ix:
        listed = sorted(p for image in ix.images() for p in image["paths"])
        assert listed == sorted(str(p.resolve()) for p in files)  # none missing, none twice
        assert ix.store.count_regions() == sum(1 + len(i["regions"]) for i in ix.images())


@pytest.mark.parametrize("case", ["unsaved", "modified"])
def test_ray_refuses_a_model_the_actors_cannot_load(case, make_model, model_dir, tmp_path):
    pytest.importorskip("ray")
    scene_files(tmp_path / "photos", 1)
    model = make_model() if case == "unsaved" else RegionCaptioner.from_pretrained(model_dir)
    if case == "modified":
        with torch.no_grad():
            next(model.parameters()).add_(0.01)  # the folder's files are not this model any more
    message = {"unsaved": "never saved: save it with save_pretrained",
               "modified": f"the files of {model_dir} are not this model"}[case]
    with RegionIndex(tmp_path / "index", model, **SETTINGS) as index:
        with pytest.raises(RegionCapError, match=message):
            index_with_ray(index, [tmp_path / "photos"])
        assert len(index) == 0


def test_ray_flag_without_ray_installed_says_how_to_install(model_dir, tmp_path, monkeypatch, capsys):
    scene_files(tmp_path / "photos", 1)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, out, err = run_main(capsys, "index", tmp_path / "photos", "--index", tmp_path / "index", "--model",
                              model_dir, "--ray")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "pip install -r requirements-scale.txt" in err and "Traceback" not in err
    assert not (tmp_path / "index").exists()  # refused before anything was opened


def test_ray_address_where_nothing_answers_exits_2_at_once(model_dir, tmp_path, capsys):
    pytest.importorskip("ray")  # ray.init itself would retry such an address for minutes
    scene_files(tmp_path / "photos", 1)
    code, out, err = run_main(capsys, "index", tmp_path / "photos", "--index", tmp_path / "index", "--model",
                              model_dir, "--ray", "127.0.0.1:9")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--ray 127.0.0.1:9: no Ray cluster answers there" in err and not (tmp_path / "index").exists()


def test_index_and_search_without_ray_do_not_import_it(model_dir, tmp_path):
    scene_files(tmp_path / "photos", 2)
    script = (f"import sys; from regioncap.cli import main; "
              f"assert main(['index', {str(tmp_path / 'photos')!r}, '--index', {str(tmp_path / 'ix')!r}, "
              f"'--model', {str(model_dir)!r}]) == 0; "
              f"assert main(['search', 'a red circle', '--index', {str(tmp_path / 'ix')!r}, "
              f"'--model', {str(model_dir)!r}]) == 0; "
              "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
