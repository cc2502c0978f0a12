"""Benchmark: model-only throughput vs end-to-end `classify` on a full-size Sentinel-2 tile.

    python benchmarks/bench_classify.py [--size 10980] [--workers 2] [--stride 64] [--model PATH]

Generates a 13-band uint16 tiled/deflate GeoTIFF of size x size (kept in benchmarks/data/, git-ignored),
measures in one run (the machine is shared and noisy, so compare the ratios, not the seconds):
  1. model-only patches/s of the model on random input, per runtime (xla, graph, keras predict),
     with the same thread count as the whole machine;
  2. end-to-end classify (read, cut, infer on a Dask LocalCluster, assemble, write) patches/s;
  3. their ratio, and the peak RSS of the process tree (client + Dask workers).
Appends a Markdown section to benchmarks/RESULTS.md. Speed does not depend on training, so with
no trained model it uses a seed-initialised one of the same architecture.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import psutil  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from atlas_change.bands import EUROSAT_ORDER  # noqa: E402
from atlas_change.errors import AtlasError  # noqa: E402
from atlas_change.registry import DEFAULT_MODEL, load_card  # noqa: E402


class PeakRSS:
    """Samples the RSS of this process and all its children (Dask workers) every 0.2 s."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me] + me.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def model_only(card, runtime: str, n: int = 1024) -> float:
    from atlas_change.infer import Predictor

    pred = Predictor(card, runtime)
    x = np.random.default_rng(0).integers(1, 4000, size=(n, 64, 64, len(card.bands))).astype(np.float32)
    pred(x[:256])  # warm up / compile
    t = time.perf_counter()
    pred(x)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10980)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--model", default=None)
    ap.add_argument("--runtimes", default="xla,graph,keras")
    args = ap.parse_args()

    from atlas_change.pipeline import classify
    from atlas_change.synth import make_scene
    from atlas_change.train import init_untrained

    data = ROOT / "benchmarks" / "data"
    data.mkdir(parents=True, exist_ok=True)
    try:
        card = load_card(args.model or DEFAULT_MODEL)
    except AtlasError:
        d = data / "untrained-spectrumnet"
        card = load_card(d) if (d / "card.json").exists() else init_untrained("spectrumnet", EUROSAT_ORDER, d,
                                                                                  "untrained-spectrumnet")
    scene = data / f"scene_{args.size}.tif"
    if not scene.exists():
        t = time.perf_counter()
        make_scene(scene, args.size, args.size, nodata_border=0)
        print(f"generated {scene} in {time.perf_counter() - t:.0f} s", flush=True)

    rows = []
    speeds = {}
    for rt in args.runtimes.split(","):
        speeds[rt] = model_only(card, rt)
        print(f"model-only {rt}: {speeds[rt]:.1f} patches/s", flush=True)
    best_rt = max(speeds, key=speeds.get)
    with tempfile.TemporaryDirectory() as out, PeakRSS() as mem:
        t = time.perf_counter()
        ds = classify(scene, model=card.path, stride=args.stride, workers=args.workers, out=out,
                      runtime=best_rt, allow_untrained=True, quiet=False)
        wall = time.perf_counter() - t
    n_patches = ((args.size - 64) // args.stride + 1) ** 2
    e2e = n_patches / wall
    rows.append((f"classify, stride {args.stride}, {args.workers} workers, runtime {best_rt}", wall, e2e,
                 e2e / speeds[best_rt], mem.peak / 2**30))
    print(f"end-to-end: {wall:.1f} s, {e2e:.1f} patches/s, ratio {e2e / speeds[best_rt]:.2f}, "
          f"peak RSS {mem.peak / 2**30:.2f} GiB; output {ds.sizes['y']} x {ds.sizes['x']}", flush=True)

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    md = [f"\n## {datetime.now():%Y-%m-%d %H:%M} — {args.size} x {args.size} x 13 bands, model {card.name} "
          f"({card.architecture})", "",
          f"Machine: {os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
          f"Python {platform.python_version()}.", "",
          "| measurement | patches/s |", "|---|---|"]
    md += [f"| model-only, runtime `{rt}` | {v:.1f} |" for rt, v in speeds.items()]
    md += ["", "| end to end | wall s | patches/s | ratio to model-only (best runtime) | peak RSS GiB |",
           "|---|---|---|---|---|"]
    md += [f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.2f} | {r[4]:.2f} |" for r in rows]
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
