"""atlas-change: Sentinel-2 scenes to EuroSAT land-use / land-cover maps on a plain CPU.

API: `atlas_change.classify(path, ...)`, `atlas_change.compare.compare(before, after, ...)`,
`atlas_change.export_gpkg(folder, gpkg)`, `atlas_change.change_map(folder)`."""
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info/warning lines (oneDNN, cpu_feature_guard)

__version__ = "0.1.0"

#: what TensorFlow's C++ logging prints at import on CPUs where oneDNN is on (AVX512-VNNI/BF16, AMX),
#: whatever TF_CPP_MIN_LOG_LEVEL says: absl logs before it is initialised, straight to file descriptor 2
_TF_IMPORT_NOISE = ("WARNING: All log messages before absl::InitializeLog()", "oneDNN custom operations are on")


def quiet_tensorflow() -> None:
    """Import TensorFlow and Keras once per process without their import-time log lines on stderr
    (anything else they print there is passed on); later `import tensorflow` / `keras` are free."""
    if "keras" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import keras  # noqa: F401  (imports tensorflow, its backend)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines(keepends=True):
                if not any(n in line for n in _TF_IMPORT_NOISE):
                    sys.stderr.write(line)

from .classes import CLASSES  # noqa: E402
from .errors import AtlasError  # noqa: E402


def classify(path, **kwargs):
    """Classify a scene -> xarray.Dataset; see `atlas_change.pipeline.classify` for the options.
    Runs Dask in this process (threads, one per core) unless `scheduler` or `workers` say otherwise,
    so it is safe in a plain script without an `if __name__ == "__main__":` guard."""
    from .pipeline import classify as _classify

    kwargs.setdefault("quiet", True)
    if "workers" not in kwargs:
        kwargs.setdefault("scheduler", "threads")
    return _classify(path, **kwargs)


def export_gpkg(folder, gpkg):
    """GeoPackage of tiles/changes from a compare or classify output folder."""
    from .export import export_gpkg as _export

    return _export(folder, gpkg)


def change_map(folder, out_html=None):
    """change_map.html (folium) from a compare or classify output folder."""
    from .view import change_map as _view

    return _view(folder, out_html)


__all__ = ["CLASSES", "AtlasError", "classify", "export_gpkg", "change_map", "__version__"]
