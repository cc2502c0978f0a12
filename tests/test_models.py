"""Model definitions, the registry (cards, hashes) and train/evaluate on a tiny EuroSAT-layout folder."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from atlas_change.bands import EUROSAT_ORDER
from atlas_change.classes import CLASSES
from atlas_change.errors import AtlasError
from atlas_change.model.registry import load_card


def test_spectrumnet_matches_publication():
    from atlas_change.model.nets import build

    m = build("spectrumnet", 13)
    assert m.count_params() == 1_450_090  # ~1.45 M as published for 13 bands
    assert m.output_shape == (None, 10)
    assert m.get_layer("stem").strides == (2, 2) and m.get_layer("stem").filters == 96
    assert [m.get_layer(f"module{i}_squeeze").filters for i in range(1, 9)] == [32, 32, 64, 64, 96, 96, 128, 128]
    assert build("resnet50", 3).output_shape == (None, 10)


def test_resnet50_without_the_stem_max_pool_keeps_the_weights_and_quadruples_the_last_feature_map(tmp_path):
    import keras

    from atlas_change.model.nets import build, count_macs

    std, nop = build("resnet50", 3), build("resnet50-nomaxpool", 3)
    assert nop.name == "resnet50-nomaxpool" and nop.output_shape == (None, 10)
    assert [w.shape for w in nop.get_weights()] == [w.shape for w in std.get_weights()]
    assert nop.layers[1].get_layer("conv5_block3_out").output.shape[1:3] == (4, 4)
    assert std.layers[1].get_layer("conv5_block3_out").output.shape[1:3] == (2, 2)
    assert 3.5 < count_macs(nop) / count_macs(std) < 4.2
    nop.set_weights(std.get_weights())  # --init resnet50-rgb: the standard network's weights fit as they are
    nop.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", compile=False)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(again.predict(x, verbose=0), nop.predict(x, verbose=0), atol=1e-6)


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
    from atlas_change.model.train import band_indices, load_split

    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path))
    X, y, listed = load_split(eurosat, "test", quiet=True)
    assert X.shape == (10, 64, 64, 13) and X.dtype == np.uint16 and list(y) == list(range(10)) and listed == 10
    # band k of the file (k = 0..12) holds ~100*(k+1): B8A is the 13th band, B10 the 10th
    assert X[..., band_indices(("B8A",))].min() >= 1300 and X[..., band_indices(("B8A",))].max() < 1400
    assert X[..., band_indices(("B10",))].min() >= 1000 and X[..., band_indices(("B10",))].max() < 1100
    assert list(tmp_path.glob("eurosat-tif-test-*.npz"))  # cached for the next epoch / run


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
    assert card.training["n_train"] == 40 and card.training["epochs"] == 1 and card.radiometry == {}
    assert 0 <= card.metrics["accuracy"] <= 1 and np.sum(card.metrics["confusion"]) == 10
    assert "SHA-256" in (out / "README.md").read_text()
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(out / "model.keras") as z:  # weights only: no optimizer state (3x the size)
        assert "optimizer" not in h5py.File(io.BytesIO(z.read("model.weights.h5"))).keys()
    r = subprocess.run([sys.executable, "-m", "atlas_change", "evaluate", "--data", str(eurosat), "--model", str(out),
                        "--json", "--runtime", "graph"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["model"] == "tiny" and res["split"] == "test" and res["n"] == 10 and 0 <= res["accuracy"] <= 1
    assert res["accuracy"] == pytest.approx(card.metrics["accuracy"])


def test_l2a_augmentation_on_ms_data_is_refused(eurosat, tmp_path):
    """--augment l2a recolours RGB JPEGs; on 13-band MS digital numbers it is refused, not silently skipped."""
    out = tmp_path / "models" / "ms"
    r = subprocess.run([sys.executable, "-m", "atlas_change", "train", "--data", str(eurosat), "--arch", "spectrumnet",
                        "--epochs", "1", "--augment", "l2a", "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 2 and not out.exists()
    assert r.stderr.strip().splitlines() == [f"atlas-change: error: {eurosat}: --augment l2a changes the colours of EuroSAT "
                                             "RGB JPEGs; these are MS GeoTIFFs (digital numbers of 13 bands): train them "
                                             "with --augment standard"]


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


@pytest.fixture(scope="module")
def eurosat_rgb(tmp_path_factory):
    """EuroSAT RGB layout: ROOT/EuroSAT_RGB/<Class>/<Class>_<n>.jpg (JPEG, 3 bands), split files in ROOT/splits."""
    root = tmp_path_factory.mktemp("eurosat_rgb")
    data = root / "EuroSAT_RGB"
    rng = np.random.default_rng(1)
    names = {"train": [], "val": [], "test": []}
    for ci, cls in enumerate(CLASSES):
        (data / cls).mkdir(parents=True)
        for n in range(1, 5):
            arr = np.clip(rng.normal(20 * ci + 30, 10, (3, 64, 64)), 0, 255).astype(np.uint8)
            with rasterio.open(data / cls / f"{cls}_{n}.jpg", "w", driver="JPEG", width=64, height=64, count=3,
                               dtype="uint8") as d:
                d.write(arr)
            names["train" if n <= 2 else "val" if n == 3 else "test"].append(f"{cls}_{n}.jpg")
    (root / "splits").mkdir()
    for split, items in names.items():
        (root / "splits" / f"eurosat-{split}.txt").write_text("\n".join(items) + "\n")
    return data


@pytest.fixture(scope="module")
def rgb_model(eurosat_rgb, tmp_path_factory):
    """One epoch of spectrumnet-bn-w0.25 on the RGB JPEGs, trained once for the tests that start from a
    trained RGB model (those that change it take a copy: `copy_model`)."""
    from atlas_change.model.train import train

    root = tmp_path_factory.mktemp("rgb_model")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATLAS_CACHE", str(root / "cache"))
        return train(eurosat_rgb, "spectrumnet-bn-w0.25", root / "rgb", epochs=1, batch=8, quiet=True)


def copy_model(card, to: Path):
    """A trained model's folder copied to `to`, its card loaded from there."""
    import shutil

    from atlas_change.model.registry import load_card

    shutil.copytree(card.path, to)
    return load_card(to)


def test_train_on_rgb_jpegs_applies_the_jpeg_mapping(eurosat_rgb, eurosat, tmp_path, monkeypatch):
    """An RGB model trained on the JPEGs carries the JPEG mapping in its card; evaluated on MS GeoTIFFs
    it reads B04, B03, B02 through that mapping."""
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "models" / "rgb"
    r = subprocess.run([sys.executable, "-m", "atlas_change", "train", "--data", str(eurosat_rgb), "--arch",
                        "spectrumnet-bn-w0.5", "--epochs", "1", "--batch", "8", "--out", str(out), "--quiet",
                        "--augment", "l2a"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    card = load_card(out)
    assert "L1C -> L2A" in card.training["augmentation"] and "seasonal" in card.training["augmentation"]
    assert card.bands == ("B04", "B03", "B02") and card.radiometry["kind"] == "eurosat-jpeg"
    assert card.radiometry["scale"] == pytest.approx(255 / 2750) and card.radiometry["max"] == 255
    assert card.metrics["n"] == 10 and card.metrics["data"] == "EuroSAT RGB JPEG"
    assert card.architecture == "spectrumnet-bn-w0.5"
    for data, kind in ((eurosat_rgb, "RGB JPEG"), (eurosat, "MS GeoTIFF (DN)")):
        r = subprocess.run([sys.executable, "-m", "atlas_change", "evaluate", "--data", str(data), "--model",
                            str(out), "--json"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["n"] == 10 and kind in res["data"] and 0 <= res["accuracy"] <= 1
        assert np.asarray(res["confusion"]).shape == (10, 10)


def test_l2a_augmentation_reaches_the_contrast_of_real_l2a():
    """--augment l2a stretches a channel's contrast as far as the fitted L1C -> L2A change does (blue
    x 1.69, up to 1.2 times that change), past anything contrast, gain and haze alone give (x 1.64 at
    most), and keeps values in 0..255."""
    import tensorflow as tf

    from atlas_change.model.augment import augment

    x = np.zeros((64, 64, 3), np.float32)
    x[:32], x[32:] = 40.0, 120.0  # a dark and a bright half in every channel

    def blue_contrast(l2a: bool) -> np.ndarray:
        z = np.array([augment(tf, tf.constant(x), 0, True, "l2a" if l2a else "standard")[0].numpy() for _ in range(300)])
        assert z.min() >= 0 and z.max() <= 255
        return np.abs(z[..., 2].max(axis=(1, 2)) - z[..., 2].min(axis=(1, 2)))

    tf.random.set_seed(3)
    assert blue_contrast(False).max() <= 80 * 1.2 * 1.3 * 1.05 + 1e-3
    assert blue_contrast(True).max() > 80 * 1.7


def test_int8_calibration_patches_are_half_l2a_like():
    """quantize calibrates on L1C JPEGs and, every second patch, the same moved along the fitted
    L1C -> L2A change (so int8 activation ranges cover L2A contrast): the others untouched, the moved
    ones darker in blue and within 0..255, the same for the same seed."""
    from atlas_change.model.augment import l2a_fit_rgb, to_l2a
    from atlas_change.model.quantize import l2a_like

    x = np.random.default_rng(0).uniform(0, 255, (2, 6, 64, 64, 3)).astype(np.float32)
    out = l2a_like(list(x), np.random.default_rng(1))
    again = l2a_like(list(x), np.random.default_rng(1))
    a, b = l2a_fit_rgb()
    for got, same, src in zip(out, again, x):
        np.testing.assert_array_equal(got, same)
        np.testing.assert_array_equal(got[0::2], src[0::2])
        moved = got[1::2]
        assert moved.min() >= 0 and moved.max() <= 255 and not np.array_equal(moved, src[1::2])
        assert moved[..., 2].mean() < src[1::2, ..., 2].mean()  # blue: darker (L2A)
        full = np.clip(to_l2a(src[1::2], 1.2, a, b), 0, 255)  # no patch moved beyond 1.2 times the change
        assert (np.abs(moved - src[1::2]) <= np.abs(full - src[1::2]) + 1e-3).all()


@pytest.mark.data
def test_l2a_fit_is_what_the_real_product_pair_gives():
    """augment.L2A_FIT is the least-squares L2A = a * L1C + b of the real SSL4EO-S12 L1C/L2A pair."""
    from pathlib import Path

    from atlas_change.model.augment import L2A_FIT

    root = Path(__file__).resolve().parents[2] / "shared"
    pair = root / "scenes" / "ssl4eo-s12-l1c-l2a-pair"
    if not pair.exists():
        pytest.skip(f"{pair} not found")
    for band, (a, b) in L2A_FIT.items():
        name = f"B{int(band[1:])}.tif"
        with rasterio.open(next(pair.glob(f"s2c/*/*/{name}"))) as c, rasterio.open(next(pair.glob(f"s2a/*/*/{name}"))) as l:
            x, y = c.read(1).astype(float).ravel(), l.read(1).astype(float).ravel()
        fa, fb = np.polyfit(x, y, 1)
        assert fa == pytest.approx(a, abs=0.002) and fb == pytest.approx(b, abs=1.0)


def test_model_scale_is_the_jpeg_mapping():
    from atlas_change.model.infer import model_scale
    from atlas_change.model.train import JPEG_RADIOMETRY

    dn = np.array([0, 1375, 2750, 9000], np.uint16)
    assert model_scale(dn, 0, JPEG_RADIOMETRY).tolist() == pytest.approx([0, 127.5, 255, 255])
    # baseline >= 04.00: DN carry +1000, the offset takes it off; below 0 clips
    assert model_scale(dn + 1000, -1000, JPEG_RADIOMETRY).tolist() == pytest.approx([0, 127.5, 255, 255])
    assert model_scale(np.array([500]), -1000, JPEG_RADIOMETRY).tolist() == [0]
    assert model_scale(dn, 0, {}).tolist() == dn.tolist()  # MS models: DN as they are


@pytest.mark.data
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_ms_patches_reach_an_rgb_model_as_their_jpeg_twins():
    """Every one of the 270 EuroSAT MS GeoTIFFs, opened as a scene for an RGB model and mapped as the
    predictor maps it, equals its JPEG twin within JPEG error."""
    from pathlib import Path

    from rasterio.windows import Window

    from atlas_change.model.infer import model_scale
    from atlas_change.read import open_scene
    from atlas_change.model.train import JPEG_RADIOMETRY, RGB_BANDS

    root = Path(__file__).resolve().parents[2] / "shared" / "eurosat"
    ms = sorted((root / "EuroSAT_MS_subset").glob("*/*/*.tif"))
    if not ms:
        pytest.skip("../shared/eurosat not here")
    diffs = []
    for p in ms:
        scene = open_scene(p, RGB_BANDS)
        dn, _ = scene.read(Window(0, 0, 64, 64), raw=True)
        with rasterio.open(root / "EuroSAT_RGB" / p.parent.name / f"{p.stem}.jpg") as j:
            jpeg = j.read().astype(np.float32)
        diffs.append(model_scale(dn, scene.offset, JPEG_RADIOMETRY) - jpeg)
    d = np.stack(diffs)
    assert len(d) == 270
    rmse = np.sqrt((d ** 2).mean(axis=(0, 2, 3)))
    assert (rmse < 4.0).all(), rmse  # JPEG quantisation error is ~2-3 grey levels
    assert (np.abs(d.mean(axis=(0, 2, 3))) < 2.0).all()


def _shipped_rgb_cards() -> list:
    """The shipped trained models that take EuroSAT-JPEG-scale RGB; skips the test where there are none."""
    from atlas_change.model.registry import shipped_defaults

    cards = [c for c in shipped_defaults() if c.radiometry.get("kind") == "eurosat-jpeg"]
    if not cards:
        pytest.skip("no shipped RGB model")
    return cards


@pytest.mark.data
def test_shipped_rgb_models_on_real_ms_patches_through_classify():
    """The 54 EuroSAT MS test patches (13-band L1C GeoTIFFs, never trained on through their JPEG twins),
    classified one by one by `classify` itself, score about what each shipped RGB model scores on the
    5,200 test JPEGs (54 patches: one error is 1.9 points, so allow 6)."""
    from pathlib import Path

    import atlas_change

    root = Path(__file__).resolve().parents[2] / "shared" / "eurosat" / "EuroSAT_MS_subset" / "test"
    files = sorted(root.glob("*/*.tif"))
    if not files:
        pytest.skip("../shared/eurosat not here")
    for card in _shipped_rgb_cards():
        right = sum(CLASSES[int(atlas_change.classify(p, model=card.name, scheduler="sync")["lulc"].values[0, 0]) - 1]
                    == p.parent.name for p in files)
        assert right / len(files) >= card.metrics["accuracy"] - 0.06, (card.name, right, len(files))


@pytest.mark.data
def test_shipped_models_score_what_their_cards_say_on_the_test_split():
    """`evaluate` of each shipped trained model on all 5,200 EuroSAT test JPEGs: the float32 network
    ('graph', what cards score) reproduces its card's accuracy, and the default runtime (OpenVINO,
    bfloat16 where the CPU has it) loses at most half a point against it."""
    from pathlib import Path

    from atlas_change.model.train import evaluate

    rgb = Path(__file__).resolve().parents[2] / "shared" / "eurosat" / "EuroSAT_RGB"
    if not rgb.is_dir():
        pytest.skip("../shared/eurosat not here")
    for card in _shipped_rgb_cards():
        graph = evaluate(rgb, card.name, "test", quiet=True, runtime="graph")
        assert graph["n"] == 5200 and graph["weights_sha256"] == card.weights_sha256
        assert abs(graph["accuracy"] - card.metrics["accuracy"]) <= 0.002, (card.name, graph["accuracy"])
        assert sum(map(sum, graph["confusion"])) == 5200 and list(graph["per_class"]) == list(CLASSES)
        default = evaluate(rgb, card.name, "test", quiet=True)
        assert default["accuracy"] >= card.metrics["accuracy"] - 0.005, (card.name, default["accuracy"])


@pytest.mark.data
def test_real_l1c_forest_is_labelled_forest():
    """eo-learn's clear L1C date of a Slovenian forest (13 bands, B8A after B08, band descriptions set):
    the default model calls most of it Forest."""
    from pathlib import Path

    import atlas_change

    clear = Path(__file__).resolve().parents[2] / "shared" / "scenes" / "eolearn-l1c13" / "clear.tif"
    if not clear.exists():
        pytest.skip("../shared/scenes not here")
    ds = atlas_change.classify(clear, stride=16, scheduler="sync")
    ids = ds["lulc"].values
    assert (ids == CLASSES.index("Forest") + 1).mean() >= 0.6, np.unique(ids, return_counts=True)


def test_init_from_rgb_model_starts_as_that_model(rgb_model, eurosat, tmp_path, monkeypatch):
    """--init: a 13-band model made from an RGB model (filters moved onto B04/B03/B02, zeros elsewhere,
    normalisation carried over) computes what the RGB model computes on the same MS patches."""
    from atlas_change.model.infer import Predictor
    from atlas_change.model.nets import build
    from atlas_change.model.train import RGB_BANDS, _transplant, band_indices, load_split, train

    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "cache"))
    rgb = rgb_model
    m13 = build("spectrumnet-bn-w0.25", 13)
    _transplant(rgb, m13, EUROSAT_ORDER)
    X, _, _ = load_split(eurosat, "test", quiet=True)
    X = (X * 5).astype(np.uint16)  # B02-B04 DN below 2750, where the JPEG mapping is linear
    mean, std = np.full(13, 1000.0), np.full(13, 500.0)
    s = rgb.radiometry["scale"]
    for b, m, sd in zip(rgb.bands, rgb.mean, rgb.std):
        mean[EUROSAT_ORDER.index(b)], std[EUROSAT_ORDER.index(b)] = m / s, sd / s
    p13 = m13.predict(((X - mean) / std).astype(np.float32), verbose=0)
    p3 = Predictor(rgb, "graph")(X[..., band_indices(RGB_BANDS)])
    np.testing.assert_allclose(p13, p3, atol=1e-4)
    card = train(eurosat, "spectrumnet-bn-w0.25", tmp_path / "ms13", epochs=1, batch=8, quiet=True, init=str(rgb.path))
    assert card.bands == EUROSAT_ORDER and card.radiometry == {} and not card.training["from_scratch"]
    assert rgb.weights_sha256 in card.training["initialised_from"]
    assert card.mean[3] == pytest.approx(rgb.mean[0] / s)  # B04 keeps the RGB model's normalisation


def test_cpu_bfloat16_reads_the_instruction_flags(tmp_path):
    """Zen 4 and Sapphire Rapids flag bfloat16 (avx512_bf16, amx_bf16), an Arm core with BF16 says so under
    Features, an AVX2-only EPYC does not; a cpuinfo without flags (or none at all) is unknown, not a no."""
    from atlas_change.model.train import cpu_bfloat16

    base = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
    cases = {"flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 sha_ni\n": True,
             "flags\t\t: fpu sse2 avx2 amx_tile amx_bf16\n": True,
             "Features\t: fp asimd bf16 i8mm\n": True,
             "flags\t\t: fpu sse2 avx2 fma sha_ni clzero\n": False,
             "": None}
    for i, (flags, expected) in enumerate(cases.items()):
        (tmp_path / f"cpuinfo{i}").write_text(base + flags)
        assert cpu_bfloat16(str(tmp_path / f"cpuinfo{i}")) is expected, flags
    assert cpu_bfloat16(str(tmp_path / "absent")) is None


def test_train_in_mixed_bfloat16_saves_a_float32_model(eurosat, tmp_path, monkeypatch):
    """--precision mixed_bfloat16 trains in bfloat16 but ships float32 weights in a float32 network: the
    saved model computes what `evaluate` scored, on any CPU."""
    import keras

    from atlas_change.errors import AtlasWarning
    from atlas_change.model import train as train_module
    from atlas_change.model.train import evaluate, train

    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(train_module, "cpu_bfloat16", lambda: False)  # as on an AVX2-only CPU: it is said
    with pytest.warns(AtlasWarning, match="no bfloat16 instructions.*--precision float32 is faster"):
        card = train(eurosat, "spectrumnet-bn-w0.25", tmp_path / "bf16", epochs=1, batch=8, quiet=True,
                     precision="mixed_bfloat16")
    assert card.training["precision"] == "mixed_bfloat16"
    model = keras.models.load_model(tmp_path / "bf16" / "model.keras", compile=False)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert {w.dtype for w in model.weights} == {"float32"}
    assert keras.mixed_precision.global_policy().name == "float32"  # nothing left behind in the process
    again = evaluate(eurosat, str(tmp_path / "bf16"), quiet=True, runtime="graph")
    assert again["accuracy"] == pytest.approx(card.metrics["accuracy"]) and card.metrics["runtime"] == "graph"
    with pytest.raises(AtlasError, match="--precision float16"):
        train(eurosat, "spectrumnet-bn-w0.25", tmp_path / "f16", epochs=1, quiet=True, precision="float16")


@pytest.mark.parametrize("offset", [0.0, -1000.0])
def test_openvino_runtime_computes_what_tensorflow_computes(offset):
    """OpenVINO's float network gives the TensorFlow graph's probabilities for the shipped RGB model on
    DN patches, offset and JPEG mapping included: to float32 rounding, or within bfloat16's where this
    CPU makes OpenVINO compute in bfloat16; and (almost always) the same label. The default runtime
    (the card's int8 network, where it ships one as the default) keeps the labels, its probabilities
    within int8's error (0.16 at most measured here)."""
    from atlas_change.model.infer import Predictor, runtime_precision

    card = load_card("spectrumnet-rgb")
    rng = np.random.default_rng(1)
    base = rng.integers(200, 2600, (1, 1, 1, 3)) + rng.normal(0, 150, (96, 64, 64, 3))  # smooth-ish patches
    dn = np.clip(base * rng.uniform(0.3, 1.5, (96, 1, 1, 3)) - offset, 0, 12000).astype(np.uint16)
    ref = Predictor(card, "graph")(dn, offset)
    got = Predictor(card, "openvino-float")(dn, offset)
    tol = 1e-4 if runtime_precision("openvino-float") == "float32" else 0.08
    np.testing.assert_allclose(got, ref, atol=tol)
    default = Predictor(card, "openvino")(dn, offset)
    np.testing.assert_allclose(default, ref, atol=tol if runtime_precision("openvino", card) != "int8" else 0.25)
    for p in (got, default):
        assert (p.argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.95
        assert p.shape == (96, 10) and np.allclose(p.sum(axis=1), 1, atol=1e-3)


def test_openvino_predictor_shared_by_threads_gives_each_caller_its_own_answers(model13):
    """The Dask threads of a worker share one OpenVINO predictor (a pool of requests, one stream
    per core): callers at once, with batches of every size (full, partial, one patch), each get the
    probabilities of their own patches, in order, as one caller alone gets them."""
    from concurrent.futures import ThreadPoolExecutor

    from atlas_change.model.infer import Predictor

    p = Predictor(model13, "openvino")
    rng = np.random.default_rng(4)
    inputs = [rng.integers(0, 4000, (n, 64, 64, 13)).astype(np.uint16) for n in (1, 64, 130, 7, 200, 65)]
    alone = [p(x, -1000.0) for x in inputs]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda x: p(x, -1000.0), inputs * 2))
    for want, got in zip(alone * 2, together):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_openvino_model_is_converted_once_then_runs_without_tensorflow(model13, tmp_path):
    """The first OpenVINO predictor of a model converts it from Keras, in a child process of its own, and
    keeps the result under the cache folder; a later process reads that; neither process imports
    TensorFlow itself (seconds of start-up), both compute the same probabilities, neither prints anything."""
    code = ("import json, sys\nimport numpy as np\nfrom atlas_change.model.registry import load_card\n"
            "from atlas_change.model.infer import get_predictor, openvino_model_dir\n"
            f"card = load_card({model13.path!r})\n"
            "x = np.random.default_rng(0).integers(0, 4000, (5, 64, 64, 13)).astype(np.uint16)\n"
            "p = get_predictor(card, 'openvino')(x, -1000.0)\n"
            "print(json.dumps([p.tolist(), 'tensorflow' in sys.modules, str(openvino_model_dir(card))]))\n")
    env = {**os.environ, "ATLAS_CACHE": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0 and r.stderr == "", r.stderr[-2000:]
    (p1, tf1, folder), (p2, tf2, _) = (json.loads(r.stdout) for r in runs)
    assert not tf1 and not tf2
    assert folder.startswith(str(tmp_path / "cache")) and {f.name for f in Path(folder).iterdir()} == {"model.xml", "model.bin"}
    np.testing.assert_array_equal(p1, p2)
    assert not [f for f in Path(folder).parent.iterdir() if f.name.startswith(".")]  # no half-written copy


def test_openvino_conversion_sends_nothing_and_writes_nothing_in_home(model13, tmp_path):
    """OpenVINO's converter reports usage (DNS look-ups of an analytics host, ~/intel/) unless its telemetry
    package cannot be imported: a process that converts a model through atlas_change looks up no host
    name and writes nothing in the user's home but Keras's settings, on a user's machine (CI unset, where telemetry runs)."""
    site, home, log = tmp_path / "site", tmp_path / "home", tmp_path / "lookups.txt"
    site.mkdir(), home.mkdir()
    (site / "sitecustomize.py").write_text(  # every Python process of the run records its host look-ups
        "import os, socket\n_get = socket.getaddrinfo\n"
        "def _look(host, *a, **k):\n"
        "    with open(os.environ['ATLAS_TEST_NETLOG'], 'a') as f:\n        f.write(f'{host}\\n')\n"
        "    return _get(host, *a, **k)\n"
        "socket.getaddrinfo = _look\n")
    code = ("import numpy as np\nfrom atlas_change.model.registry import load_card\nfrom atlas_change.model.infer import get_predictor\n"
            f"p = get_predictor(load_card({model13.path!r}), 'openvino')(np.full((2, 64, 64, 13), 1500, np.uint16))\n"
            "print(p.shape)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env.update(HOME=str(home), ATLAS_CACHE=str(tmp_path / "cache"), ATLAS_TEST_NETLOG=str(log),
               PYTHONPATH=os.pathsep.join([str(site), env.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "(2, 10)", r.stderr[-2000:]
    assert (tmp_path / "cache").exists()  # the model was converted in this run
    hosts = set(log.read_text().split()) if log.exists() else set()
    assert hosts <= {"localhost", "127.0.0.1", "::1"}, hosts
    assert [f.name for f in home.iterdir() if f.name != ".keras"] == []  # Keras keeps its settings there; no intel/


def test_test_time_augmentation_averages_the_rotated_views(model13):
    """--tta N: the probabilities are the mean over the first N views (identity, quarter turns, then
    transposed); a patch that looks the same in every view gets what it gets without TTA; a bad N is refused."""
    from atlas_change.model.infer import Predictor, view

    p = Predictor(model13, "graph")
    rng = np.random.default_rng(3)
    x = rng.integers(500, 3000, (4, 64, 64, 13)).astype(np.uint16)
    np.testing.assert_allclose(p(x, views=2), (p(x) + p(np.rot90(x, 1, axes=(1, 2)))) / 2, atol=1e-6)
    np.testing.assert_allclose(p(x, views=8)[0], np.mean([p(view(x[:1], i))[0] for i in range(8)], axis=0), atol=1e-6)
    np.testing.assert_array_equal(view(x, 5), np.rot90(x.transpose(0, 2, 1, 3), 1, axes=(1, 2)))
    flat = np.full((2, 64, 64, 13), 1500, np.uint16)
    np.testing.assert_allclose(p(flat, views=4), p(flat), atol=1e-6)
    assert np.abs(p(x, views=2) - p(x)).max() > 1e-6  # the views differ for a real patch (untrained net: a little)
    with pytest.raises(ValueError, match="views"):
        p(x, views=3)


def test_openvino_runs_where_its_cache_cannot_be_written(model13, tmp_path, monkeypatch):
    """A cache folder that cannot be made (here a file stands in its way) costs only the conversion."""
    from atlas_change.model.infer import Predictor

    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "cache"))
    x = np.full((2, 64, 64, 13), 1500, np.uint16)
    out = Predictor(model13, "openvino")(x)
    assert out.shape == (2, 10) and np.allclose(out.sum(axis=1), 1, atol=1e-3)
    assert (tmp_path / "cache").read_text() == "not a folder" and len(list(tmp_path.iterdir())) == 1


def test_learning_rate_rises_over_the_warm_up_then_falls_along_a_cosine_to_zero():
    """The recipe's schedule: 0 -> peak linearly over the warm-up steps, then peak * (1 + cos(pi t)) / 2
    over the rest, 0 from the last step on; the values of keras' own CosineDecay with a warm-up."""
    import keras

    from atlas_change.model.train import warmup_cosine

    for peak, warm, total in ((3e-3, 18, 600), (1e-3, 0, 100), (0.01, 5, 7)):
        lr = np.asarray(warmup_cosine(peak, warm, total)(np.arange(total + 3)))
        assert lr[0] == (0.0 if warm else np.float32(peak)) and lr[warm] == np.float32(peak) and not lr[total:].any()
        t = (np.arange(warm, total) - warm) / (total - warm)
        np.testing.assert_allclose(lr[warm:total], peak * (1 + np.cos(np.pi * t)) / 2, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(lr[:warm], peak * np.arange(warm) / max(warm, 1), rtol=1e-5)
        ref = keras.optimizers.schedules.CosineDecay(0.0 if warm else peak, total - warm, alpha=0.0,
                                                      warmup_target=peak if warm else None, warmup_steps=warm)
        np.testing.assert_allclose(lr, [float(ref(s)) for s in range(total + 3)], rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="warm-up of 5 steps in a run of 5"):
        warmup_cosine(1e-3, 5, 5)


def test_cutmix_and_mixup_label_each_patch_by_what_it_shows():
    """CutMix pastes one box of the partner patch and labels by area; MixUp blends and labels by weight;
    shifts keep the patch size and only move pixels; a bad recipe value is one clear error."""
    from atlas_change import quiet_tensorflow
    from atlas_change.model.augment import augment, mix_batch
    from atlas_change.model.train import Recipe

    quiet_tensorflow()
    import tensorflow as tf

    tf.random.set_seed(0)
    x = tf.concat([tf.zeros((4, 64, 64, 3)), tf.ones((4, 64, 64, 3))], axis=0)  # patches of 0 and of 1
    y = tf.one_hot([0, 0, 0, 0, 1, 1, 1, 1], 10)
    mixed = 0
    for _ in range(20):
        for kind in ("cutmix", "mixup"):
            xm, ym = mix_batch(tf, x, y, kind, p=1.0)
            share_of_one = tf.reduce_mean(xm, axis=(1, 2, 3)).numpy()  # the pixels' share of the partner
            np.testing.assert_allclose(ym.numpy()[:, 1], share_of_one, atol=1e-5)
            np.testing.assert_allclose(ym.numpy().sum(axis=1), 1, atol=1e-6)
            mixed += int((share_of_one[:4] > 0).any())
    assert mixed > 30
    xm, ym = mix_batch(tf, x, y, "cutmix", p=0.0)
    assert (xm.numpy() == x.numpy()).all() and (ym.numpy() == y.numpy()).all()
    patch = tf.reshape(tf.range(64 * 64 * 3, dtype=tf.float32), (64, 64, 3))
    moved, _ = augment(tf, patch, 0, radiometric=False, translate=4)
    assert moved.shape == (64, 64, 3)
    with pytest.raises(AtlasError, match="--mix-p"):
        Recipe(mix_p=1.5).check()
    with pytest.raises(AtlasError, match="--label-smoothing"):
        Recipe(label_smoothing=float("nan")).check()


def test_quantize_writes_an_int8_network_the_card_vouches_for(eurosat_rgb, rgb_model, tmp_path, monkeypatch):
    """quantize: an int8 network beside the weights, its SHA-256 and test scores in the card, the default
    of runtime 'openvino' exactly where its own rule says it kept the labels; 'openvino-int8' runs it,
    'openvino-float' does not; a changed int8 file is refused; a model without one cannot run it."""
    import json as _json

    from atlas_change.model.infer import Predictor, runtime_precision
    from atlas_change.model.quantize import MAX_ACCURACY_DROP, MIN_AGREEMENT, quantize
    from atlas_change.model.registry import load_card

    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "cache"))
    card = copy_model(rgb_model, tmp_path / "rgb")
    x = np.random.default_rng(0).integers(0, 255, (5, 64, 64, 3)).astype(np.uint8)
    with pytest.raises(AtlasError, match="has no int8 network"):
        Predictor(card, "openvino-int8")
    assert not quantize(eurosat_rgb, str(card.path), samples=20, quiet=True)["default"]  # never unasked
    r = quantize(eurosat_rgb, str(card.path), samples=20, quiet=True, make_default=True)
    d = r["test"]["by_views"]["2"]
    assert r["default"] == r["keeps_eurosat_labels"] == (d["label_agreement"] >= MIN_AGREEMENT
                                                         and d["accuracy_int8"] >= d["accuracy_float"] - MAX_ACCURACY_DROP)
    card = load_card(card.path)
    assert (Path(card.path) / r["file"]).exists() and card.int8["sha256"] == r["sha256"]
    assert runtime_precision("openvino-int8", card) == "int8" and runtime_precision("openvino-float", card) != "int8"
    assert (runtime_precision("openvino", card) == "int8") == r["default"]
    p8 = Predictor(card, "openvino-int8")(x, prescaled=True)
    pf = Predictor(card, "openvino-float")(x, prescaled=True)
    assert p8.shape == pf.shape == (5, 10) and np.allclose(p8.sum(axis=1), 1, atol=1e-3)
    assert np.abs(p8 - pf).max() > 0  # a different network: int8 arithmetic
    doc = _json.loads((Path(card.path) / "card.json").read_text())
    doc["int8"]["sha256"] = "0" * 64
    (Path(card.path) / "card.json").write_text(_json.dumps(doc))
    with pytest.raises(AtlasError, match="SHA-256 does not match"):
        Predictor(load_card(card.path), "openvino-int8")


def test_weight_averager_keeps_the_mean_of_the_last_epochs_across_a_resume(tmp_path):
    """--average-last K: the running mean of the last K epochs' weights, an epoch re-run after a resume
    not counted twice."""
    import keras

    from atlas_change.model.train import _averager

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    cb = _averager(tmp_path, epochs=4, k=2)
    cb.set_model(model)
    seen = {}
    for epoch, v in ((0, 1.0), (1, 2.0), (2, 4.0), (2, 100.0), (3, 8.0)):  # epoch 3 (index 2) again after a resume
        model.set_weights([np.full((2, 1), v, np.float32), np.full((1,), v, np.float32)])
        cb.on_epoch_end(epoch)
        seen.setdefault(epoch, v)
    z = np.load(tmp_path / "average.npz")
    assert (int(z["n"]), int(z["first"]), int(z["last"])) == (2, 3, 4)
    assert np.allclose(z["w0"], (seen[2] + seen[3]) / 2) and np.allclose(z["w1"], 6.0)


def test_train_with_average_last_writes_what_its_card_says(eurosat, tmp_path, monkeypatch):
    import keras

    from atlas_change.model.train import train

    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "cache"))
    card = train(eurosat, "spectrumnet-bn-w0.25", tmp_path / "swa", epochs=3, batch=8, quiet=True, average_last=2)
    rec = card.training["weight_average"]
    assert rec["epochs"] == [2, 3] and rec["n"] == 2 and rec["kept"] == (rec["val_accuracy"] >= rec["val_accuracy_best_epoch"])
    run = next((tmp_path / "cache" / "runs").glob("swa-*"))
    z = np.load(run / "average.npz")
    model = keras.models.load_model(tmp_path / "swa" / "model.keras", compile=False)
    kernel = next(i for i, w in enumerate(model.get_weights()) if w.ndim == 4)  # the first convolution
    assert np.allclose(model.get_weights()[kernel], z[f"w{kernel}"]) == rec["kept"]
    r = subprocess.run([sys.executable, "-m", "atlas_change", "train", "--data", str(eurosat), "--epochs", "2",
                        "--average-last", "3", "--out", str(tmp_path / "bad"), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 2 and not (tmp_path / "bad").exists()
    assert r.stderr.strip().splitlines() == ["atlas-change: error: --average-last 3: expected 0 to --epochs (2)"]


@pytest.mark.parametrize("nested", [False, True])
def test_recomputed_batch_norm_statistics_are_the_mean_of_the_batches(nested):
    """Precise BN and the weight average recompute batch-norm statistics from training batches: the
    mean of the batches' own statistics, nothing of the old ones left (a momentum of 0.98 over one
    epoch of 61 batches kept 29 % of the reset values and took a network from 97.8 % to 11 % on val);
    also where the layers sit in a model inside the model, as ResNet50's do."""
    import keras
    import tensorflow as tf

    from atlas_change.model.train import _bn_layers, _recompute_bn

    inner = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(momentum=0.99)])
    if nested:
        inp = keras.Input((3,))
        model = keras.Model(inp, keras.layers.Identity()(inner(inp)))
    else:
        model = inner
    xs = [np.random.default_rng(i).normal(10 * i, 1 + i, (32, 3)).astype(np.float32) for i in range(4)]
    ds = tf.data.Dataset.from_tensor_slices((np.concatenate(xs), np.zeros(128))).batch(32)
    assert _recompute_bn(model, ds, batches=200)
    bn = inner.layers[0]
    assert _bn_layers(model) == [bn]
    assert np.allclose(bn.moving_mean.numpy(), np.mean([x.mean(0) for x in xs], 0), rtol=1e-5)
    assert np.allclose(bn.moving_variance.numpy(), np.mean([x.var(0) for x in xs], 0), rtol=1e-4)
    assert bn.momentum == 0.99


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_calibrate_fits_the_change_prior_into_the_card_and_its_stamp(eurosat_rgb, rgb_model, tmp_path, monkeypatch):
    """calibrate writes the change prior the rule picks (one of the strengths it tries, with its val and
    test figures) after the temperatures; the stamp every output carries names it; --change-prior-only
    refits it through the temperature already there (the same prior: same patches, same seeds) and
    needs one; recalibrating the temperatures drops a prior fitted to the old ones."""
    from atlas_change.change.prior import RULE, STAYS, fit_card
    from atlas_change.model.calibrate import calibrate
    from atlas_change.model.registry import load_card

    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "cache"))
    card = copy_model(rgb_model, tmp_path / "rgb")
    assert card.change_stay is None and "change_prior_stay" not in card.stamp()
    with pytest.raises(AtlasError, match="not calibrated yet"):
        fit_card(eurosat_rgb, str(card.path), quiet=True)
    cli = [sys.executable, "-m", "atlas_change", "calibrate", "--data", str(eurosat_rgb), "--model", str(card.path), "--quiet"]
    r = subprocess.run([*cli, "--no-strides"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "temperature" in r.stdout and "change prior stay" in r.stdout
    card = load_card(card.path)
    cp = card.calibration["change_prior"]
    assert cp["stay"] in STAYS and cp["rate"] == RULE["rate"] and {"val", "test"} <= cp.keys()
    assert all(0 <= cp[s][k] <= 1 for s in ("val", "test") for k in ("false", "found", "precision_at_rate"))
    assert card.change_stay == cp["stay"] and card.stamp()["change_prior_stay"] == cp["stay"]
    t = card.temperature
    r = subprocess.run([*cli, "--change-prior-only"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    card = load_card(card.path)
    assert card.temperature == t and card.calibration["change_prior"] == cp
    calibrate(eurosat_rgb, str(card.path), quiet=True, strides=False)
    assert load_card(card.path).change_stay is None
    r = subprocess.run([*cli, "--change-prior-only", "--no-strides"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--change-prior-only" in r.stderr


def test_distillation_trains_on_the_teachers_probabilities_mixed_with_the_labels(eurosat_rgb, eurosat, model13,
                                                                                 rgb_model, tmp_path, monkeypatch):
    """--teacher: the student's targets are (1 - distill) x one-hot + distill x the teachers' mean raw
    probabilities over the views, computed once into the run folder and passed through the pipeline
    as they are; the card names the teachers; teachers that cannot read the data are refused."""
    import tensorflow as tf

    from atlas_change.model.infer import get_predictor
    from atlas_change.model.train import Recipe, _pipelines, load_split, train

    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "cache"))
    teacher = copy_model(rgb_model, tmp_path / "teacher")  # its card keeps the name it was trained as
    card = train(eurosat_rgb, "spectrumnet-bn-w0.25", tmp_path / "student", epochs=1, batch=8, quiet=True,
                 teachers=(str(teacher.path),), distill=0.7, teacher_views=2)
    assert card.training["distillation"] == {"teachers": [teacher.weights_sha256], "weight": 0.7, "views": 2,
                                             "teacher_names": ["rgb"]}
    (kept,) = (tmp_path / "cache" / "runs").glob("student-*/teacher_targets.npy")
    X, y, _ = load_split(eurosat_rgb, "train", quiet=True)
    soft = get_predictor(teacher, "openvino-float")(X, prescaled=True, views=2, calibrated=False)
    np.testing.assert_allclose(np.load(kept), soft, atol=1e-6)
    targets = 0.3 * np.eye(10, dtype=np.float32)[y] + 0.7 * soft
    ds, _ = _pipelines(tf, (X, targets), (None, None), [0, 1, 2], np.zeros(3), np.ones(3), True, "standard",
                       Recipe(mix="none"), 8, 0)
    seen = np.concatenate([t.numpy() for _, t in ds])
    np.testing.assert_allclose(np.sort(seen, axis=0), np.sort(targets, axis=0), atol=1e-6)
    assert (seen.max(axis=1) < 0.999).all() and np.allclose(seen.sum(axis=1), 1, atol=1e-5)  # soft, not one-hot

    r = subprocess.run([sys.executable, "-m", "atlas_change", "train", "--data", str(eurosat), "--arch",
                        "spectrumnet-bn-w0.5", "--epochs", "1", "--out", str(tmp_path / "ms"), "--teacher",
                        str(teacher.path), "--distill", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and not (tmp_path / "ms").exists()
    assert r.stderr.strip().splitlines() == ["atlas-change: error: --distill 0.0: expected a share above 0 and at most 1"]
    with pytest.raises(AtlasError, match="--teacher .*sn13: it takes digital numbers"):
        train(eurosat_rgb, "spectrumnet-bn-w0.25", tmp_path / "s2", epochs=1, batch=8, quiet=True,
              teachers=(str(model13.path),))
