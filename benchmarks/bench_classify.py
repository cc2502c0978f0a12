"""Benchmark: the shipped trained models, end to end on full Sentinel-2 tiles, against the plain script.

    python benchmarks/bench_classify.py [--size 10980] [--runtimes openvino,xla,graph,keras] [--skip ...]
    python benchmarks/bench_classify.py --quick     # a minute or two: catches a slower stage before you stop

Generates 13-band uint16 tiled/deflate GeoTIFFs (full tile, half, quarter, and a 4096 x 4096 one;
kept in benchmarks/data/, git-ignored) and measures in one run (the machine is shared and noisy:
compare ratios, not seconds):
  1. the table users pick from: for each shipped trained model and each inference runtime, test
     accuracy (the card's, and the runtime's own on the EuroSAT test JPEGs with the share of labels
     that agree with Keras `model.predict`, where --eurosat is found), parameters, multiply-adds per
     patch, the arithmetic the runtime uses here, model-only patches/s on random input (every core)
     and its share of the CPU's float32 FMA peak, end-to-end `python -m atlas_change classify --tta 1`
     of the full tile at stride 64 (process start to exit) and the peak RSS of its process tree;
     then, for the default model and runtime, test-time augmentation 1, 2 (the default) and 4 views:
     test accuracy, model-only patches/s and the full tile end to end;
  2. what cloud masking costs: the default model on the full tile with `--no-cloud-mask`; and the
     water and snow tests, with `--no-surface-tests`;
  3. scaling (default model): quarter, half and full tile; 1 and 2 worker processes; and a Dask
     cluster started beside it (`dask scheduler` + 2 `dask worker` processes of one thread each,
     classify --scheduler tcp://...), RSS summed over scheduler, workers and client;
  4. the plain thing a user would otherwise run: keras ResNet50 `model.predict` over the same patches
     of the 4096 x 4096 scene (benchmarks/naive_classify.py), whole process against whole process.
Appends a Markdown section to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
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
from atlas_change.model.infer import DEFAULT_RUNTIME, DEFAULT_VIEWS, Predictor, runtime_precision  # noqa: E402
from atlas_change.model.registry import choose_model, load_card, models_dir  # noqa: E402


class PeakRSS:
    """Samples the summed RSS of processes and all their children every 0.2 s (`peak`), and each
    process's own (`per_process`: pid -> its peak)."""

    def __init__(self, *pids: int):
        self.pids, self.peak, self._stop = pids, 0, threading.Event()
        self.per_process: dict[int, int] = {}

    def _run(self):
        while not self._stop.is_set():
            total = 0
            for pid in self.pids:
                try:
                    me = psutil.Process(pid)
                    tree = [me] + me.children(recursive=True)
                except psutil.Error:
                    continue
                for p in tree:
                    try:
                        rss = p.memory_info().rss
                    except psutil.Error:
                        continue
                    total += rss
                    self.per_process[p.pid] = max(self.per_process.get(p.pid, 0), rss)
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def model_only(card, runtime: str, n: int = 1024, views: int = 1) -> float:
    """Patches/s of the predictor alone (normalisation + network) on random digital numbers."""
    pred = Predictor(card, runtime)
    x = np.random.default_rng(0).integers(1, 4000, size=(n, 64, 64, len(card.bands))).astype(np.uint16)
    pred(x[:256])  # warm up / compile
    t = time.perf_counter()
    pred(x, views=views)
    return n / (time.perf_counter() - t)


def test_agreement(card, runtimes: list[str], eurosat: Path | None, views: int = 1) -> dict[str, tuple[float, float]]:
    """{runtime: (accuracy, share of labels equal to keras `model.predict`'s)} on the EuroSAT RGB test
    JPEGs (with `views` TTA views), for RGB models where `eurosat` holds them; {} otherwise."""
    from atlas_change.model.train import load_split

    if eurosat is None or card.radiometry.get("kind") != "eurosat-jpeg":
        return {}
    X, y, _ = load_split(eurosat, "test", quiet=True)
    ref = Predictor(card, "keras")(X, prescaled=True, views=views).argmax(axis=1)
    out = {}
    for rt in runtimes:
        pred = Predictor(card, rt)(X, prescaled=True, views=views).argmax(axis=1)
        out[rt] = (float((pred == y).mean()), float((pred == ref).mean()))
        print(f"test split {card.name} {rt}: accuracy {out[rt][0]:.4f}, agrees with keras on {out[rt][1]:.2%}",
              flush=True)
    return out


def cpu_peak_gflops() -> tuple[float, str]:
    """float32 FMA peak: cores x 2 FMA units x 8 float32 lanes (256 bits) x 2 flops x clock (AVX-512 on
    AMD Zen 4 runs on the same two 256-bit units; bfloat16 dot products do twice the flops)."""
    info = open("/proc/cpuinfo").read().splitlines()
    mhz = max(float(line.split(":")[1]) for line in info if line.startswith("cpu MHz"))
    return os.cpu_count() * 2 * 8 * 2 * mhz / 1e3, f"{cpu_name()} at {mhz:.0f} MHz"


def run_timed(cmd: list[str], also: tuple[int, ...] = (), env: dict | None = None,
              per_process: dict | None = None) -> tuple[float, float]:
    """Run a command; -> (wall s, peak RSS GiB of its process tree plus the `also` pids' trees); with
    `per_process`, fills it with each process's own peak RSS in GiB (pid -> GiB)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    with PeakRSS(proc.pid, *also) as mem:
        log, _ = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{log[-3000:]}")
    if per_process is not None:
        per_process.update({pid: v / 2**30 for pid, v in mem.per_process.items()})
    return wall, mem.peak / 2**30


def classify_run(scene: Path, card, runtime: str = DEFAULT_RUNTIME, workers: int | None = None, scheduler: str | None = None,
                 extra: tuple[str, ...] = (), also: tuple[int, ...] = (), label: str = "",
                 env: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "atlas_change", "classify", str(scene), "--model", card.path, "--out", out,
               "--runtime", runtime, "--quiet", *extra]
        cmd += ["--workers", str(workers)] if workers else []
        cmd += ["--scheduler", scheduler] if scheduler else []
        wall, rss = run_timed(cmd, also, env)
        run = json.load(open(os.path.join(out, "run.json")))
    n = run["counts"]["patches"]
    r = dict(scene=scene.name, model=card.name, runtime=runtime, workers=workers or 1, label=label, wall=wall,
             patches=n, classified=run["counts"]["classified"], speed=n / wall, rss=rss,
             stages=run["timings_s"].get("worker_stage_seconds", {}), clouds=run["clouds"]["method"],
             cloud_pass=run["timings_s"].get("scene_cloud_pass"))
    print(f"classify {scene.name} {card.name} {runtime} {label or ''}: {wall:.1f} s, {n / wall:.1f} patches/s, "
          f"peak RSS {rss:.2f} GiB, worker stages {r['stages']}", flush=True)
    return r


def scene_file(data: Path, width: int, height: int) -> Path:
    from atlas_change.synth import make_scene

    path = data / (f"scene_{width}.tif" if width == height else f"scene_{width}x{height}.tif")
    if not path.exists():
        t = time.perf_counter()
        make_scene(path, width, height, nodata_border=0)
        print(f"generated {path} in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def shipped() -> list:
    """The trained models under models/, the default one for 13-band input first."""
    cards = [load_card(d) for d in sorted(models_dir().iterdir()) if (d / "card.json").exists()]
    cards = [c for c in cards if c.trained]
    if not cards:
        raise SystemExit("no trained model under models/: nothing to benchmark")
    default = choose_model(EUROSAT_ORDER, "13-band scene")[0].name
    return sorted(cards, key=lambda c: c.name != default)


class LocalDaskCluster:
    """`dask scheduler` and two `dask worker` processes (one thread each) beside this one: a Dask
    cluster as classify --scheduler sees one."""

    def __enter__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{port}"
        self.procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                        "--port", str(port), "--dashboard-address", ":0"], cwd=ROOT,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        time.sleep(3)
        self.procs += [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", self.address,
                                         "--nthreads", "1", "--nworkers", "1", "--no-dashboard"], cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        env={**os.environ, "GDAL_CACHEMAX": "256"}) for _ in range(2)]
        from distributed import Client

        with Client(self.address, timeout=60) as c:
            c.wait_for_workers(2, timeout=120)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=30)


QUICK_TAG = "bench_classify --quick:"


#: a stage (or the wall time) this much slower than in the last --quick run is named below the table
SLOWER = 1.15


def quick(data: Path, size: int) -> None:
    """--quick: the default classify (twice, the faster of each figure kept: the machine is noisy) and
    the plain script on one scene, each as a whole process; the stage seconds beside the last --quick
    run's on the same kind of CPU (its JSON line in RESULTS.md), those more than SLOWER times slower named;
    appended as a new one."""
    scene = scene_file(data, size, size)
    default = shipped()[0]
    runs = [classify_run(scene, default, label="quick") for _ in range(2)]
    ours = min(runs, key=lambda r: r["wall"])
    ours["stages"] = {k: min(r["stages"][k] for r in runs) for k in ours["stages"]}
    ours["cloud_pass"] = min(r["cloud_pass"] for r in runs)
    with tempfile.TemporaryDirectory() as out:
        naive, naive_rss = run_timed([sys.executable, "benchmarks/naive_classify.py", str(scene),
                                      os.path.join(out, "naive.tif")])
    now = {"wall": round(ours["wall"], 1), "rss_gib": round(ours["rss"], 2), "naive_wall": round(naive, 1),
           "ratio": round(naive / ours["wall"], 2), "stages": ours["stages"], "cloud_pass": ours["cloud_pass"],
           "model": default.name,
           "weights": default.weights_sha256[:12], "cpu": cpu_name(), "cores": os.cpu_count(), "scene": scene.name,
           "date": time.strftime("%Y-%m-%d %H:%M")}
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = [json.loads(line.split(QUICK_TAG, 1)[1]) for line in results.read_text().splitlines()
              if line.startswith(QUICK_TAG)]
    # only a run on the same kind of CPU is a baseline (records before 2026-12-06 name no instructions)
    same = [r for r in before if r.get("cpu") == now["cpu"] and r.get("cores") == now["cores"]]
    last = same[-1] if same else None
    rows = [f"| wall s | {now['wall']} | {last['wall'] if last else '-'} |"]
    rows.append(f"| plain script wall s / ratio | {now['naive_wall']} / {now['ratio']}x | "
                + (f"{last['naive_wall']} / {last['ratio']}x |" if last else "- |"))
    rows += [f"| worker s: {k} | {v} | {last['stages'].get(k, '-') if last else '-'} |" for k, v in now["stages"].items()]
    rows.append(f"| scene cloud pass, wall s | {now['cloud_pass']} | {last.get('cloud_pass', '-') if last else '-'} |")
    rows.append(f"| peak RSS GiB | {now['rss_gib']} | {last['rss_gib'] if last else '-'} |")
    pairs = [("wall", now["wall"], last and last["wall"]), ("scene cloud pass", now["cloud_pass"], last and
             last.get("cloud_pass"))] + [(k, v, last and last["stages"].get(k)) for k, v in now["stages"].items()]
    slower = [f"{k} ({b} -> {a})" for k, a, b in pairs if b and a > SLOWER * b and a - b >= 0.2]
    md = [f"## {now['date']} - bench_classify --quick ({now['cpu']}, {now['cores']} cores; {scene.name}, "
          f"{default.name} {now['weights']})", "", f"| | now (faster of 2 runs) | last --quick run on this CPU "
          f"({last['date'] if last else 'none'}) |", "|---|---|---|", *rows, "",
          f"More than {SLOWER:.2f}x (and 0.2 s) slower than the last run: {', '.join(slower) or 'none'}." if last
          else f"No earlier --quick run on this CPU ({now['cpu']}, {now['cores']} cores): nothing to compare; this "
          "run is the baseline for the next.", "",
          f"{QUICK_TAG}{json.dumps(now)}", ""]
    print("\n".join(md))
    with open(results, "a") as f:
        f.write("\n" + "\n".join(md))


def append_results(text: str) -> None:
    """Print a benchmark's Markdown section and append it to benchmarks/RESULTS.md."""
    print(text)
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write(text)


#: the widest vector instructions, as /proc/cpuinfo flags them: two machines sold under one name ("AMD EPYC"
#: in a VM) run the network at very different speeds with and without them
ISA = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def cpu_name() -> str:
    """The CPU's model name and widest vector instructions (/proc/cpuinfo), e.g. 'AMD EPYC, AVX2'."""
    from atlas_change.model.train import cpu_flags

    try:
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                      if line.startswith("model name")), "unknown CPU")
    except OSError:
        return "unknown CPU"
    flags = cpu_flags()
    return f"{model}, {next((name for flag, name in ISA if flag in flags), 'no AVX2')}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10980, help="tile side in pixels (default 10980)")
    ap.add_argument("--runtimes", default="openvino,xla,graph,keras", help="inference runtimes of the table")
    default_eurosat = os.environ.get("ATLAS_EUROSAT", str(ROOT.parent / "shared" / "eurosat" / "EuroSAT_RGB"))
    ap.add_argument("--eurosat", default=default_eurosat,
                    help="EuroSAT RGB folder for test accuracy and label agreement per runtime (default "
                    "$ATLAS_EUROSAT or ../shared/eurosat/EuroSAT_RGB; skipped where absent)")
    ap.add_argument("--baseline-size", type=int, default=4096, help="scene side for the plain script (default 4096)")
    ap.add_argument("--skip", default="", help="comma list of steps to skip: clouds,scaling,cluster,baseline")
    ap.add_argument("--models", default="", help="comma list of shipped models for the table (default: all; the "
                    "default model is always measured)")
    ap.add_argument("--quick", action="store_true",
                    help="a minute or two: the default classify of the 4096 x 4096 scene against the plain script "
                    "and against the last --quick run on the same kind of CPU in RESULTS.md, stage by stage (run "
                    "it before you stop when read/, cloud, surface, tile, infer or pipeline changed)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    data = ROOT / "benchmarks" / "data"
    data.mkdir(parents=True, exist_ok=True)
    if args.quick:
        return quick(data, args.baseline_size)
    full = scene_file(data, args.size, args.size)
    cards = shipped()
    default = cards[0]
    if args.models:
        cards = [c for c in cards if c is default or c.name in args.models.split(",")]
    runtimes = args.runtimes.split(",")

    eurosat = Path(args.eurosat) if Path(args.eurosat).is_dir() else None
    table = []
    for card in cards:
        agree = test_agreement(card, runtimes, eurosat)
        for rt in runtimes:
            speed = model_only(card, rt)
            print(f"model-only {card.name} {rt}: {speed:.1f} patches/s", flush=True)
            table.append(dict(card=card, runtime=rt, model_only=speed, precision=runtime_precision(rt),
                              e2e=classify_run(full, card, rt, extra=("--tta", "1"), label="--tta 1"),
                              test=agree.get(rt)))
    tta = []  # the default model and runtime with 1, 2 (default) and 4 views
    for views in (1, 2, 4):
        test = test_agreement(default, [DEFAULT_RUNTIME], eurosat, views).get(DEFAULT_RUNTIME)
        e2e = next(t["e2e"] for t in table if t["card"] is default and t["runtime"] == DEFAULT_RUNTIME) \
            if views == 1 else classify_run(full, default, extra=("--tta", str(views)), label=f"--tta {views}")
        tta.append(dict(views=views, test=test, model_only=model_only(default, DEFAULT_RUNTIME, views=views), e2e=e2e))
    e2e_default = next(t["e2e"] for t in tta if t["views"] == DEFAULT_VIEWS)
    with tempfile.TemporaryDirectory() as cache:  # no converted OpenVINO model yet: converted, with TensorFlow
        cold = classify_run(full, default, label="first run (empty cache)", env={"ATLAS_CACHE": cache})
    no_clouds = None if "clouds" in skip else classify_run(full, default, extra=("--no-cloud-mask",),
                                                           label="--no-cloud-mask")
    no_surface = None if "clouds" in skip else classify_run(full, default, extra=("--no-surface-tests",),
                                                            label="--no-surface-tests")
    scaling = []
    if "scaling" not in skip:
        scaling = [classify_run(scene_file(data, args.size // 2, args.size // 2), default, label="quarter"),
                   classify_run(scene_file(data, args.size, args.size // 2), default, label="half"),
                   dict(e2e_default, label="full tile"), classify_run(full, default, workers=2, label="2 worker processes")]
    cluster = None
    if "cluster" not in skip:
        with LocalDaskCluster() as c:
            cluster = classify_run(full, default, scheduler=c.address, also=tuple(p.pid for p in c.procs),
                                   label="Dask cluster: scheduler + 2 workers x 1 thread")
    naive = None
    if "baseline" not in skip:
        scene = scene_file(data, args.baseline_size, args.baseline_size)
        ours = classify_run(scene, default, label="baseline scene")
        with tempfile.TemporaryDirectory() as out:
            wall, rss = run_timed([sys.executable, "benchmarks/naive_classify.py", str(scene),
                                   os.path.join(out, "naive.tif")])
        naive = dict(wall=wall, rss=rss, ours=ours)
        print(f"plain keras ResNet50 predict on {scene.name}: {wall:.1f} s; classify {ours['wall']:.1f} s: "
              f"{wall / ours['wall']:.2f}x faster", flush=True)

    peak, cpu = cpu_peak_gflops()
    md = [f"\n## {datetime.now():%Y-%m-%d %H:%M} - shipped models on a {args.size} x {args.size} x 13-band tile", "",
          f"Machine: {os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
          f"Python {platform.python_version()}, CPU float32 FMA peak (2 x 256-bit FMA units) {peak:.0f} GFLOP/s. "
          f"Command: `python benchmarks/bench_classify.py {' '.join(sys.argv[1:])}`. One run; compare ratios. "
          "Test accuracy: the card's (5,200 EuroSAT test JPEGs); then this runtime's own on them, and the "
          "share of its labels equal to keras `model.predict`'s.", "",
          "| model | runtime | arithmetic | test accuracy (card / this runtime) | labels = keras | parameters "
          "| MACs / patch | model-only patches/s | share of f32 FMA peak | full tile end to end s (`--tta 1`) "
          "| patches/s | peak RSS GiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in table:
        c, e, test = t["card"], t["e2e"], t["test"]
        macs = c.training.get("macs_per_patch", 0)
        own, agree = (f"{test[0]:.2%}", f"{test[1]:.2%}") if test else ("-", "-")
        md.append(f"| {c.name}{' (default)' if c is default else ''} | `{t['runtime']}` | {t['precision']} | "
                  f"{c.metrics.get('accuracy', float('nan')):.2%} / {own} | {agree} | "
                  f"{c.training.get('parameters', 0):,} | "
                  f"{macs / 1e6:.0f} M | {t['model_only']:.0f} | {t['model_only'] * 2 * macs / 1e9 / peak:.0%} | "
                  f"{e['wall']:.0f} | {e['speed']:.0f} | {e['rss']:.2f} |")
    md += ["", f"Test-time augmentation, {default.name} with `{DEFAULT_RUNTIME}` (default `--tta {DEFAULT_VIEWS}`):", "",
           "| `--tta` | test accuracy (5,200 JPEGs) | model-only patches/s | full tile end to end s | peak RSS GiB |",
           "|---|---|---|---|---|"]
    for t in tta:
        acc = f"{t['test'][0]:.2%}" if t["test"] else "-"
        md.append(f"| {t['views']}{' (default)' if t['views'] == DEFAULT_VIEWS else ''} | {acc} | "
                  f"{t['model_only']:.0f} | {t['e2e']['wall']:.0f} | {t['e2e']['rss']:.2f} |")
    st = e2e_default["stages"]
    md += ["", f"Default model end to end: {e2e_default['patches']} patches, clouds by {e2e_default['clouds']}; "
           f"worker seconds read {st.get('read', 0):.0f}, cloud {st.get('cloud', 0):.0f}, cut {st.get('cut', 0):.0f}, "
           f"infer {st.get('infer', 0):.0f}."]
    md += [f"First run on a machine (no converted model in the cache yet: TensorFlow is imported to convert it): "
           f"{cold['wall']:.0f} s, against {e2e_default['wall']:.0f} s once converted."]
    if no_surface:
        md += [f"Water and snow tests: {e2e_default['wall']:.0f} s with, {no_surface['wall']:.0f} s with "
               f"`--no-surface-tests` ({e2e_default['wall'] / no_surface['wall'] - 1:+.0%})."]
    if no_clouds:
        md += [f"Cloud masking: {e2e_default['wall']:.0f} s with, {no_clouds['wall']:.0f} s with `--no-cloud-mask` "
               f"({e2e_default['wall'] / no_clouds['wall'] - 1:+.0%})."]
    if scaling or cluster:
        md += ["", "| scaling (default model, stride 64) | patches | wall s | time vs quarter | patches vs quarter "
               "| peak RSS GiB |", "|---|---|---|---|---|---|"]
        base = scaling[0] if scaling else cluster
        for r in scaling + ([cluster] if cluster else []):
            md.append(f"| {r['label'] or r['scene'] + ', 1 worker process'} | {r['patches']} | {r['wall']:.0f} | "
                      f"{r['wall'] / base['wall']:.2f}x | {r['patches'] / base['patches']:.2f}x | {r['rss']:.2f} |")
    if naive:
        o = naive["ours"]
        md += ["", f"Plain script (`benchmarks/naive_classify.py`: rasterio window per patch, keras ResNet50 "
               f"`model.predict` per row of patches) on {o['scene']} ({o['patches']} patches): {naive['wall']:.0f} s, "
               f"peak RSS {naive['rss']:.2f} GiB; `classify` with the default model ({default.name}) on the same "
               f"scene: {o['wall']:.0f} s, peak RSS {o['rss']:.2f} GiB: **{naive['wall'] / o['wall']:.1f}x faster**."]
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
