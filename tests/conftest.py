"""Shared fixtures: small synthetic scenes and an explicitly untrained model (tests only check
the pipeline's behaviour: grids, bands, nodata, files, errors; never label quality)."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from atlas_change.bands import EUROSAT_ORDER, L2A_ORDER  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory):
    """Converted models of the tests' throw-away networks go to a temporary cache, not the user's."""
    old = os.environ.get("ATLAS_CACHE")
    os.environ["ATLAS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("ATLAS_CACHE")
    else:
        os.environ["ATLAS_CACHE"] = old


@pytest.fixture(scope="session")
def model13(tmp_path_factory):
    from atlas_change.train import init_untrained

    return init_untrained("spectrumnet", EUROSAT_ORDER, tmp_path_factory.mktemp("m") / "sn13", "sn13")


@pytest.fixture(scope="session")
def model12(tmp_path_factory):
    from atlas_change.train import init_untrained

    return init_untrained("spectrumnet", L2A_ORDER, tmp_path_factory.mktemp("m") / "sn12", "sn12")


def run_classify(scene, card, **kw):
    from atlas_change.pipeline import classify

    kw.setdefault("scheduler", "sync")
    kw.setdefault("runtime", "graph")
    return classify(scene, model=card.path, allow_untrained=True, **kw)
