"""atlas-change: Sentinel-2 scenes to EuroSAT land-use / land-cover maps on a plain CPU."""
__version__ = "0.1.0"

from .classes import CLASSES  # noqa: E402
from .errors import AtlasError  # noqa: E402


def classify(path, **kwargs):
    """Classify a scene -> xarray.Dataset; see `atlas_change.pipeline.classify` for the options."""
    from .pipeline import classify as _classify

    kwargs.setdefault("quiet", True)
    return _classify(path, **kwargs)


__all__ = ["CLASSES", "AtlasError", "classify", "__version__"]
