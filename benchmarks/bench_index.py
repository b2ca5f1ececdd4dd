"""Collection index benchmark: indexing against analyze() alone; search at library size; one search call.

1. Indexing (``--images``): the same synthetic images are (a) analysed with ``model.analyze`` one by one and
   nothing else, and (b) indexed with ``RegionIndex.add`` into a fresh embedded index (hash, decode in
   threads, analyze in batches, Edge writes), alternating ``--repeats`` times; best of each. Goal: < 15 %.
2. Search at collection size (``--sizes``): the demo model's vectors of ``--base`` analysed synthetic scenes
   are multiplied to each size by perturbed copies (Gaussian noise of ``--noise`` per component,
   renormalised; at most ceil(size / base) copies of a scene, in shuffled places, so that a scene's copies
   are not one per segment; ``--vectors random``: random unit vectors, the worst case for any approximate
   index), written into an embedded index exactly as ``add`` lays them out, then optimised (HNSW, int8
   copies). Two query sets, of different scenes, never sharing a text: ``--tune-queries`` sentences and
   phrases of the validation scenes, for choosing engine settings (``--sweep``), and ``--queries`` held-out
   ones of the test scenes, on which the engine's defaults are reported. A separate process (the
   searching process: text side only, as ``python -m regioncap search``) opens the index, runs the
   held-out sentences (by images) and phrases (by regions) twice with the defaults (the first pass faults
   the index's pages in), then the tuning ones with the defaults and once per ``--sweep`` setting, and
   reports open time, p50/p95 and its peak RSS after the held-out passes; ``--search-runs`` such processes
   one after the other. This process computes the exact top 10 by brute force over every stored vector
   (S_kl for sentences) and the recall of what the search returned.
3. ``--cli``: ``python -m regioncap search`` on a 1,000-image index against ``python -c "import torch"``,
   alternated ``--cli-repeats`` times in one run; the ratio of medians. Goal: <= 1.5.

    python benchmarks/bench_index.py [--sizes 10000,100000] [--base 5000 --base-cache F.npz]
        [--vectors real|random] [--queries 60 --tune-queries 60 --sweep 0:1024,4:1024] [--cli]
        [--sentences-only] [--json F]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_MODEL = ROOT / "assets" / "demo-model"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--images", type=int, default=24, help="synthetic images for the indexing comparison (0: skip)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None, help="RegionIndex.add's batch size (default: its own)")
    p.add_argument("--sizes", default="10000", help="collection sizes for the search measurement ('' skips it)")
    p.add_argument("--base", type=int, default=5000, help="analysed scenes whose vectors make up the collections "
                   "(at most ceil(size / base) copies of each)")
    p.add_argument("--noise", type=float, default=0.02, help="per-component noise of the perturbed copies")
    p.add_argument("--vectors", choices=("real", "random"), default="real")
    p.add_argument("--base-cache", default=None, help="keep the analysed base scenes' vectors in this .npz "
                   "(read when it holds the same scenes: the analysis of 5,000 scenes takes minutes)")
    p.add_argument("--queries", type=int, default=60, help="held-out sentences and phrases (of the test scenes) "
                   "on which the defaults are reported")
    p.add_argument("--tune-queries", type=int, default=60, help="tuning sentences and phrases (of the validation "
                   "scenes, no text shared with the held-out ones) searched with the defaults and --sweep")
    p.add_argument("--sweep", default="", help="also search the tuning queries with these engine settings, e.g. "
                   "'0:256,2:512' (sentences: 0 = MaxSim over the float32 vectors, N = over the int8 copies "
                   "with N x limit re-scored, whatever the size; phrases: HNSW ef)")
    p.add_argument("--search-runs", type=int, default=1, help="searching processes per size, one after the other")
    p.add_argument("--json", default=None, help="also write the results (and the queries) to this file")
    p.add_argument("--cli", action="store_true", help="also time one `search` call against `import torch`")
    p.add_argument("--cli-repeats", type=int, default=7)
    p.add_argument("--work", default=None, help="working folder (default: a temporary one, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the built indexes in --work (search-SIZE)")
    p.add_argument("--reuse", action="store_true", help="search the indexes that an earlier --keep run of the same "
                   "collection left in --work instead of building them again (no build times then)")
    p.add_argument("--sentences-only", action="store_true", help="build and search the images shard only "
                   "(a million images' regions graph, 7.7 M rows, would take over an hour on 2 cores)")
    p.add_argument("--search-child", default=None, help=argparse.SUPPRESS)  # internal: the searching process
    return p


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ``getrusage``'s ru_maxrss, which Linux carries
    across fork and exec: a child of the building process (7 GB at 100,000 images) would report that."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# -- 1. indexing overhead ------------------------------------------------------------------------
def bench_indexing(model, images: list[Path], repeats: int, work: Path, batch_size) -> tuple[float, float]:
    from regioncap.index import RegionIndex

    model.analyze(images[0])  # warm-up
    alone, indexed = [], []
    for r in range(repeats):
        t = time.perf_counter()
        for path in images:
            model.analyze(path, max_regions=10, score_threshold=0.5)
        alone.append(time.perf_counter() - t)
        location = work / f"index-{r}"
        with RegionIndex(location, model) as index:  # opening (and hashing the model) is not per image
            t = time.perf_counter()
            counts = index.add(images, batch_size=batch_size)
            indexed.append(time.perf_counter() - t)
        assert counts["added"] == len(images), counts
        shutil.rmtree(location)
    return min(alone), min(indexed)


# -- 2. search at collection size ----------------------------------------------------------------
def base_vectors(model, data: Path, count: int) -> list[tuple[np.ndarray, list[dict]]]:
    """(multivector [1 + N, D], stored regions) of ``count`` analysed scenes, up to 10 regions each (score
    threshold 0.05: a real photo has about ten, a synthetic scene three or four above 0.5)."""
    images = sorted((data / "Images").glob("*.jpg"))[:count]
    out = []
    for path in images:
        r = model.analyze(path, max_regions=10, score_threshold=0.05)
        regions = [x.to_dict() | {"score": x.score, "caption_score": x.caption_score} for x in r.regions]
        out.append((np.concatenate([r.image_vector[None].numpy(), r.vectors.numpy()]), regions))
    return out


def cached_base(model, data: Path, count: int, cache: str | None):
    """:func:`base_vectors`, kept in ``cache`` (an .npz of the scenes' names, their multivectors and their
    regions as JSON); a cache of other scenes is analysed again (and overwritten)."""
    names = [p.stem for p in sorted((data / "Images").glob("*.jpg"))[:count]]
    if cache and Path(cache).is_file():
        stored = np.load(cache)
        if "names" in stored and stored["names"].tolist()[:count] == names:
            regions = json.loads(str(stored["regions"]))
            return [(stored[f"v{i}"], regions[i]) for i in range(count)]
        print(f"{cache}: holds other scenes than --base {count}: analysing again", file=sys.stderr)
    base = base_vectors(model, data, count)
    if cache:
        np.savez(cache, names=np.array(names), regions=json.dumps([r for _, r in base]),
                 **{f"v{i}": v for i, (v, _) in enumerate(base)})
    return base


def queries(data: Path, split: str, count: int, exclude: tuple = ((), ())) -> tuple[list[str], list[str]]:
    """The first ``count`` distinct sentences and phrases of the scenes of ``split`` (val: tuning, test:
    held-out), leaving out every text of ``exclude`` (sentences, phrases): the synthetic scenes' wording
    repeats (of the first 60 tuning phrases, 48 occur among the test scenes' phrases)."""
    from regioncap.data.flickr30k import read_sentences

    sentences, phrases = [], []
    for image_id in (data / f"{split}.txt").read_text().split():
        for s in read_sentences(data / "Sentences" / f"{image_id}.txt"):
            sentences.append(s.sentence)
            phrases += [p.text for p in s.phrases if p.chain_id != "0"]
    return tuple([t for t in dict.fromkeys(texts) if t not in set(left_out)][:count]
                 for texts, left_out in zip((sentences, phrases), exclude))


def query_sets(data: Path, held_out: int, tuning: int) -> dict[str, tuple[list[str], list[str]]]:
    """{"held-out": (sentences, phrases), "tuning": (sentences, phrases)}, sharing no text."""
    tune = queries(data, "val", tuning)
    held = queries(data, "test", held_out, exclude=tune)
    if any(set(h) & set(t) for h, t in zip(held, tune)):
        raise SystemExit("the held-out queries share a text with the tuning ones")
    return {"held-out": held, "tuning": tune}


def collection(base, size: int, noise: float, random_vectors: bool, seed: int = 0, chunk: int = 1000):
    """The collection, ``chunk`` images at a time: lists of (hash, multivector [1 + N, D], payload), the
    same every time (the exact answers are computed from a second pass: a million images are 8 GB). Image
    k is a copy of scene ``scenes[k]``: each scene's ceil(size / len(base)) copies at most lie in shuffled
    places, so that a segment holds none, one or several of them (evenly placed copies, one per segment,
    would favour the engine's per-segment oversampling)."""
    rng = np.random.default_rng(seed)
    scenes = rng.permutation(size) % len(base)
    for start in range(0, size, chunk):
        items = []
        for k in range(start, min(size, start + chunk)):
            vectors, regions = base[scenes[k]]
            v = rng.standard_normal(vectors.shape).astype(np.float32)
            v = v if random_vectors else vectors + noise * v
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            digest = f"{k:064x}"
            items.append((digest, v, {"hash": digest, "paths": [f"/photos/{k:07d}.jpg"], "width": 500,
                                      "height": 375, "regions": regions, "max_regions": 10, "threshold": 0.5}))
        yield items


def build(location: Path, model, chunks, regions: bool = True) -> tuple[int, float, float]:
    """Write the collection into an embedded index as ``add`` lays it out (``regions`` False: the images
    shard only), then optimise it; returns (rows, build seconds, optimise seconds)."""
    from regioncap.index import RegionIndex

    rows, t0 = 0, time.perf_counter()
    with RegionIndex(location, model) as index:
        for items in chunks:
            if regions:
                index.store.put_rows(items)
            index.store.put_images(items)
            rows += sum(len(v) for _, v, _ in items)
        built = time.perf_counter() - t0
        t1 = time.perf_counter()
        index.store.optimize()
        optimised = time.perf_counter() - t1
    return rows, built, optimised


def true_top10(chunks, model, sentences, phrases):
    """Brute force over every stored vector: per sentence the 10 images of highest S_kl, per phrase the 10
    best (image, region index), as sets of image numbers / (image number, region index)."""
    from regioncap.models.results import sentence_phrases

    s = [model.encode_text(sentence_phrases(text, model)).numpy() for text in sentences]  # [P, D] each
    p = np.array([model.encode_text([text])[0].numpy() for text in phrases],
                 dtype=np.float32).reshape(len(phrases), s[0].shape[1])  # [Q, D]
    sentence_of = np.repeat(np.arange(len(s)), [len(x) for x in s])
    first_phrase = np.flatnonzero(np.r_[True, sentence_of[1:] != sentence_of[:-1]])
    s = np.concatenate(s)
    scores, best = [], []  # S_kl [images, sentences] per chunk; per chunk the 10 best rows of each phrase
    first_image = total = 0
    for items in chunks:
        rows = np.concatenate([v for _, v, _ in items])
        total += len(rows)
        counts = [len(v) for _, v, _ in items]
        owners = np.repeat(np.arange(first_image, first_image + len(items)), counts)
        kinds = np.concatenate([np.arange(-1, n - 1) for n in counts])
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        per_phrase = np.maximum.reduceat(rows @ s.T, starts, axis=0)  # [images, P]: max over each image's rows
        scores.append(np.add.reduceat(per_phrase, first_phrase, axis=1))  # [images, sentences]
        regions = np.flatnonzero(kinds >= 0)
        sims = rows[regions] @ p.T  # [regions, Q]
        top = np.argpartition(-sims, 10, axis=0)[:10] if len(regions) > 10 else np.argsort(-sims, axis=0)
        best.append([(sims[top[:, j], j], owners[regions[top[:, j]]], kinds[regions[top[:, j]]])
                     for j in range(len(phrases))])
        first_image += len(items)
    scores = np.concatenate(scores)
    by_sentence = [set(np.argsort(-scores[:, j], kind="stable")[:10].tolist()) for j in range(len(sentences))]
    by_phrase = []
    for j in range(len(phrases)):
        sims, owners, kinds = (np.concatenate(x) for x in zip(*(chunk[j] for chunk in best)))
        order = np.lexsort((kinds, owners, -sims))[:10]  # by similarity, ties in stored order
        by_phrase.append({(int(owners[i]), int(kinds[i])) for i in order})
    return by_sentence, by_phrase, total


def collection_record(base, size: int, args) -> dict:
    """What makes a collection: an index kept by a run with the same record can be searched again."""
    digest = hashlib.sha256(b"".join(v.tobytes() for v, _ in base)).hexdigest()[:16]
    return {"size": size, "base": len(base), "base_sha256": digest, "noise": args.noise, "vectors": args.vectors,
            "sentences_only": args.sentences_only}


def search_child(location: str, model_path: str, spec: str) -> None:
    """The searching process: open the index with the text side only, run the queries, print JSON."""
    import torch

    from regioncap.index import RegionIndex, edge
    from regioncap.models.text_model import TextModel

    torch.set_grad_enabled(False)
    torch.set_num_threads(1)  # as `python -m regioncap search` does
    sets, sweep = json.loads(Path(spec).read_text())
    model = TextModel.from_pretrained(model_path)
    t = time.perf_counter()
    index = RegionIndex(location, model, create=False)
    out = {"open_s": time.perf_counter() - t, "images": len(index), "load": os.getloadavg(), "settings": [],
           "segments": [shard.info().segments_count for shard in (index.store.images, index.store.regions)],
           "defaults": [0 if len(index) <= edge.DIRECT_IMAGES else edge.OVERSAMPLING, edge.HNSW_EF]}
    defaults = (edge.OVERSAMPLING, edge.HNSW_EF, edge.DIRECT_IMAGES)
    passes = [("held-out", None), ("held-out", None)]  # the first pass faults the index's pages in
    if any(sets["tuning"]):
        passes += [("tuning", None)] + [("tuning", setting) for setting in sweep]
    for name, setting in passes:
        if setting is None:
            edge.OVERSAMPLING, edge.HNSW_EF, edge.DIRECT_IMAGES = defaults
        else:  # oversampling 0: the float32 vectors whatever the size; else the int8 copies whatever the size
            edge.OVERSAMPLING, edge.HNSW_EF, edge.DIRECT_IMAGES = *setting, 0 if setting[0] else 10**12
        row = {"queries": name, "setting": setting}
        for by, texts in zip(("images", "regions"), sets[name]):
            if not texts:
                continue
            index.search(texts[0], by=by)  # warm-up
            times, found = [], []
            for text in texts:
                t = time.perf_counter()
                hits = index.search(text, by=by, top_k=10)
                times.append((time.perf_counter() - t) * 1e3)
                found.append([int(h.hash, 16) if by == "images" else [int(h.hash, 16), h.region_index] for h in hits])
            row[by] = {"p50": percentile(times, 50), "p95": percentile(times, 95), "found": found}
        out["settings"].append(row)
        if len(out["settings"]) == 2:  # the defaults' peak: a sweep's float32 scan would fault in every vector
            out["rss_mb"] = peak_rss_mb()
    index.close()
    print(json.dumps(out))


def recall(true: list[set], found: list[list]) -> float:
    """The mean share of each query's exact top 10 that the search returned."""
    return float(np.mean([len(t & {x if isinstance(x, int) else tuple(x) for x in f}) / 10
                          for t, f in zip(true, found)]))


def bench_size(model, base, size, args, work, sets) -> dict:
    location = work / f"search-{size}"
    chunks = functools.partial(collection, base, size, args.noise, args.vectors == "random")
    if args.sentences_only:
        sets = {name: (sentences, []) for name, (sentences, _) in sets.items()}
    record, kept = collection_record(base, size, args), work / f"search-{size}.json"
    if args.reuse and location.is_dir():
        if not kept.is_file() or json.loads(kept.read_text()) != record:
            raise SystemExit(f"{location}: not an index of this collection ({kept} differs): build it again")
        built = optimised = None
    else:
        _, built, optimised = build(location, model, chunks(), regions=not args.sentences_only)
        kept.write_text(json.dumps(record))
        print(f"built {size:,} images in {built:.1f} s, optimised in {optimised:.1f} s", file=sys.stderr)
    spec = work / "queries.json"
    sweep = [[int(x) for x in item.split(":")] for item in args.sweep.split(",") if item]
    spec.write_text(json.dumps([sets, sweep]))
    runs = []
    for _ in range(args.search_runs):
        child = subprocess.run([sys.executable, __file__, "--search-child", str(location), "--model", args.model,
                                "--work", str(spec)], capture_output=True, text=True, check=False)
        if child.returncode:
            raise SystemExit(f"the searching process failed:\n{child.stderr[-3000:]}")
        runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
    names = list(sets)  # the exact answers of both query sets in one pass over the collection
    by_sentence, by_phrase, rows = true_top10(chunks(), model, sum((sets[n][0] for n in names), []),
                                        sum((sets[n][1] for n in names), []))
    exact, i, j = {}, 0, 0
    for n in names:
        s, p = len(sets[n][0]), len(sets[n][1])
        exact[n] = (by_sentence[i:i + s], by_phrase[j:j + p])
        i, j = i + s, j + p
    for run in runs:
        for row in run["settings"]:
            true_s, true_p = exact[row["queries"]]
            row["recall_images"] = recall(true_s, row["images"]["found"])
            row["recall_regions"] = recall(true_p, row["regions"]["found"]) if true_p else None
    out = {"size": size, "rows": rows, "build_s": built, "optimise_s": optimised, "runs": runs,
           "size_mb": sum(f.stat().st_size for f in location.rglob("*") if f.is_file()) / 2**20}
    if not args.keep:
        shutil.rmtree(location)
        kept.unlink()
    return out


def setting_name(setting, defaults) -> str:
    """'defaults: int8, 2x re-scored; phrases ef 1024' and the like ([oversampling or 0, ef])."""
    os_, ef = setting or defaults
    what = f"int8, {os_:g}x re-scored" if os_ else "float32 MaxSim"
    return f"{'defaults: ' if setting is None else ''}{what}; phrases ef {ef}"


def print_table(results: list[dict], kind: str, sets: dict) -> None:
    """One row per pass; the size's and the searching process's columns on their first row only."""
    (hs, hp), (ts, tp) = sets["held-out"], sets["tuning"]
    print(f"\nsearch, embedded index (Qdrant Edge), top 10, {kind}; held-out queries: {len(hs)} sentences and "
          f"{len(hp)} phrases (test scenes); tuning queries: {len(ts)} and {len(tp)} (validation scenes, no "
          "text shared); searching process = text side only:")
    print("| images | rows | build s | optimise s | run (load) | segments (images / regions) | open s | queries "
          "| engine setting | sentence p50 / p95 ms | phrase p50 / p95 ms | recall sentences | recall phrases "
          "| peak RSS MB (held-out defaults) | on disk MB |")
    print("|---:|---:|---:|---:|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for k, run in enumerate(r["runs"]):
            for n, row in enumerate(run["settings"]):
                i, g = row["images"], row.get("regions")
                name = setting_name(row["setting"], run["defaults"])
                if n < 2:
                    name += ("; first pass after opening", "; again")[n]
                phrase, recall_p = ((f"{g['p50']:.1f} / {g['p95']:.1f}", f"{row['recall_regions']:.3f}") if g
                                    else ("-", "-"))
                first = k == n == 0
                times = ("kept | kept" if r["build_s"] is None else f"{r['build_s']:.0f} | {r['optimise_s']:.0f}")
                size = f"{r['size']:,} | {r['rows']:,} | {times}" if first else " | | |"
                process = (f"{k + 1} ({run['load'][0]:.1f}) | {' / '.join(map(str, run['segments']))} | "
                           f"{run['open_s']:.2f}" if n == 0 else " | |")
                rss, disk = f"{run['rss_mb']:.0f}" if n == 0 else "", f"{r['size_mb']:.0f}" if first else ""
                print(f"| {size} | {process} | {row['queries']} | {name} | {i['p50']:.1f} / {i['p95']:.1f} "
                      f"| {phrase} | {row['recall_images']:.3f} | {recall_p} | {rss} | {disk} |")


# -- 3. one search call ----------------------------------------------------------------------------
def bench_cli(model, base, work: Path, repeats: int, model_path: str) -> tuple[float, float]:
    location = work / "cli-1000"
    build(location, model, collection(base, 1000, 0.02, False))
    commands = {"import torch": [sys.executable, "-c", "import torch"],
                "search": [sys.executable, "-m", "regioncap", "search", "a red circle next to a blue square",
                           "--index", str(location), "--model", model_path]}
    times = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            t = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
            times[name].append(time.perf_counter() - t)
    shutil.rmtree(location)
    return statistics.median(times["import torch"]), statistics.median(times["search"])


def main(args) -> int:
    if args.search_child:
        search_child(args.search_child, args.model, args.work)
        return 0
    import torch

    from regioncap.data import synthetic
    from regioncap.models.model import RegionCaptioner

    torch.set_grad_enabled(False)
    print(f"torch threads: {torch.get_num_threads()}, CPU cores: {os.cpu_count()}, load average: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    report = {"argv": sys.argv[1:], "load_start": os.getloadavg()}
    model = RegionCaptioner.from_pretrained(args.model)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-index-"))
    try:
        if args.images:
            synthetic.main([str(work / "data"), "--images", str(args.images), "--seed", "5"])
            images = sorted((work / "data" / "Images").glob("*.jpg"))
            alone, indexed = bench_indexing(model, images, args.repeats, work, args.batch_size)
            print(f"\nindexing {len(images)} synthetic images (model {args.model}, best of {args.repeats}):")
            print("| what | seconds | images/s |\n|---|---:|---:|")
            print(f"| analyze() alone | {alone:.2f} | {len(images) / alone:.2f} |")
            print(f"| RegionIndex.add (embedded) | {indexed:.2f} | {len(images) / indexed:.2f} |")
            print(f"index overhead: {100 * (indexed / alone - 1):+.1f} % (goal < 15 %)")
            report["indexing"] = {"images": len(images), "analyze_s": alone, "add_s": indexed}
        sizes = [int(s) for s in args.sizes.split(",") if s]
        if sizes or args.cli:
            data = work / "scenes"
            synthetic.main([str(data), "--images", str(args.base), "--seed", "21", "--splits", "0.8,0.1,0.1"])
            t = time.perf_counter()
            base = cached_base(model, data, args.base, args.base_cache)
            print(f"base scenes ready in {time.perf_counter() - t:.0f} s", file=sys.stderr)
            sets = query_sets(data, args.queries, args.tune_queries)
        results = [bench_size(model, base, size, args, work, sets) for size in sizes]
        if results:
            copies = f"at most {-(-max(sizes) // args.base)} copies of each in shuffled places"
            kind = (f"random unit vectors ({copies} of {args.base} scenes' shapes)" if args.vectors == "random" else
                    f"the demo model's vectors of {args.base} scenes, perturbed copies (noise {args.noise}; {copies})")
            print_table(results, kind, sets)
        report["sizes"], report["queries"] = results, sets if sizes else {}
        if args.cli:
            torch_s, search_s = bench_cli(model, base, work, args.cli_repeats, args.model)
            print(f"\none `python -m regioncap search` on a 1,000-image index: {search_s:.2f} s; `python -c "
                  f"\"import torch\"`: {torch_s:.2f} s (medians of {args.cli_repeats}); ratio {search_s / torch_s:.2f} "
                  "(goal <= 1.5)")
            report["cli"] = {"import_torch_s": torch_s, "search_s": search_s}
        report["load_end"] = os.getloadavg()
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in report['load_end'])}")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
