"""atlas-change: Sentinel-2 scenes to EuroSAT land-use / land-cover maps on a plain CPU.

API: `atlas_change.classify(path, ...)`, `atlas_change.compare(before, after, ...)`,
`atlas_change.compare_periods([p1, p2, p3], ...)`, `atlas_change.export_gpkg(folder, gpkg)`,
`atlas_change.change_map(folder)`.

Packages by stage, each importing only from those before it: the shared basics here (classes,
bands, dates, errors, names, tile, outputs), `read` (pixels from any source), `model` (networks,
training, the predictor), `mapping` (a scene to a map), `change` (periods, the joint decision),
`publish` (GeoPackage, HTML), `accuracy` (sample, assess), `batch` (job files, runs, searches),
`cli` (the command line)."""
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info/warning lines (oneDNN, cpu_feature_guard)
# TensorFlow's BFC allocator for CPU tensors: with the system allocator every tensor over glibc's mmap
# threshold (32 MiB at most) is mapped afresh and its pages faulted in and zeroed at each step: 12 % more CPU
# time a training step, an epoch about 1.1x as long (benchmarks/bench_train_step.py). Read at the first tensor.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
# TensorFlow turns its oneDNN kernels on by itself only where the CPU has AVX512-VNNI/BF16 or AMX; on AVX2
# a training step took 7-20 % less CPU time with them (same benchmark), and every CPU runs the same kernels.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# OpenVINO's model converter sends usage reports (DNS and HTTPS to Google Analytics) and writes ~/intel/
# whenever its `openvino_telemetry` package imports; without it the converter uses its own silent stub.
# A batch tool sends nothing anywhere unasked: in every process that imports atlas_change, it cannot import.
sys.modules.setdefault("openvino_telemetry", None)

__version__ = "0.1.0"

#: what TensorFlow's C++ logging prints at import on CPUs where oneDNN is on (AVX512-VNNI/BF16, AMX),
#: whatever TF_CPP_MIN_LOG_LEVEL says: absl logs before it is initialised, straight to file descriptor 2
_TF_IMPORT_NOISE = ("WARNING: All log messages before absl::InitializeLog()", "oneDNN custom operations are on")


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Catch what C libraries write straight to file descriptor 2 inside the block (TensorFlow's
    absl lines, libtiff's "_tiffWriteProc: No space left on device."): the yielded list holds those
    lines afterwards, for the caller to pass on or to turn into its own one-line error."""
    sys.stderr.flush()
    saved = os.dup(2)
    lines: list[str] = []
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines.extend(caught.read().decode(errors="replace").splitlines(keepends=True))


def quiet_tensorflow() -> None:
    """Import TensorFlow and Keras once per process without their import-time log lines on stderr
    (anything else they print there is passed on); later `import tensorflow` / `keras` are free."""
    if "keras" in sys.modules:
        return
    caught: list[str] = []
    try:
        with captured_stderr() as caught:
            import keras  # noqa: F401  (imports tensorflow, its backend)
    finally:
        for line in caught:
            if not any(n in line for n in _TF_IMPORT_NOISE):
                sys.stderr.write(line)

from .classes import CLASSES  # noqa: E402
from .errors import AtlasError  # noqa: E402


def classify(path, **kwargs):
    """Classify a scene -> xarray.Dataset; see `atlas_change.mapping.pipeline.classify` for the options.
    Runs Dask in this process (threads, one per core) unless `scheduler` or `workers` say otherwise,
    so it is safe in a plain script without an `if __name__ == "__main__":` guard."""
    from .mapping.pipeline import classify as _classify

    kwargs.setdefault("quiet", True)
    if "workers" not in kwargs:
        kwargs.setdefault("scheduler", "threads")
    return _classify(path, **kwargs)


def compare(before, after, **kwargs) -> dict:
    """Compare two dates or periods over an AOI; see `atlas_change.change.compare.compare`."""
    from .change.compare import compare as _compare

    return _compare(before, after, **kwargs)


def compare_periods(periods, dates=None, **kwargs) -> dict:
    """Decide every cell's class history over three or more dates or periods; see
    `atlas_change.change.compare.compare_periods`."""
    from .change.compare import compare_periods as _periods

    return _periods(periods, dates, **kwargs)


def export_gpkg(folder, gpkg):
    """GeoPackage of tiles/changes from a compare or classify output folder."""
    from .publish.export import export_gpkg as _export

    return _export(folder, gpkg)


def change_map(folder, out_html=None, side_by_side=False):
    """change_map.html (folium) from a compare or classify output folder; with `side_by_side` (a
    compare folder) also change_map_side_by_side.html."""
    from .publish.view import change_map as _view

    return _view(folder, out_html, side_by_side=side_by_side)


__all__ = ["CLASSES", "AtlasError", "classify", "compare", "compare_periods", "export_gpkg", "change_map",
           "__version__"]
