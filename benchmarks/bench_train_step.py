"""Time `train`'s training step and a Keras prediction under TensorFlow's CPU settings.

    python benchmarks/bench_train_step.py [--arch spectrumnet-bn-w0.5] [--steps 6] [--batch 256] [--repeat 3]
        [--settings 1,2,3]

Each setting runs in child processes of its own (TensorFlow reads them at import and at its first
tensor), the settings taking turns `--repeat` times in this run, on random 64 x 64 x 3 batches through
`train`'s own compile (AdamW, warm-up + cosine, label smoothing): seconds a step after the first
(traced) one, the CPU seconds in user and kernel mode a step, and the minor page faults a step.

- `TF_CPU_ALLOCATOR_USE_BFC`: with the plain system allocator (false) every tensor over glibc's mmap
  threshold (32 MiB at most) is a fresh mapping whose pages the kernel faults in and zeroes again at
  each step; the BFC allocator keeps its memory.
- `TF_ENABLE_ONEDNN_OPTS`: TensorFlow turns its oneDNN kernels on by itself only on CPUs with
  AVX512-VNNI, AVX512-BF16 or AMX; elsewhere (AVX2) they are off unless this is 1.
- XLA (`--settings` 4): the step compiled by XLA (`jit_compile=True`), which Keras turns on by itself
  only where TensorFlow sees a GPU.
- bfloat16 (`--settings` 5): the network built under `train --precision mixed_bfloat16` (bfloat16
  arithmetic, float32 weights); it can pay only on CPUs with AVX512-BF16 or AMX (emulated elsewhere).

atlas_change sets both (true, 1) unless the environment says otherwise. Wall time a step is the
median and range of the repeats (on a shared virtual machine it jumps between processes whatever the
setting); CPU seconds and faults are means. Prints a Markdown section for RESULTS.md."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: (label, TF_CPU_ALLOCATOR_USE_BFC, TF_ENABLE_ONEDNN_OPTS, XLA, precision); the first run is the baseline
SETTINGS = (("system allocator, oneDNN off", "false", "0", False, "float32"),
            ("BFC allocator, oneDNN off", "true", "0", False, "float32"),
            ("BFC allocator, oneDNN on (atlas_change's default)", "true", "1", False, "float32"),
            ("the default and XLA (`jit_compile=True`; Keras leaves it off on CPUs)", "true", "1", True, "float32"),
            ("the default in bfloat16 (`train --precision mixed_bfloat16`)", "true", "1", False, "mixed_bfloat16"))


def child(arch: str, steps: int, batch: int, xla: bool = False, precision: str = "float32") -> dict:
    """Measure in this process; returns the figures as a dict."""
    import resource

    import numpy as np

    from atlas_change import quiet_tensorflow
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    from atlas_change.model.nets import build
    from atlas_change.model.train import Recipe, _compile

    keras.mixed_precision.set_global_policy(precision)  # as train builds it
    model = build(arch, 3)
    keras.mixed_precision.set_global_policy("float32")
    _compile(keras, model, Recipe(), 3e-3, 200, 61)
    model.jit_compile = xla
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 64, 64, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 10, batch), 10)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, steps_per_epoch=1, epochs=1, verbose=0)  # traces the step

    def timed(fn) -> dict:
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        fn()
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        return {"wall": wall / steps, "user": (r1.ru_utime - r0.ru_utime) / steps,
                "sys": (r1.ru_stime - r0.ru_stime) / steps, "faults": (r1.ru_minflt - r0.ru_minflt) / steps}

    out = {"train": timed(lambda: model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0))}
    model.predict(x, batch_size=batch, verbose=0)  # traces the prediction
    out["predict"] = timed(lambda: [model.predict(x, batch_size=batch, verbose=0) for _ in range(steps)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="spectrumnet-bn-w0.5", help="architecture (default spectrumnet-bn-w0.5)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per setting (default 6)")
    ap.add_argument("--batch", type=int, default=256, help="patches a step (default 256, train's default)")
    ap.add_argument("--repeat", type=int, default=3, help="child processes per setting, taking turns (default 3)")
    ap.add_argument("--settings", default="1,2,3",
                    help=f"which settings, by number: {'; '.join(f'{k} {s[0]}' for k, s in enumerate(SETTINGS, 1))} "
                         "(default 1,2,3); the first given is the baseline of the ratios")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--xla", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.arch, a.steps, a.batch, a.xla, a.precision)))
        return
    settings = [SETTINGS[int(k) - 1] for k in a.settings.split(",")]
    from bench_classify import cpu_name

    runs: dict[str, list[dict]] = {label: [] for label, *_ in settings}
    for _ in range(a.repeat):
        for label, bfc, onednn, xla, precision in settings:
            env = {**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": bfc, "TF_ENABLE_ONEDNN_OPTS": onednn,
                   "TF_CPP_MIN_LOG_LEVEL": "3"}
            run = subprocess.run([sys.executable, "-W", "ignore", __file__, "--child", "--arch", a.arch,
                                  "--steps", str(a.steps), "--batch", str(a.batch), "--precision", precision,
                                  *(["--xla"] if xla else [])],
                                 env=env, capture_output=True, text=True, check=True)
            runs[label].append(json.loads(run.stdout.strip().splitlines()[-1]))
    print(f"## {time.strftime('%Y-%m-%d %H:%M')} - bench_train_step ({cpu_name()}, {os.cpu_count()} cores; "
          f"{a.arch}, batch {a.batch}, {a.steps} timed steps, {a.repeat} processes a setting)\n")
    print("| setting | what | s a step: median (range) | ratio of medians to the first | "
          "user / kernel CPU-s a step | minor page faults a step |\n|---|---|---|---|---|---|")
    base = runs[settings[0][0]]
    for label, *_ in settings:
        for what in ("train", "predict"):
            ms = [r[what] for r in runs[label]]
            walls = [m["wall"] for m in ms]
            user, kernel, faults = (statistics.mean(m[k] for m in ms) for k in ("user", "sys", "faults"))
            ratio = statistics.median(r[what]["wall"] for r in base) / statistics.median(walls)
            print(f"| {label} | {what} | {statistics.median(walls):.2f} ({min(walls):.2f}-{max(walls):.2f}) | "
                  f"{ratio:.2f}x | {user:.2f} / {kernel:.2f} | {faults:,.0f} |")


if __name__ == "__main__":
    main()
