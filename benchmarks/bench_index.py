"""Collection index benchmark: indexing against analyze() alone; search at library size; one search call.

1. Indexing (``--images``): the same synthetic images are (a) analysed with ``model.analyze`` one by one and
   nothing else, and (b) indexed with ``RegionIndex.add`` into a fresh embedded index (hash, decode in
   threads, analyze in batches, Edge writes), alternating ``--repeats`` times; best of each. Goal: < 15 %.
2. Search at collection size (``--sizes``): the demo model's vectors of ``--base`` analysed synthetic scenes
   are multiplied to each size by perturbed copies (Gaussian noise of ``--noise`` per component,
   renormalised; ``--vectors random``: random unit vectors, the worst case for any approximate index),
   written into an embedded index exactly as ``add`` lays them out, then optimised (HNSW, int8 copies).
   A separate process (the searching process: text side only, as ``python -m regioncap search``) opens
   it, runs the held-out scenes' sentences (by images) and phrases (by regions) twice with the engine's
   defaults (the first pass faults the index's pages in) and once per ``--sweep`` setting, and reports open
   time, p50/p95 and its peak RSS with the defaults (before the sweep); this process computes the exact top
   10 by brute force over every stored vector (S_kl for sentences) and the recall of what the search
   returned.
3. ``--cli``: ``python -m regioncap search`` on a 1,000-image index against ``python -c "import torch"``,
   alternated ``--cli-repeats`` times in one run; the ratio of medians. Goal: <= 1.5.

    python benchmarks/bench_index.py [--sizes 10000,100000] [--base 1000] [--vectors real|random] [--cli]
        [--sentences-only]
"""

from __future__ import annotations

import argparse
import functools
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
    p.add_argument("--base", type=int, default=1000, help="analysed scenes whose vectors make up the collections")
    p.add_argument("--noise", type=float, default=0.02, help="per-component noise of the perturbed copies")
    p.add_argument("--vectors", choices=("real", "random"), default="real")
    p.add_argument("--base-cache", default=None, help="keep the analysed base scenes' vectors in this .npz "
                   "(read when it exists: the analysis of a thousand scenes takes minutes)")
    p.add_argument("--queries", type=int, default=60, help="sentences and phrases searched per size")
    p.add_argument("--sweep", default="", help="also search with these engine settings, e.g. "
                   "'0:256,2:512' (sentences: 0 = MaxSim over the float32 vectors, N = over the int8 copies "
                   "with N x limit re-scored, whatever the size; phrases: HNSW ef)")
    p.add_argument("--cli", action="store_true", help="also time one `search` call against `import torch`")
    p.add_argument("--cli-repeats", type=int, default=7)
    p.add_argument("--work", default=None, help="working folder (default: a temporary one, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the built indexes in --work (search-SIZE)")
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
    """:func:`base_vectors`, kept in ``cache`` (an .npz of the multivectors and their regions as JSON)."""
    if cache and Path(cache).is_file():
        stored = np.load(cache)
        regions = json.loads(str(stored["regions"]))
        return [(stored[f"v{i}"], regions[i]) for i in range(len(regions))][:count]
    base = base_vectors(model, data, count)
    if cache:
        np.savez(cache, regions=json.dumps([r for _, r in base]), **{f"v{i}": v for i, (v, _) in enumerate(base)})
    return base


def queries(data: Path, count: int) -> tuple[list[str], list[str]]:
    """Held-out sentences and phrases of the synthetic scenes (their test split)."""
    from regioncap.data.flickr30k import read_sentences

    sentences, phrases = [], []
    for image_id in (data / "test.txt").read_text().split():
        for s in read_sentences(data / "Sentences" / f"{image_id}.txt"):
            sentences.append(s.sentence)
            phrases += [p.text for p in s.phrases if p.chain_id != "0"]
    return sentences[:count], list(dict.fromkeys(phrases))[:count]


def collection(base, size: int, noise: float, random_vectors: bool, seed: int = 0, chunk: int = 1000):
    """The collection, ``chunk`` images at a time: lists of (hash, multivector [1 + N, D], payload), the
    same every time (the exact answers are computed from a second pass: a million images are 8 GB)."""
    rng = np.random.default_rng(seed)
    for start in range(0, size, chunk):
        items = []
        for k in range(start, min(size, start + chunk)):
            vectors, regions = base[k % len(base)]
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
    first_image = 0
    for items in chunks:
        rows = np.concatenate([v for _, v, _ in items])
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
    return by_sentence, by_phrase


def search_child(location: str, model_path: str, spec: str) -> None:
    """The searching process: open the index with the text side only, run the queries, print JSON."""
    import torch

    from regioncap.index import RegionIndex, edge
    from regioncap.models.text_model import TextModel

    torch.set_grad_enabled(False)
    torch.set_num_threads(1)  # as `python -m regioncap search` does
    sentences, phrases, sweep = json.loads(Path(spec).read_text())
    model = TextModel.from_pretrained(model_path)
    t = time.perf_counter()
    index = RegionIndex(location, model, create=False)
    out = {"open_s": time.perf_counter() - t, "images": len(index), "settings": []}
    defaults = (edge.OVERSAMPLING, edge.HNSW_EF, edge.DIRECT_IMAGES)
    for setting in [None, None, *sweep]:  # the defaults twice: the first pass faults the index's pages in
        if setting is None:
            edge.OVERSAMPLING, edge.HNSW_EF, edge.DIRECT_IMAGES = defaults
        else:  # oversampling 0: the float32 vectors whatever the size; else the int8 copies whatever the size
            edge.OVERSAMPLING, edge.HNSW_EF, edge.DIRECT_IMAGES = *setting, 0 if setting[0] else 10**12
        row = {"setting": setting}
        for by, texts in (("images", sentences), ("regions", phrases)):
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


def bench_size(model, base, size, args, work, sentences, phrases) -> dict:
    location = work / f"search-{size}"
    chunks = functools.partial(collection, base, size, args.noise, args.vectors == "random")
    if args.sentences_only:
        phrases = []
    rows, built, optimised = build(location, model, chunks(), regions=not args.sentences_only)
    print(f"built {size:,} images ({rows:,} rows) in {built:.1f} s, optimised in {optimised:.1f} s",
          file=sys.stderr)
    spec = work / "queries.json"
    sweep = [[int(x) for x in item.split(":")] for item in args.sweep.split(",") if item]
    spec.write_text(json.dumps([sentences, phrases, sweep]))
    child = subprocess.run([sys.executable, __file__, "--search-child", str(location), "--model", args.model,
                            "--work", str(spec)], capture_output=True, text=True, check=False)
    if child.returncode:
        raise SystemExit(f"the searching process failed:\n{child.stderr[-3000:]}")
    out = json.loads(child.stdout.strip().splitlines()[-1])
    by_sentence, by_phrase = true_top10(chunks(), model, sentences, phrases)
    for row in out["settings"]:
        row["recall_images"] = float(np.mean([len(t & set(f)) / 10 for t, f in zip(by_sentence,
                                                                                    row["images"]["found"])]))
        row["recall_regions"] = float(np.mean([len(t & {tuple(x) for x in f}) / 10 for t, f in
                                               zip(by_phrase, row["regions"]["found"])])) if phrases else None
    out.update(rows=rows, build_s=built, optimise_s=optimised,
               size_mb=sum(f.stat().st_size for f in location.rglob("*") if f.is_file()) / 2**20)
    if not args.keep:
        shutil.rmtree(location)
    return out


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
        sizes = [int(s) for s in args.sizes.split(",") if s]
        if sizes or args.cli:
            data = work / "scenes"
            synthetic.main([str(data), "--images", str(args.base), "--seed", "21", "--splits", "0.9,0,0.1"])
            t = time.perf_counter()
            base = cached_base(model, data, args.base, args.base_cache)
            print(f"base scenes ready in {time.perf_counter() - t:.0f} s", file=sys.stderr)
            sentences, phrases = queries(data, args.queries)
        rows = [(size, bench_size(model, base, size, args, work, sentences, phrases)) for size in sizes]
        if rows:
            kind = ("random unit vectors" if args.vectors == "random" else
                    f"the demo model's vectors of {args.base} scenes, perturbed copies (noise {args.noise})")
            print(f"\nsearch, embedded index (Qdrant Edge), top 10, {kind}; {len(sentences)} held-out sentences "
                  f"and {len(phrases)} phrases; searching process = text side only:")
            print("| images | rows | build s | optimise s | open s | sentence p50 / p95 ms | phrase p50 / p95 ms "
                  "| recall images | recall regions | peak RSS MB (defaults) | on disk MB |")
            print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for size, r in rows:
                for n, row in enumerate(r["settings"]):
                    i, g = row["images"], row.get("regions")
                    what = f"{size:,}" + (" (defaults, first pass after opening)", " (defaults, again)", "")[min(n, 2)]
                    if row["setting"] is not None and row["setting"][0]:
                        what += f" (int8, {row['setting'][0]}x re-scored; phrases ef {row['setting'][1]})"
                    elif row["setting"] is not None:
                        what += f" (float32 MaxSim; phrases ef {row['setting'][1]})"
                    phrase, recall = ((f"{g['p50']:.1f} / {g['p95']:.1f}", f"{row['recall_regions']:.3f}") if g
                                      else ("-", "-"))
                    print(f"| {what} | {r['rows']:,} | {r['build_s']:.0f} | {r['optimise_s']:.0f} | {r['open_s']:.2f} "
                          f"| {i['p50']:.1f} / {i['p95']:.1f} | {phrase} | {row['recall_images']:.3f} | {recall} "
                          f"| {r['rss_mb']:.0f} | {r['size_mb']:.0f} |")
        if args.cli:
            torch_s, search_s = bench_cli(model, base, work, args.cli_repeats, args.model)
            print(f"\none `python -m regioncap search` on a 1,000-image index: {search_s:.2f} s; `python -c "
                  f"\"import torch\"`: {torch_s:.2f} s (medians of {args.cli_repeats}); ratio {search_s / torch_s:.2f} "
                  "(goal <= 1.5)")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
