"""Read stage, products: a Sentinel-2 SAFE product (folder or .zip: band JP2s under GRANULE/*/IMG_DATA,
offsets from MTD_MSIL*.xml) or a folder of one GeoTIFF per band (BigEarthNet, Major TOM, SSL4EO-S12
layouts) as a `Scene` on the grid of its first 10 m band, the other bands resampled onto it by GDAL."""
from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
import zipfile
import zlib
from pathlib import Path

from rasterio.errors import RasterioIOError

from ..bands import S2_BANDS, normalise_band
from ..errors import AtlasError
from .scene import OFFSET_BANDS, BandSource, Scene, check_grid, check_offset, date_from_name, open_dataset

_JP2_RE = re.compile(r"IMG_DATA/(?:R(10|20|60)m/)?[^/]*_(B\d\d|B8A|SCL)(?:_(10|20|60)m)?\.jp2$", re.I)
#: bytes a metadata file of a product (MTD_MSIL*.xml, metadata.json) may inflate to: real ones are under 1 MB
MAX_XML_BYTES = 16 << 20
_MTD_RE = re.compile(r"(^|/)MTD_MSIL(1C|2A)\.xml$")
#: a folder of one GeoTIFF per band: BigEarthNet-S2 (<patch>_B02.tif), Major TOM (B02.tif), SSL4EO-S12 (B2.tif),
#: with an optional SCL.tif; same groups as _JP2_RE
_TIF_RE = re.compile(r"()(?:^|/)(?:[^/]*_)?(B\d\d?|B8A|SCL)()\.tiff?$", re.I)


def _safe_listing(p: str) -> tuple[list[str], callable, callable]:
    """(relative names, name -> GDAL path, name -> bytes) for a SAFE folder or zip."""
    if os.path.isdir(p):
        root = Path(p)
        names = [f.relative_to(root).as_posix() for f in root.rglob("*") if f.is_file()]

        def read_file(n: str) -> bytes:
            if (root / n).stat().st_size > MAX_XML_BYTES:
                raise AtlasError(f"{root / n}: {(root / n).stat().st_size} bytes, more than the {MAX_XML_BYTES} a "
                                 "product's metadata file may have")
            return (root / n).read_bytes()

        return names, lambda n: str(root / n), read_file
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as e:
        raise AtlasError(f"{p}: not a zip archive, or a damaged one ({_zip_problem(e)}); expected a zipped "
                         "Sentinel-2 .SAFE product") from None
    absp = os.path.abspath(p)

    def read(name: str) -> bytes:
        try:
            if zf.getinfo(name).file_size > MAX_XML_BYTES:
                raise AtlasError(f"{p}: {name} inflates to {zf.getinfo(name).file_size} bytes, more than the "
                                 f"{MAX_XML_BYTES} a product's metadata file may have")
            with zf.open(name) as f:  # the header's size may lie: never inflate more than the cap
                data = f.read(MAX_XML_BYTES + 1)
            if len(data) > MAX_XML_BYTES:
                raise AtlasError(f"{p}: {name} inflates to more than {MAX_XML_BYTES} bytes")
            return data
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
            raise AtlasError(f"{p}: damaged zip archive: cannot extract {name} ({_zip_problem(e)})") from None

    return zf.namelist(), lambda n: f"/vsizip/{absp}/{n}", read


def _zip_problem(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:120] or type(e).__name__


def open_product(p: str) -> Scene:
    """A SAFE product (folder or zip), or a folder of one GeoTIFF per band (BigEarthNet layout:
    no metadata, so the level comes from the name and no offset is applied unless --offset)."""
    names, gdal_path, read_bytes = _safe_listing(p)
    mtd = [n for n in names if _MTD_RE.search(n)]
    band_re = _JP2_RE
    if mtd:
        kind, level = "safe", "L" + _MTD_RE.search(mtd[0]).group(2)
        offsets, baseline = _safe_offsets(p, read_bytes(mtd[0]))
    elif os.path.isdir(p) and any(_TIF_RE.search(n) for n in names):
        band_re, kind = _TIF_RE, "band-files"
        level, baseline = _folder_product(p, read_bytes if "metadata.json" in names else None)
        offsets = dict.fromkeys(S2_BANDS, -1000.0) if baseline >= "04.00" and baseline[:1].isdigit() else {}
        baseline += " (from the product name)" if baseline[:1].isdigit() else ""
    else:
        raise AtlasError(f"{p}: not a Sentinel-2 SAFE product (no MTD_MSIL1C.xml / MTD_MSIL2A.xml inside) "
                         "nor a folder of one GeoTIFF per band (B02.tif, B2.tif or *_B02.tif, ...)")
    files: dict[str, tuple[int, str]] = {}  # band -> (resolution, name), finest resolution wins
    for n in names:
        m = band_re.search(n)
        if m:
            try:
                band = m.group(2).upper() if m.group(2).upper() == "SCL" else normalise_band(m.group(2))
            except AtlasError:  # B13.tif and the like: not a Sentinel-2 band
                continue
            res = int(m.group(1) or m.group(3) or 0)
            if band not in files or (res and res < files[band][0]):
                files[band] = (res, n)
    ref_band = next((b for b in ("B02", "B03", "B04", "B08") if b in files), None)
    if ref_band is None:
        raise AtlasError(f"{p}: no 10 m band (B02, B03, B04 or B08) to set the grid")
    ref_path = gdal_path(files[ref_band][1])
    try:
        ref = open_dataset(ref_path)
    except RasterioIOError as e:
        raise AtlasError(f"{p}: cannot read {files[ref_band][1]} ({str(e).splitlines()[0]})") from None
    check_grid(p, ref)
    transform = tuple(ref.transform)[:6]

    def source(name: str, resampling: str) -> BandSource:
        path = gdal_path(name)
        try:
            ds = open_dataset(path)
        except RasterioIOError as e:
            raise AtlasError(f"{p}: cannot read {name} ({str(e).splitlines()[0]})") from None
        same = tuple(ds.transform)[:6] == transform and ds.shape == ref.shape
        return BandSource(path, 1, warp=not same, resampling=resampling)

    held = tuple(b for b in S2_BANDS if b in files)
    sources = tuple(source(files[b][1], "bilinear") for b in held)
    used = {offsets.get(b, 0.0) for b in held}
    if len(used) > 1:
        raise AtlasError(f"{p}: bands have different add-offsets {sorted(used)}; not supported")
    offset, offset_how = check_offset(used.pop() if used else 0.0, f"baseline {baseline}",
                                      [(gdal_path(files[b][1]), 1) for b in OFFSET_BANDS if b in files])
    mask = source(files["SCL"][1], "nearest") if "SCL" in files else None
    catalog = tuple((b, s, f"{os.path.basename(files[b][1])} ({f'{files[b][0]} m' if files[b][0] else 'own grid'}"
                           f"{', resampled to 10 m' if s.warp else ''}); baseline {baseline}")
                    for b, s in zip(held, sources))
    return Scene(
        path=p, kind=kind, level=level, bands=held, sources=sources,
        crs_wkt=ref.crs.to_wkt(), transform=transform, width=ref.width, height=ref.height,
        block=ref.block_shapes[0][1], offset=offset, offset_how=offset_how, nodata=0.0, mask=mask,
        available=held, date=date_from_name(p), band_mapping={b: m for b, _, m in catalog}, catalog=catalog,
    )


def _folder_product(p: str, read_json) -> tuple[str | None, str]:
    """(level, processing baseline) of a band folder, from the product name in the folder's name
    (S2B_MSIL2A_20200223T032739_N9999_...) or in its metadata.json (SSL4EO-S12: PRODUCT_ID,
    PROCESSING_BASELINE); baseline 'unknown (...)' where neither says."""
    text = os.path.basename(os.path.abspath(p))
    meta = {}
    if read_json is not None:
        try:
            meta = json.loads(read_json("metadata.json"))
        except (ValueError, OSError, AtlasError):
            meta = {}
        text += " " + str(meta.get("PRODUCT_ID", ""))
    m = re.search(r"MSIL(1C|2A)", text)
    b = re.search(r"_N(\d{2})(\d{2})_", text)
    baseline = (str(meta["PROCESSING_BASELINE"]) if meta.get("PROCESSING_BASELINE")
                else f"{b[1]}.{b[2]}" if b else "unknown (no product metadata)")
    return (f"L{m[1]}" if m else None), baseline


def _safe_offsets(p: str, xml_bytes: bytes) -> tuple[dict[str, float], str]:
    """Per-band add-offset (RADIO_ADD_OFFSET for L1C, BOA_ADD_OFFSET for L2A) and the baseline."""
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as e:
        raise AtlasError(f"{p}: product metadata XML is malformed ({e})") from None
    local = {el.tag.rsplit("}", 1)[-1]: el for el in root.iter()}
    baseline = (local["PROCESSING_BASELINE"].text or "").strip() if "PROCESSING_BASELINE" in local else "unknown"
    band_ids = {el.get("bandId"): el.get("physicalBand") for el in root.iter()
                if el.tag.rsplit("}", 1)[-1] == "Spectral_Information" and el.get("bandId")}
    offsets: dict[str, float] = {}
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] in ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET"):
            bid = el.get("band_id")
            name = band_ids.get(bid) or (S2_BANDS[int(bid)] if bid and bid.isdigit() and int(bid) < 13 else None)
            if name:
                offsets[normalise_band(name)] = float(el.text)
    return offsets, baseline
