"""Model definitions, the registry (cards, hashes) and train/evaluate on a tiny EuroSAT-layout folder."""
import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from affine import Affine

from atlas_change.bands import EUROSAT_ORDER
from atlas_change.classes import CLASSES
from atlas_change.errors import AtlasError
from atlas_change.registry import load_card


def test_spectrumnet_matches_publication():
    from atlas_change.nets import build

    m = build("spectrumnet", 13)
    assert m.count_params() == 1_450_090  # ~1.45 M as published for 13 bands
    assert m.output_shape == (None, 10)
    assert m.get_layer("stem").strides == (2, 2) and m.get_layer("stem").filters == 96
    assert [m.get_layer(f"module{i}_squeeze").filters for i in range(1, 9)] == [32, 32, 64, 64, 96, 96, 128, 128]
    assert build("resnet50", 3).output_shape == (None, 10)


@pytest.fixture(scope="module")
def eurosat(tmp_path_factory):
    """EuroSAT MS layout: DATA/<Class>/<Class>_<n>.tif (13 bands, band k holds 100*(k+1) + class),
    split files listing .jpg names in DATA/.. ."""
    root = tmp_path_factory.mktemp("eurosat")
    data = root / "EuroSAT_MS"
    rng = np.random.default_rng(0)
    names = {"train": [], "val": [], "test": []}
    for ci, cls in enumerate(CLASSES):
        (data / cls).mkdir(parents=True)
        for n in range(1, 7):
            arr = (np.arange(1, 14)[:, None, None] * 100 + ci + rng.integers(0, 50, (13, 64, 64))).astype(np.uint16)
            with rasterio.open(data / cls / f"{cls}_{n}.tif", "w", driver="GTiff", width=64, height=64, count=13,
                               dtype="uint16", crs="EPSG:32632", transform=Affine(10, 0, 0, 0, -10, 640)) as d:
                d.write(arr)
            names["train" if n <= 4 else "val" if n == 5 else "test"].append(f"{cls}_{n}.jpg")
    for split, items in names.items():
        (root / f"eurosat-{split}.txt").write_text("\n".join(items) + "\n")
    return data


def test_load_split_band_order_b8a_last(eurosat, tmp_path, monkeypatch):
    from atlas_change.train import band_indices, load_split

    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path))
    X, y = load_split(eurosat, "test", quiet=True)
    assert X.shape == (10, 64, 64, 13) and X.dtype == np.uint16 and list(y) == list(range(10))
    # band k of the file (k = 0..12) holds ~100*(k+1): B8A is the 13th band, B10 the 10th
    assert X[..., band_indices(("B8A",))].min() >= 1300 and X[..., band_indices(("B8A",))].max() < 1400
    assert X[..., band_indices(("B10",))].min() >= 1000 and X[..., band_indices(("B10",))].max() < 1100
    assert list(tmp_path.glob("eurosat-test-*.npz"))  # cached for the next epoch / run


def test_train_evaluate_card_roundtrip(eurosat, tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "models" / "tiny"
    r = subprocess.run([sys.executable, "-m", "atlas_change", "train", "--data", str(eurosat), "--arch",
                        "spectrumnet", "--epochs", "1", "--batch", "16", "--out", str(out), "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    card = load_card(out)
    assert card.bands == EUROSAT_ORDER and card.classes == CLASSES and card.trained
    assert len(card.mean) == 13 and card.mean[12] == pytest.approx(1300 + 4.5 + 24.5, abs=2)  # B8A last
    assert card.training["n_train"] == 40 and card.training["epochs_run"] == 1
    assert 0 <= card.metrics["accuracy"] <= 1 and np.sum(card.metrics["confusion"]) == 10
    assert "SHA-256" in (out / "README.md").read_text()
    r = subprocess.run([sys.executable, "-m", "atlas_change", "evaluate", "--data", str(eurosat), "--model", str(out),
                        "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["model"] == "tiny" and res["split"] == "test" and res["n"] == 10 and 0 <= res["accuracy"] <= 1
    assert res["accuracy"] == pytest.approx(card.metrics["accuracy"])


def test_weights_hash_mismatch_refused(model13, tmp_path):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(model13.path, copy)
    with open(copy / "model.keras", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(AtlasError, match="does not match the card"):
        load_card(copy)


def test_unknown_model_lists_known(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_MODELS", str(tmp_path))
    with pytest.raises(AtlasError, match="no-such-model: no such model"):
        load_card("no-such-model")


def test_wrong_band_count_refused(tmp_path, model12):
    from atlas_change.synth import make_scene
    from conftest import run_classify

    four = make_scene(tmp_path / "rgbn.tif", 128, 128, bands=("B02", "B03", "B04", "B08"), descriptions=False)
    with pytest.raises(AtlasError, match="4 bands without Sentinel-2 band descriptions"):
        run_classify(four, model12)
