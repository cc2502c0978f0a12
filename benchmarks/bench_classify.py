"""Benchmark: model-only throughput vs end-to-end `classify` vs a straightforward script, on full-size tiles.

    python benchmarks/bench_classify.py [--size 10980] [--runs 64:1,64:2,32:1] [--skip scaling,baseline]

Generates 13-band uint16 tiled/deflate GeoTIFFs (full tile, half and quarter; kept in benchmarks/data/,
git-ignored) and measures in one run (the machine is shared and noisy: compare ratios, not seconds):
  1. model-only patches/s on random input, per runtime (xla, graph, keras predict), using every core,
     the model's multiply-adds per patch and the GFLOP/s that makes, against the CPU's FMA peak;
  2. end-to-end `python -m atlas_change classify` on the full tile for each STRIDE:WORKERS in --runs:
     wall time (process start to exit), patches/s, ratio to the best model-only runtime, peak RSS
     of the classify process tree (client + Dask workers), and where the workers spent their time;
  3. scaling: the same at stride 64 on the quarter, half and full tile;
  4. the straightforward script (benchmarks/naive_classify.py) on the quarter tile against classify
     on the same scene.
Appends a Markdown section to benchmarks/RESULTS.md. Speed does not depend on training, so with
no trained model it uses a seed-initialised one of the same architecture.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
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
    """Samples the summed RSS of a process and all its children (Dask workers) every 0.2 s."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()

    def _run(self):
        try:
            me = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            total = 0
            try:
                tree = [me] + me.children(recursive=True)
            except psutil.Error:
                break
            for p in tree:
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
    x = np.random.default_rng(0).integers(1, 4000, size=(n, 64, 64, len(card.bands))).astype(np.uint16)
    pred(x[:256])  # warm up / compile
    t = time.perf_counter()
    pred(x)
    return n / (time.perf_counter() - t)


def macs_per_patch(card) -> int:
    """Multiply-adds of one 64 x 64 patch through the model's convolutions and dense layers."""
    import keras

    model = keras.models.load_model(os.path.join(card.path, "model.keras"), compile=False)
    total = 0
    for layer in model._flatten_layers(include_self=False):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        out = layer.output.shape  # (None, h, w, c) or (None, c)
        spatial = int(np.prod(out[1:-1])) if len(out) > 2 else 1
        total += spatial * int(np.prod(kernel.shape))
    return total


def cpu_peak_gflops() -> tuple[float, str]:
    """FMA peak: cores x 2 FMA units x 8 float32 lanes (AVX2) x 2 flops x clock."""
    info = open("/proc/cpuinfo").read().splitlines()
    mhz = max(float(line.split(":")[1]) for line in info if line.startswith("cpu MHz"))
    name = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.processor())
    return os.cpu_count() * 2 * 8 * 2 * mhz / 1e3, f"{name} at {mhz:.0f} MHz"


def run_timed(cmd: list[str]) -> tuple[float, float]:
    """Run a command; -> (wall s, peak RSS GiB of its process tree). Raises on failure."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with PeakRSS(proc.pid) as mem:
        log, _ = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{log[-3000:]}")
    return wall, mem.peak / 2**30


def classify_run(scene: Path, card, stride: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        wall, rss = run_timed([sys.executable, "-m", "atlas_change", "classify", str(scene), "--model", card.path,
                               "--stride", str(stride), "--workers", str(workers), "--out", out,
                               "--allow-untrained", "--quiet"])
        run = json.load(open(os.path.join(out, "run.json")))
    n = run["counts"]["patches"]
    print(f"classify {scene.name} stride {stride} workers {workers}: {wall:.1f} s, {n / wall:.1f} patches/s, "
          f"peak RSS {rss:.2f} GiB, stages {run['timings_s']}", flush=True)
    return dict(scene=scene.name, stride=stride, workers=workers, wall=wall, patches=n, speed=n / wall, rss=rss,
                timings=run["timings_s"])


def scene_file(data: Path, width: int, height: int) -> Path:
    from atlas_change.synth import make_scene

    path = data / (f"scene_{width}.tif" if width == height else f"scene_{width}x{height}.tif")
    if not path.exists():
        t = time.perf_counter()
        make_scene(path, width, height, nodata_border=0)
        print(f"generated {path} in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10980, help="tile side in pixels (default 10980)")
    ap.add_argument("--runs", default=f"64:1,64:{os.cpu_count()},32:1",
                    help="end-to-end runs on the full tile as STRIDE:WORKERS,... where WORKERS is the number of "
                    "Dask worker processes sharing the cores (default 64:1,64:N,32:1; 1 is classify's default)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--runtimes", default="xla,graph,keras")
    ap.add_argument("--skip", default="", help="comma list of steps to skip: scaling,baseline")
    args = ap.parse_args()

    from atlas_change.train import init_untrained

    data = ROOT / "benchmarks" / "data"
    data.mkdir(parents=True, exist_ok=True)
    try:
        card = load_card(args.model or DEFAULT_MODEL)
    except AtlasError:
        d = data / "untrained-spectrumnet"
        card = load_card(d) if (d / "card.json").exists() else init_untrained("spectrumnet", EUROSAT_ORDER, d,
                                                                                  "untrained-spectrumnet")
    full = scene_file(data, args.size, args.size)
    half = scene_file(data, args.size, args.size // 2)
    quarter = scene_file(data, args.size // 2, args.size // 2)
    skip = set(filter(None, args.skip.split(",")))
    workers = 1  # classify's default: one process, a thread per core

    macs = macs_per_patch(card)
    speeds = {}
    for rt in args.runtimes.split(","):
        speeds[rt] = model_only(card, rt)
        print(f"model-only {rt}: {speeds[rt]:.1f} patches/s = {speeds[rt] * 2 * macs / 1e9:.1f} GFLOP/s", flush=True)
    best_rt = max(speeds, key=speeds.get)
    best = speeds[best_rt]

    runs = [classify_run(full, card, int(s), int(w)) for s, w in (r.split(":") for r in args.runs.split(","))]
    scaling = []
    if "scaling" not in skip:
        scaling = [classify_run(quarter, card, 64, workers), classify_run(half, card, 64, workers)]
        scaling += [r for r in runs if r["stride"] == 64 and r["workers"] == workers][:1]
    naive = None
    if "baseline" not in skip:
        ours = next((r for r in scaling if r["scene"] == quarter.name), None) or classify_run(quarter, card, 64, workers)
        with tempfile.TemporaryDirectory() as out:
            wall, rss = run_timed([sys.executable, "benchmarks/naive_classify.py", str(quarter), card.path,
                                   os.path.join(out, "naive.tif")])
        naive = dict(wall=wall, rss=rss, speed=ours["patches"] / wall, ours=ours)
        print(f"straightforward script on {quarter.name}: {wall:.1f} s, {naive['speed']:.1f} patches/s; "
              f"classify is {wall / ours['wall']:.2f}x faster", flush=True)

    peak, cpu = cpu_peak_gflops()
    md = [f"\n## {datetime.now():%Y-%m-%d %H:%M} — {args.size} x {args.size} x 13 bands, model {card.name} "
          f"({card.architecture})", "",
          f"Machine: {os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
          f"Python {platform.python_version()}. Command: `python benchmarks/bench_classify.py "
          f"{' '.join(sys.argv[1:])}`.", "",
          f"Model: {macs / 1e6:.0f} M multiply-adds per 64 x 64 patch. CPU FMA peak (AVX2, 2 FMA units): "
          f"{peak:.0f} GFLOP/s.", "",
          "| model-only runtime | patches/s | GFLOP/s | share of FMA peak |", "|---|---|---|---|"]
    md += [f"| `{rt}` | {v:.1f} | {v * 2 * macs / 1e9:.1f} | {v * 2 * macs / 1e9 / peak:.0%} |"
           for rt, v in speeds.items()]
    md += ["", "End to end (`python -m atlas_change classify`, process start to exit, its default runtime `xla`; "
           f"ratio to the best model-only runtime, `{best_rt}`):", "",
           "| scene | stride | worker processes | patches | wall s | patches/s | ratio to model-only | peak RSS GiB "
           "| worker s: read / cut / infer |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs + [r for r in scaling if r not in runs]:
        st = r["timings"].get("worker_stage_seconds", {})
        md.append(f"| {r['scene']} | {r['stride']} | {r['workers']} | {r['patches']} | {r['wall']:.1f} | "
                  f"{r['speed']:.1f} | {r['speed'] / best:.2f} | {r['rss']:.2f} | "
                  f"{st.get('read', 0):.0f} / {st.get('cut', 0):.0f} / {st.get('infer', 0):.0f} |")
    if scaling:
        base = scaling[0]
        md += ["", "Scaling (stride 64): " + ", ".join(
            f"{r['scene']} {r['patches']} patches {r['wall']:.0f} s ({r['wall'] / base['wall']:.2f}x time for "
            f"{r['patches'] / base['patches']:.2f}x patches)" for r in scaling) + "."]
    if naive:
        o = naive["ours"]
        md += ["", f"Straightforward script (`benchmarks/naive_classify.py`: rasterio window per patch, Keras "
               f"`predict` per row) on {quarter.name}: {naive['wall']:.1f} s, {naive['speed']:.1f} patches/s, peak "
               f"RSS {naive['rss']:.2f} GiB; classify on the same scene {o['wall']:.1f} s: "
               f"**{naive['wall'] / o['wall']:.2f}x faster**."]
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
