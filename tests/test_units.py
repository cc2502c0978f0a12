"""Pure functions: band names, patch grid, patch cutting, averaging onto cells."""
import numpy as np
import pytest
from affine import Affine
from hypothesis import given
from hypothesis import strategies as st

from atlas_change.bands import EUROSAT_ORDER, L2A_ORDER, S2_BANDS, default_order, normalise_band, parse_bands
from atlas_change.errors import AtlasError
from atlas_change.tile import PatchGrid, average_to_cells, cells_with_edges, covering_patches, cut_patches


def test_band_orders():
    assert EUROSAT_ORDER[-1] == "B8A" and EUROSAT_ORDER.index("B10") == 9 and len(EUROSAT_ORDER) == 13
    assert "B10" not in L2A_ORDER and L2A_ORDER[-1] == "B8A" and len(L2A_ORDER) == 12
    assert default_order(13) == EUROSAT_ORDER and default_order(12) == L2A_ORDER and default_order(4) is None


@pytest.mark.parametrize("text,expected", [("b2", "B02"), ("B02", "B02"), ("8a", "B8A"), ("B8a", "B8A"),
                                           ("B12", "B12"), (" B1 ", "B01")])
def test_normalise_band(text, expected):
    assert normalise_band(text) == expected


@pytest.mark.parametrize("bad", ["B13", "B0", "B9A", "NIR", "", "B1A"])
def test_bad_band_names(bad):
    with pytest.raises(AtlasError):
        normalise_band(bad)


def test_parse_bands_rejects_duplicates():
    with pytest.raises(AtlasError, match="B02 more than once"):
        parse_bands("B02,b2,B03")


@given(st.text(max_size=40))
def test_parse_bands_fuzz(text):
    """Any text either parses to canonical, unique Sentinel-2 names or raises AtlasError."""
    try:
        bands = parse_bands(text)
    except AtlasError:
        return
    assert all(b in S2_BANDS for b in bands) and len(set(bands)) == len(bands)


@given(st.permutations(S2_BANDS))
def test_parse_bands_roundtrip(perm):
    assert parse_bands(",".join(perm)) == tuple(perm)


def test_grid_counts_and_transform():
    g = PatchGrid(10980, 10980, 64)
    # a full tile: 171 patches of 64 and 36 pixels left over, labelled by one more row / column of cells
    assert (g.n_rows, g.n_cols, g.remainder, g.cell_shape) == (171, 171, (36, 36), (172, 172))
    g32 = PatchGrid(10980, 10980, 32)
    assert (g32.n_rows, g32.cell_shape) == (342, (344, 344))
    assert PatchGrid(640, 704, 64).cell_shape == (11, 10) and not PatchGrid(640, 704, 64).edges()
    t = Affine(10, 0, 300000, 0, -10, 5000000)
    assert g.cell_transform(t) == Affine(640, 0, 300000, 0, -640, 5000000)
    assert g32.cell_transform(t).a == 320
    with pytest.raises(AtlasError):
        PatchGrid(100, 100, 48)


@pytest.mark.parametrize("stride", [64, 32, 16])
def test_edge_patches_cover_every_pixel(stride):
    """A scene 64 k + 37 pixels high and wide: the cells reach every pixel, the edge patches end at
    the edge, and the edge cells are labelled by them."""
    size = 64 * 3 + 37
    g = PatchGrid(size, size, stride)
    rows, cols = g.cell_shape
    assert (rows - 1) * stride < size <= rows * stride and (cols - 1) * stride < size <= cols * stride
    cover = np.zeros((size, size), int)
    for gg, rngs in [(g, g.chunks(10**6)), *((e, [r]) for e, r in g.edge_chunks(64))]:
        for r0, r1, c0, c1 in rngs:
            w = gg.window(r0, r1, c0, c1)
            assert w.row_off + w.height <= size and w.col_off + w.width <= size
            cover[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] += 1
    assert (cover > 0).all()  # every pixel in some patch
    ends = {(e.window(*r).row_off + e.window(*r).height, e.window(*r).col_off + e.window(*r).width) for e, r in g.edges()}
    assert {size} <= {y for y, _ in ends} and {size} <= {x for _, x in ends}
    parts = {(0, 0): (np.zeros((g.n_rows, g.n_cols)),)}
    parts.update({(e.y0, e.x0): (np.full((r1 - r0, c1 - c0), 1.0 + (e.x0 > 0) + 2 * (e.y0 > 0)),)
                  for e, (r0, r1, c0, c1) in g.edges()})
    (cells,) = cells_with_edges(g, parts, lambda p: (np.kron(p, np.ones((g.k, g.k)))[:p.shape[0] + g.k - 1,
                                                                                    :p.shape[1] + g.k - 1],))
    assert cells.shape == (rows, cols) and (cells[:-1, :-1] == 0).all()
    assert (cells[:-1, -1] == 2).all() and (cells[-1, :-1] == 3).all() and cells[-1, -1] == 4


def test_chunks_cover_every_patch_once():
    g = PatchGrid(1000, 700, 32)
    seen = np.zeros((g.n_rows, g.n_cols), int)
    for r0, r1, c0, c1 in g.chunks(256):
        seen[r0:r1, c0:c1] += 1
        w = g.window(r0, r1, c0, c1)
        assert w.col_off + w.width <= 1000 and w.row_off + w.height <= 700
    assert (seen == 1).all()


def test_cut_patches_order_and_nodata():
    bands, h, w = 3, 128, 192
    block = np.arange(bands * h * w, dtype=np.float32).reshape(bands, h, w)
    valid = np.ones((h, w), bool)
    valid[100, 10] = False  # inside patch row 1, col 0
    patches, usable = cut_patches(block, valid, 64)
    assert usable.shape == (2, 3) and not usable[1, 0] and usable.sum() == 5
    assert patches.shape == (5, 64, 64, 3)
    np.testing.assert_array_equal(patches[0], block[:, :64, :64].transpose(1, 2, 0))
    np.testing.assert_array_equal(patches[3], block[:, 64:, 64:128].transpose(1, 2, 0))  # row 1, col 1
    _, usable2 = cut_patches(block, valid, 64, max_nodata=0.01)
    assert usable2.all()


def test_average_to_cells():
    probs = np.zeros((2, 2, 2), np.float32)
    probs[0, 0] = [1, 0]
    probs[0, 1] = [0, 1]
    probs[1, 0] = [1, 0]
    usable = np.array([[True, True], [True, False]])
    cells, has = average_to_cells(probs, usable, 2)
    assert cells.shape == (3, 3, 2)
    np.testing.assert_allclose(cells[0, 1], [0.5, 0.5])  # covered by patches (0,0) and (0,1)
    np.testing.assert_allclose(cells[1, 1], [2 / 3, 1 / 3])  # (0,0),(0,1),(1,0); (1,1) unusable
    assert not has[2, 2] and has[2, 1]
    same, has1 = average_to_cells(probs, usable, 1)
    np.testing.assert_array_equal(same, probs) and np.testing.assert_array_equal(has1, usable)
    # stride 32 (k = 2): each cell counts the patches covering it
    np.testing.assert_array_equal(covering_patches(usable, 2), [[1, 2, 1], [2, 3, 1], [1, 1, 0]])


def test_every_cli_option_has_help_and_version_prints(capsys):
    import argparse

    from atlas_change import __version__
    from atlas_change.__main__ import main
    from atlas_change.cli import parser

    missing = []

    def walk(parser, name):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for n, sp in a.choices.items():
                    if not sp.description or len(sp.description) < 40:
                        missing.append(f"{n}: no description")
                    walk(sp, n)
            elif not a.help:
                missing.append(f"{name} {a.option_strings or a.dest}")

    walk(parser(), "atlas-change")
    assert missing == []
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"atlas-change {__version__}"


def test_job_file_keys_are_all_in_run_help(capsys):
    from atlas_change.__main__ import main
    from atlas_change.batch.jobs import AOI_KEYS, TOP_KEYS

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert [k for k in [*TOP_KEYS, *AOI_KEYS] if f"{k} =" not in text and f"[[{k}]]" not in text] == []
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    assert "exit code: 0 when every step is done, 1 when" in capsys.readouterr().out


@pytest.mark.parametrize("text,expected", [("2023-06-01", "2023-06-01"), ("20230601", "2023-06-01"),
                                           ("2023:06:01 10:30:00", "2023-06-01"), ("2023-06-01T10:30:00Z", "2023-06-01"),
                                           ("2023-02-30", None), ("<b>2023</b>", None), ("", None), (None, None)])
def test_metadata_dates(text, expected):
    from atlas_change.dates import metadata_date

    assert metadata_date(text) == expected


def test_hectares_are_rounded_to_a_pixel():
    from atlas_change.outputs import hectares

    assert hectares(22.3125 * 40.96) == 913.92 and hectares(0.1 + 0.2) == 0.3


def test_temperature_scaling_fits_an_overconfident_model():
    from atlas_change.model.calibrate import ece, fit_temperature
    from atlas_change.model.infer import apply_temperature

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 10))
    true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(10, p=q) for q in true])  # labels drawn from softmax(logits): calibrated at T = 1 ...
    p = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)  # ... a model three times too sure
    t = fit_temperature(p, y)
    assert 2.5 < t < 3.5
    q = apply_temperature(p, t)
    assert (q.argmax(axis=1) == p.argmax(axis=1)).all()  # the labels never change
    assert ece(q, y) < 0.03 < 0.15 < ece(p, y)
    np.testing.assert_allclose(apply_temperature(p, 1.0), p)


def test_calibration_mosaics_straddle_the_grid_and_cells_take_their_majority_class():
    from atlas_change.model.calibrate import mosaic, mosaic_cells

    X = np.repeat(np.arange(10, dtype=np.uint8)[:, None, None, None] * 20, 4, axis=0)  # patch value = 20 x class
    X = np.broadcast_to(X, (40, 64, 64, 3)).copy()
    y = np.repeat(np.arange(10), 4)
    img, truth = mosaic(X, y, np.random.default_rng(3), max_field=2, n=8)
    assert img.shape == (384, 384, 3) and truth.shape == (384, 384)
    assert (img[..., 0] == truth * 20).all()
    mixed = [len(np.unique(truth[r:r + 64, c:c + 64])) > 1 for r in range(0, 384, 64) for c in range(0, 384, 64)]
    assert any(mixed)  # fields do not line up with the grid

    def majority(patches):  # a model that names the class of most of a patch's pixels, sure of it
        votes = np.stack([(patches[..., 0] == 20 * k).sum(axis=(1, 2)) for k in range(10)], axis=-1)
        return np.eye(10, dtype=np.float32)[votes.argmax(axis=-1)]

    for stride in (64, 32, 16):
        p, t = mosaic_cells(majority, img, truth, stride)
        assert p.shape == ((384 // stride) ** 2, 10) and t.shape == (len(p),)
        np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-6)
        n = 384 // stride
        brute = [np.bincount(truth[r * stride:(r + 1) * stride, c * stride:(c + 1) * stride].ravel(), minlength=10).argmax()
                 for r in range(n) for c in range(n)]
        assert (t == np.array(brute)).all()  # each cell's truth: the class of most of its pixels
    p, t = mosaic_cells(majority, img, truth, 64)
    assert (p.argmax(axis=1) == t).all()  # at 64 a cell is its patch: the majority model is right everywhere


#: the stages in the order they may import each other (docs/api.md); the shared basics at the top come first
STAGES = ("", "read", "model", "mapping", "change", "publish", "accuracy", "batch", "atlas", "cli")


def _stage(module: str) -> int:
    """Position in STAGES of a module named like atlas_change.model.infer (top-level modules: 0)."""
    parts = module.split(".")[1:]
    return STAGES.index(parts[0]) if parts and parts[0] in STAGES[1:] else 0


def test_packages_import_only_from_earlier_stages():
    """Data flows down: no module imports from a later stage (so no import circle between stages),
    apart from the top-level API wrappers and `__main__`, which dispatch to every stage."""
    import ast
    from pathlib import Path

    import atlas_change

    root = Path(atlas_change.__file__).parent
    upward = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        is_pkg = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_pkg else rel.parts)
        if module in ("atlas_change", "atlas_change.__main__"):
            continue
        package = module if is_pkg else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                target = next((n for n in names if n and n.startswith("atlas_change")), "")
            else:
                continue
            if target.startswith("atlas_change") and _stage(target) > _stage(module):
                upward.append(f"{module} -> {target}")
    assert upward == []
    assert _stage("atlas_change.change.joint") > _stage("atlas_change.model.infer") > _stage("atlas_change.tile")


def test_cells_parquet_written_in_parts_is_the_whole_table(tmp_path):
    """cells.parquet written a band of rows at a time (bounded memory) reads back as the table of the
    whole map: the same rows, polygons and figures, a GeoParquet bbox over every part, one row group each."""
    import geopandas as gpd
    import pyarrow.parquet as pq
    from rasterio.crs import CRS

    from atlas_change.outputs import build_dataset, cells_frame, write_cells

    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(10), size=(40, 30)).astype(np.float32)
    has = rng.random((40, 30)) > 0.3
    has[:5] = False  # unlabelled rows above and a gap: parts without cells are skipped
    has[20:24] = False
    ds = build_dataset(probs, has, Affine(640, 0, 4_000_000, 0, -640, 3_000_000), CRS.from_epsg(3035),
                       {"model": "m"}, np.zeros((40, 30), bool), np.zeros((40, 30), bool))
    write_cells(tmp_path / "parts.parquet", ds, per_part=90)  # 3 rows a part
    whole = cells_frame(ds)
    parts = gpd.read_parquet(tmp_path / "parts.parquet")
    assert len(parts) == int(has.sum()) and parts.crs.to_epsg() == 3035
    assert parts.drop(columns="geometry").equals(whole.drop(columns="geometry"))
    assert parts.geometry.geom_equals(whole.geometry).all()
    meta = pq.ParquetFile(tmp_path / "parts.parquet")
    assert meta.num_row_groups > 5
    import json

    bbox = json.loads(meta.schema_arrow.metadata[b"geo"])["columns"]["geometry"]["bbox"]
    assert np.allclose(bbox, whole.total_bounds)


def test_a_large_class_map_is_drawn_from_its_overviews_at_a_bounded_size(tmp_path):
    """The atlas page draws a period map of any size at most MAX_PICTURE_CELLS a side, over the
    same ground as the full map (what a browser can open)."""
    import base64
    import io

    from PIL import Image
    from rasterio.crs import CRS

    from atlas_change.outputs import class_categories, write_cog
    from atlas_change.publish.view import CLASS_RGBA, _raster_picture

    ids = (np.indices((300, 500)).sum(axis=0) // 50 % 10 + 1).astype(np.uint8)
    write_cog(tmp_path / "lulc.tif", ids, Affine(640, 0, 4_000_000, 0, -640, 3_000_000), CRS.from_epsg(3035), 0,
              {}, "class_id", class_categories())
    full_url, full_bounds = _raster_picture(tmp_path / "lulc.tif", CLASS_RGBA)
    url, bounds = _raster_picture(tmp_path / "lulc.tif", CLASS_RGBA, max_side=100)
    small = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    big = Image.open(io.BytesIO(base64.b64decode(full_url.split(",", 1)[1])))
    assert max(big.size) >= 500 and max(small.size) <= 130  # Web Mercator stretches it a little
    assert np.allclose(bounds, full_bounds, atol=0.05)  # degrees: the same ground, to a drawn cell (3.2 km)
