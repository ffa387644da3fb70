"""Feature-extraction throughput (phones/s), cold and cached, with peak RSS.

Generates a TIMIT-layout tree of >= 50,000 phones (toy tones by default; ``--corpus festival``
synthesises real speech with Festival instead), then builds the feature cache in a fresh child
process (cold), loads it again in another (cached), and measures the batched STFT alone in the same
run as the baseline. Peak RSS is each child's maximum resident set size, compared with the size of
all features at float32.

    python benchmarks/preprocess.py                 # toy corpus, ~1-2 minutes
    python benchmarks/preprocess.py --corpus festival   # >= 50,000 phones of Festival speech
    python benchmarks/preprocess.py --smoke true    # seconds, for CI (no timing meaning)

The cold build runs as ``convae data prepare`` does, with the allocator tuned
(``convae_lightning.allocator``) and its default worker processes (one per core), then once more
with glibc's defaults, and once in one process (``prepare_workers=1``). CPU seconds count the
build's process and its workers. ``--repeats N`` keeps the fastest of N builds of each kind.
Run with ``PYTHONPATH=/path/to/older/checkout``, the same script measures older code (which
builds in one process whatever it is asked).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from jsonargparse import CLI

CHILD = """
import inspect, json, resource, sys, time
t0 = time.perf_counter()
if sys.argv[3] == "tuned":
    from convae_lightning.allocator import tune_malloc
    tune_malloc()  # what the console scripts (convae data prepare) do first
from convae_lightning.data import TimitDataModule

def cpu():  # this process and its finished children (the build's workers)
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

imported = time.perf_counter()
imported_cpu = cpu()
imported_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
kwargs = {} if sys.argv[4] == "default" else {"prepare_workers": int(sys.argv[4])}
if "prepare_workers" not in inspect.signature(TimitDataModule).parameters:
    kwargs = {}  # a checkout from before the parallel build (PYTHONPATH=...): one process anyway
dm = TimitDataModule(root=sys.argv[1], cache_dir=sys.argv[2], progress=False, **kwargs)
dm.prepare_data()
dm.setup()
loaded = time.perf_counter()
x = dm.datasets["train"].features
checksum = float(x[:256].sum())  # touch one batch of the memmap
print(json.dumps({
    "seconds": loaded - imported,
    "cpu_seconds": cpu() - imported_cpu,
    "import_seconds": imported - t0,
    "phones": sum(dm.meta["kept"].values()) + sum(dm.meta["discarded"].values()),
    "kept": sum(dm.meta["kept"].values()),
    "input_shape": dm.meta["input_shape"],
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "imported_rss_mb": imported_rss,
    "checksum": checksum,
}))
"""

PROFILE = """
import cProfile, inspect, json, pstats, sys, time
import torch
from convae_lightning.allocator import tune_malloc
tune_malloc()
torch.set_num_threads(1)  # as each process of a parallel build runs
from convae_lightning.data.prepare import build_cache
kwargs = {"workers": 1} if "workers" in inspect.signature(build_cache).parameters else {}
profiler = cProfile.Profile(time.process_time)  # CPU time: what a loaded machine distorts least
start = time.process_time()
profiler.runcall(build_cache, sys.argv[1], sys.argv[2], progress=False, **kwargs)
total = time.process_time() - start
rows = sorted(
    ((tt, f"{file.rsplit('/', 1)[-1]}:{name}", calls)
     for (file, _, name), (_, calls, tt, _, _) in pstats.Stats(profiler).stats.items()),
    reverse=True,
)
print(json.dumps({"cpu_seconds": total, "top": [
    {"function": name, "calls": calls, "cpu_s": round(tt, 3), "share": round(tt / total, 3)}
    for tt, name, calls in rows[:12]
]}))
"""


def run_child(code: str, *args: str, tuned_malloc: bool = True, workers: int | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    malloc = "tuned" if tuned_malloc else "default"
    out = subprocess.run(
        [sys.executable, "-c", code, *args, malloc, "default" if workers is None else str(workers)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return out.stdout.strip().splitlines()[-1]


def stft_baseline(
    segment_length: int, batch: int = 256, blocks: int = 8, repeats: int = 8
) -> tuple[float, float]:
    """The batched STFT alone, the ceiling for feature extraction: segments/s (torch's threads)
    and CPU microseconds per segment (one thread, as each build process runs it), each the best
    of ``blocks`` timings of ``repeats`` batches (on a shared machine, the least disturbed one)."""
    from convae_lightning.data.features import FeatureConfig, PatchExtractor

    extractor = PatchExtractor(FeatureConfig())
    x = torch.randn(batch, segment_length)
    extractor(x)
    best = {"wall": float("inf"), "cpu": float("inf")}
    threads = torch.get_num_threads()
    for clock, count in (("wall", threads), ("cpu", 1)):
        torch.set_num_threads(count)
        timer = time.perf_counter if clock == "wall" else time.process_time
        for _ in range(blocks):
            start = timer()
            for _ in range(repeats):
                extractor(x)
            best[clock] = min(best[clock], timer() - start)
    torch.set_num_threads(threads)
    return batch * repeats / best["wall"], best["cpu"] / (batch * repeats) * 1e6


def cold_builds(root: Path, cache: Path, repeats: int, **kwargs: object) -> dict:
    """The fastest of ``repeats`` cold builds (wall clock), with the least CPU time among them."""
    runs = []
    for _ in range(repeats):
        shutil.rmtree(cache, ignore_errors=True)
        runs.append(json.loads(run_child(CHILD, str(root), str(cache), **kwargs)))
    fastest = min(runs, key=lambda r: r["seconds"])
    return {**fastest, "cpu_seconds": min(r["cpu_seconds"] for r in runs)}


def make_corpus(kind: str, root: Path, speakers: int, sentences: int, seed: int) -> float:
    start = time.perf_counter()
    if kind == "toy":
        from convae_lightning.synth.toy import write_toy_corpus

        train = speakers * 4 // 5
        write_toy_corpus(
            root,
            {"TRAIN": train, "TEST": speakers - train},
            sentences=sentences,
            phones_per_sentence=38,
            include_sa=False,
            seed=seed,
        )
    else:
        from convae_lightning.synth import synthesize_min_phones

        summary = synthesize_min_phones(root, min_phones=50_000, seed=seed, progress=True)
        print(
            f"festival: {summary.utterances_per_second:.1f} utterances/s, "
            f"{summary.phones / summary.seconds:.0f} phones/s"
        )
    return time.perf_counter() - start


def main(
    corpus: str = "toy",
    speakers: int = 80,
    sentences: int = 17,
    seed: int = 0,
    smoke: bool = False,
    out: Path | None = None,
    repeats: int = 1,
    profile: bool = False,
) -> dict:
    """Build the cache cold (default and tuned malloc), load it cached, print the results.

    Args:
        corpus: ``toy`` (synthetic tones) or ``festival`` (>= 50,000 phones of Festival speech).
        speakers: Toy corpus speakers (80 % TRAIN).
        sentences: Toy sentences per speaker (38 phones each).
        seed: Corpus seed.
        smoke: A seconds-long run on a 4-speaker toy corpus (no timing meaning).
        out: Write the results as JSON here (default ``$OUT/preprocess.json`` when ``$OUT`` is
            set, else ``benchmarks/out/preprocess.json``).
        repeats: Cold builds of each kind; the fastest counts (CPU seconds: the least), the way
            to measure on a machine that others load.
        profile: Also profile a one-process cold build (cProfile, CPU time, one torch thread as
            in each worker) and print the functions that took the most CPU.
    """
    if corpus not in ("toy", "festival"):
        raise ValueError(f"corpus must be 'toy' or 'festival', got {corpus!r}")
    if smoke:
        corpus, speakers, sentences = "toy", 4, 2
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "corpus", Path(tmp) / "cache"
        gen_seconds = make_corpus(corpus, root, speakers, sentences, seed)
        serial = cold_builds(root, cache, repeats, workers=1)
        cold_default = cold_builds(root, cache, repeats, tuned_malloc=False)
        cold = cold_builds(root, cache, repeats)
        cached = json.loads(run_child(CHILD, str(root), str(cache)))
        if profile:
            shutil.rmtree(cache)
            profiled = json.loads(run_child(PROFILE, str(root), str(cache)))
    shape = cold["input_shape"]
    feature_mb = cold["kept"] * int(np.prod(shape)) * 4 / 2**20
    segment_length = 272 + (shape[-1] - 1) * 152
    stft, stft_cpu_us = stft_baseline(segment_length)
    # CPU time is what a loaded machine distorts least: the build's CPU over that of its STFTs.
    stft_cpu_s = cold["phones"] * stft_cpu_us / 1e6
    result = {
        "corpus": corpus,
        "phones": cold["phones"],
        "patches": cold["kept"],
        "input_shape": shape,
        "corpus_generation_s": round(gen_seconds, 1),
        "cold_s": round(cold["seconds"], 2),
        "cold_phones_per_s": round(cold["phones"] / cold["seconds"]),
        "cold_cpu_s": round(cold["cpu_seconds"], 2),
        "cold_phones_per_cpu_s": round(cold["phones"] / cold["cpu_seconds"]),
        "cold_one_process_s": round(serial["seconds"], 2),
        "cold_one_process_phones_per_s": round(cold["phones"] / serial["seconds"]),
        "cold_one_process_cpu_s": round(serial["cpu_seconds"], 2),
        "cold_default_malloc_s": round(cold_default["seconds"], 2),
        "cold_default_malloc_phones_per_s": round(cold["phones"] / cold_default["seconds"]),
        "cached_s": round(cached["seconds"], 3),
        "cached_phones_per_s": round(cached["phones"] / cached["seconds"]),
        "stft_only_segments_per_s": round(stft),
        "stft_only_cpu_us_per_segment": round(stft_cpu_us, 2),
        "cold_vs_stft_ratio": round(cold["phones"] / cold["seconds"] / stft, 3),
        "cold_cpu_vs_stft_cpu": round(cold["cpu_seconds"] / stft_cpu_s, 2),
        "cold_one_process_cpu_vs_stft_cpu": round(serial["cpu_seconds"] / stft_cpu_s, 2),
        "cold_one_process_vs_stft_ratio": round(cold["phones"] / serial["seconds"] / stft, 3),
        "cached_speedup": round(cold["seconds"] / cached["seconds"], 1),
        "features_mb": round(feature_mb, 1),
        "peak_rss_cold_mb": round(cold["peak_rss_mb"], 1),
        "peak_rss_cached_mb": round(cached["peak_rss_mb"], 1),
        "rss_after_imports_mb": round(cold["imported_rss_mb"], 1),
        "cold_rss_above_imports_vs_features": round(
            (cold["peak_rss_mb"] - cold["imported_rss_mb"]) / feature_mb, 3
        ),
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
    }
    if out is None:
        folder = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("benchmarks/out")
        out = folder / "preprocess.json"
    if not smoke or os.environ.get("OUT"):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    if profile:
        result["profile_cpu_s"] = round(profiled["cpu_seconds"], 2)
        result["profile_top"] = profiled["top"]
    width = max(map(len, result))
    for key, value in result.items():
        if key != "profile_top":
            print(f"{key:<{width}}  {value}")
    if profile:
        print("\n| function (one-process cold build, CPU time) | calls | CPU s | share |")
        print("|---|---|---|---|")
        for row in profiled["top"]:
            print(f"| `{row['function']}` | {row['calls']} | {row['cpu_s']} | {row['share']:.1%} |")
    return result


if __name__ == "__main__":
    CLI(main, as_positional=False)
