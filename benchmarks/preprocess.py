"""Feature-extraction throughput (phones/s), cold and cached, with peak RSS.

Generates a TIMIT-layout tree of >= 50,000 phones (toy tones by default; ``--corpus festival``
synthesises real speech with Festival instead), then builds the feature cache in a fresh child
process (cold), loads it again in another (cached), and measures the batched STFT alone in the same
run as the baseline. Peak RSS is each child's maximum resident set size, compared with the size of
all features at float32.

    python benchmarks/preprocess.py                 # toy corpus, ~1-2 minutes
    python benchmarks/preprocess.py --corpus festival   # >= 50,000 phones of Festival speech
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

import numpy as np
import torch

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from convae_lightning.data import TimitDataModule
imported = time.perf_counter()
imported_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
dm = TimitDataModule(root=sys.argv[1], cache_dir=sys.argv[2], progress=False)
dm.prepare_data()
dm.setup()
loaded = time.perf_counter()
x = dm.datasets["train"].features
checksum = float(x[:256].sum())  # touch one batch of the memmap
print(json.dumps({
    "seconds": loaded - imported,
    "import_seconds": imported - t0,
    "phones": sum(dm.meta["kept"].values()) + sum(dm.meta["discarded"].values()),
    "kept": sum(dm.meta["kept"].values()),
    "input_shape": dm.meta["input_shape"],
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "imported_rss_mb": imported_rss,
    "checksum": checksum,
}))
"""


#: glibc settings that stop large temporaries going back to the OS every batch
#: (cpu-performance-notes.md); they must be set before the process starts.
TUNED_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": "4294967296",
    "MALLOC_TRIM_THRESHOLD_": "68719476736",
    "MALLOC_TOP_PAD_": "536870912",
}


def run_child(code: str, *args: str, tuned_malloc: bool = False) -> str:
    env = {**os.environ, **(TUNED_MALLOC if tuned_malloc else {})}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, env=env
    )
    return out.stdout.strip().splitlines()[-1]


def stft_baseline(segment_length: int, batch: int = 256, repeats: int = 40) -> float:
    """Segments/s of the batched STFT alone, the ceiling for feature extraction."""
    from convae_lightning.data.features import FeatureConfig, PatchExtractor

    extractor = PatchExtractor(FeatureConfig())
    x = torch.randn(batch, segment_length)
    extractor(x)
    start = time.perf_counter()
    for _ in range(repeats):
        extractor(x)
    return batch * repeats / (time.perf_counter() - start)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", choices=["toy", "festival"], default="toy")
    parser.add_argument("--speakers", type=int, default=80)
    parser.add_argument("--sentences", type=int, default=17)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/preprocess.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "corpus", Path(tmp) / "cache"
        gen_seconds = make_corpus(args.corpus, root, args.speakers, args.sentences, args.seed)
        cold = json.loads(run_child(CHILD, str(root), str(cache)))
        cached = json.loads(run_child(CHILD, str(root), str(cache)))
        shutil.rmtree(cache)
        cold_tuned = json.loads(run_child(CHILD, str(root), str(cache), tuned_malloc=True))
    shape = cold["input_shape"]
    feature_mb = cold["kept"] * int(np.prod(shape)) * 4 / 2**20
    segment_length = 272 + (shape[-1] - 1) * 152
    stft = stft_baseline(segment_length)
    result = {
        "corpus": args.corpus,
        "phones": cold["phones"],
        "patches": cold["kept"],
        "input_shape": shape,
        "corpus_generation_s": round(gen_seconds, 1),
        "cold_s": round(cold["seconds"], 2),
        "cold_phones_per_s": round(cold["phones"] / cold["seconds"]),
        "cold_tuned_malloc_s": round(cold_tuned["seconds"], 2),
        "cold_tuned_malloc_phones_per_s": round(cold["phones"] / cold_tuned["seconds"]),
        "cached_s": round(cached["seconds"], 3),
        "cached_phones_per_s": round(cached["phones"] / cached["seconds"]),
        "stft_only_segments_per_s": round(stft),
        "cold_vs_stft_ratio": round(cold["phones"] / cold["seconds"] / stft, 3),
        "cached_speedup": round(cold["seconds"] / cached["seconds"], 1),
        "features_mb": round(feature_mb, 1),
        "peak_rss_cold_mb": round(cold["peak_rss_mb"], 1),
        "peak_rss_cached_mb": round(cached["peak_rss_mb"], 1),
        "rss_after_imports_mb": round(cold["imported_rss_mb"], 1),
        "cold_rss_above_imports_vs_features": round(
            (cold["peak_rss_mb"] - cold["imported_rss_mb"]) / feature_mb, 3
        ),
        "torch_threads": torch.get_num_threads(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
