"""Read stage, STAC: a STAC Item (a JSON file, or an http(s) URL of one) as a `Scene`: one
GeoTIFF / COG per band from its assets, remote ones read with GDAL's HTTP range requests
(/vsicurl/: only the windows a chunk needs), on the grid of its first 10 m band.

Bands come from the asset keys of Earth Search v1 (`blue`, `nir08`, `swir16`, `scl`, ...), of the
Planetary Computer (`B02`, `B8A`, `SCL`, ...), or the assets' `eo:bands` names / common names.
The baseline >= 04.00 offset (+1000 DN) is decided from the pixels, because the catalogues' flags
(`earthsearch:boa_offset_applied`, `raster:bands` offset) are wrong for some items (Element84
earth-search issues 9, 66, 71): run.json says what the item claimed and what the pixels showed."""
from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

from rasterio.errors import RasterioIOError

from ..bands import S2_BANDS, normalise_band
from ..dates import metadata_date
from ..errors import AtlasError, AtlasWarning
from .scene import OFFSET_BANDS, BandSource, Scene, check_grid, check_offset, open_dataset, is_url

#: Earth Search v1 asset keys (and the common names of eo:bands) -> Sentinel-2 band
EARTH_SEARCH = {"coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05",
                "rededge2": "B06", "rededge3": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09",
                "cirrus": "B10", "swir16": "B11", "swir22": "B12", "scl": "SCL"}
RETRIES = 3  # fetching an item: attempts, with 1 s, 2 s backoff between them
TIMEOUT_S = float(os.environ.get("ATLAS_HTTP_TIMEOUT", "30"))  # seconds without an answer (Items, searches, COGs)
#: seconds a whole Item may take to arrive (a server that sends one byte a second never hits TIMEOUT_S)
TOTAL_S = float(os.environ.get("ATLAS_HTTP_TOTAL", str(2 * TIMEOUT_S)))
#: bytes an Item's JSON may have (real ones are tens of kB)
MAX_ITEM_BYTES = int(os.environ.get("ATLAS_HTTP_MAX_BYTES", str(32 << 20)))
# GDAL's own retries with backoff for 429 / 5xx answers to its range requests (HTTP only; side-car
# probing is turned off per HTTP open in scene.open_dataset, not here, where it would also hide the
# .aux.xml legends of local outputs)
for _k, _v in (("GDAL_HTTP_MAX_RETRY", "3"), ("GDAL_HTTP_RETRY_DELAY", "1"), ("GDAL_HTTP_TIMEOUT", str(int(max(1, TIMEOUT_S))))):
    os.environ.setdefault(_k, _v)


def is_item(p: str) -> bool:
    """Whether `p` names a STAC Item: an http(s) URL, or a local .json file holding a Feature (or a
    FeatureCollection, which open_item then refuses with what to pass instead)."""
    if is_url(p):
        return True
    if not p.lower().endswith(".json") or not os.path.isfile(p):
        return False
    try:
        with open(p, "rb") as f:
            head = f.read(1 << 16)
        return ((b'"Feature"' in head and b'"assets"' in head) or b'"stac_version"' in head
                or b'"FeatureCollection"' in head)
    except OSError:
        return False


def fetch(url: str, max_bytes: int = MAX_ITEM_BYTES, total_s: float = TOTAL_S, what: str = "the STAC Item") -> bytes:
    """The bytes at an http(s) URL, retried with backoff where a retry can help (timeouts, 5xx,
    refused connections); AtlasError naming the URL and `what` it should hold otherwise, and at once for
    a body over `max_bytes` or one that takes more than `total_s` seconds in all (a server that trickles)."""
    last = ""
    for attempt in range(RETRIES):
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
                return _read_capped(iter(lambda: r.read1(1 << 16), b""), r.headers.get("Content-Length"), url,
                                    max_bytes, total_s, what)
        except (ValueError, http.client.InvalidURL) as e:  # a space in the URL, a bad scheme: no retry helps
            raise AtlasError(f"{url}: not a valid URL ({e})") from None
        except http.client.IncompleteRead as e:
            last = f"the body ended after {len(e.partial)} bytes, before its announced length"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code} {e.reason}"
            if e.code < 500 and e.code != 429:
                break  # 404, 403: asking again will not help
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            last = str(getattr(e, "reason", e))
        if attempt + 1 < RETRIES:
            time.sleep(2 ** attempt)
    raise AtlasError(f"{url}: cannot fetch {what} ({last})")


def _read_capped(chunks, size: str | None, url: str, max_bytes: int, total_s: float, what: str) -> bytes:
    """An HTTP response's body from its `chunks` as they arrive; AtlasError past `max_bytes` or `total_s`
    seconds; http.client.IncompleteRead where it ends short of its announced `size` (Content-Length)."""
    deadline = time.monotonic() + total_s
    if size and size.isdigit() and int(size) > max_bytes:
        raise AtlasError(f"{url}: the answer announces {int(size)} bytes, more than the {max_bytes} allowed for "
                         f"{what} (ATLAS_HTTP_MAX_BYTES)")
    parts, n = [], 0
    for chunk in chunks:
        parts.append(chunk)
        n += len(chunk)
        if n > max_bytes:
            raise AtlasError(f"{url}: the answer is longer than the {max_bytes} bytes allowed for {what} "
                             "(ATLAS_HTTP_MAX_BYTES)")
        if time.monotonic() > deadline:
            raise AtlasError(f"{url}: the answer took more than {total_s:g} s in all ({n} bytes so far; "
                             "ATLAS_HTTP_TOTAL)")
    if size and size.isdigit() and n < int(size):
        raise http.client.IncompleteRead(b"".join(parts), int(size) - n)
    return b"".join(parts)


def stac_api_io():
    """pystac-client's HTTP client with every answer read bounded as an Item's is (TIMEOUT_S without an
    answer, TOTAL_S and MAX_ITEM_BYTES in all, each page of a search): requests alone reads any body
    whole, for as long as it trickles in."""
    from pystac_client.stac_api_io import StacApiIO

    io = StacApiIO(timeout=TIMEOUT_S)
    send = io.session.send

    def bounded_send(request, **kw):
        r = send(request, **{**kw, "stream": True})
        try:  # read1: what has arrived, gzip undone; a body cut short raises by itself (no size to check)
            chunks = iter(lambda: r.raw.read1(1 << 16, decode_content=True), b"")
            r._content = _read_capped(chunks, None, request.url, MAX_ITEM_BYTES, TOTAL_S,
                                      "a STAC API's answer")
        finally:
            r.close()
        return r

    io.session.send = bounded_send  # redirects go through it too (requests calls self.send)
    return io


def load_item(p: str) -> dict:
    """The Item's JSON, from a file or a URL; AtlasError naming it when it is no STAC Item."""
    try:
        raw = fetch(p) if is_url(p) else Path(p).read_bytes()
        item = json.loads(raw)
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested thousands deep
        raise AtlasError(f"{p}: not a readable STAC Item ({str(e).splitlines()[0][:120]})") from None
    if isinstance(item, dict) and item.get("type") == "FeatureCollection":
        n = len(item["features"]) if isinstance(item.get("features"), list) else 0
        raise AtlasError(f"{p}: a FeatureCollection of {n} feature(s) (e.g. a saved STAC search), not one Item: "
                         "pass one Item's JSON or URL, or let compare / atlas search with --stac-api")
    if not isinstance(item, dict) or item.get("type") != "Feature" or not isinstance(item.get("assets"), dict):
        raise AtlasError(f"{p}: not a STAC Item (a GeoJSON Feature with assets)")
    if (why := item_problem(item)) is not None:
        raise AtlasError(f"{p}: not a usable STAC Item: {why}")
    return item


def item_problem(item: dict) -> str | None:
    """What makes a Feature with assets unusable as a STAC Item here (each field this reader uses, of the
    type the STAC specification gives it), or None."""
    props = item.get("properties", {})
    if not isinstance(props, dict):
        return "properties is not an object"
    for key in ("datetime", "start_datetime"):
        if props.get(key) is not None and not isinstance(props[key], str):
            return f"properties.{key} is not a date-time string"
    for key in ("eo:cloud_cover", "proj:epsg"):
        if props.get(key) is not None and (isinstance(props[key], bool) or not isinstance(props[key], (int, float))):
            return f"properties.{key} is not a number"
    for name, a in item["assets"].items():
        if not isinstance(a, dict):
            return f"asset {name!r} is not an object"
        if a.get("href") is not None and not isinstance(a["href"], str):
            return f"asset {name!r}: href is not a string"
        for key in ("eo:bands", "raster:bands", "bands"):
            if key in a and not (isinstance(a[key], list) and all(isinstance(b, dict) for b in a[key])):
                return f"asset {name!r}: {key} is not a list of objects"
    return None


def gdal_path(href: str, base: str) -> str:
    """A GDAL path for an asset href: /vsicurl/ for http(s), /vsis3/ for s3://, a local path
    (relative hrefs resolved against the Item's own location)."""
    if not urllib.parse.urlparse(href).scheme and is_url(base):
        href = urllib.parse.urljoin(base, href)
    if is_url(href):
        return "/vsicurl/" + href
    if href.startswith("s3://"):
        return "/vsis3/" + href[5:]
    if href.startswith("file://"):
        href = urllib.parse.urlparse(href).path
    return href if os.path.isabs(href) else os.path.join(os.path.dirname(os.path.abspath(base)), href)


def band_assets(item: dict) -> dict[str, tuple[str, dict]]:
    """Sentinel-2 band (and SCL) -> (asset key, asset) of the Item's GeoTIFF / COG assets."""
    out: dict[str, tuple[str, dict]] = {}
    for key, a in item["assets"].items():
        href, kind = str(a.get("href", "")), str(a.get("type", ""))
        if "tiff" not in kind.lower() and not href.lower().split("?")[0].endswith((".tif", ".tiff")):
            continue  # JP2 twins, thumbnails, metadata
        names = [key] + [n for b in a.get("eo:bands") or [] for n in (b.get("name"), b.get("common_name")) if n]
        band = None
        for n in names:
            n = str(n)
            band = EARTH_SEARCH.get(n.lower()) or ("SCL" if n.upper() == "SCL" else None)
            if band is None:
                try:
                    band = normalise_band(n)
                except AtlasError:
                    continue
            break
        if band and band not in out:
            out[band] = (key, a)
    return out


def _needs_signing(href: str) -> bool:
    """An Azure Blob Storage URL of the Planetary Computer without a SAS token (`sig=`)."""
    u = urllib.parse.urlparse(href)
    return u.netloc.endswith(".blob.core.windows.net") and "sig=" not in u.query


def claimed_offset(item: dict, assets: dict) -> str:
    """What the Item says of the baseline offset, in words (for run.json)."""
    props = item.get("properties", {})
    said = [f"baseline {props.get('s2:processing_baseline', 'unknown')}"]
    for k in ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied"):
        if k in props:
            said.append(f"{k} {str(props[k]).lower()}")
    rb = next((a.get("raster:bands") for b, (_, a) in assets.items() if b in OFFSET_BANDS and a.get("raster:bands")),
              None)
    if rb and rb[0].get("offset") is not None:
        said.append(f"raster:bands offset {rb[0]['offset']} scale {rb[0].get('scale', 1)}")
    return "; ".join(said)


def open_item(p: str) -> Scene:
    """A STAC Item as a Scene of every band it has an asset for (AtlasError naming the Item or the
    asset's URL)."""
    item = load_item(p)
    assets = band_assets(item)
    paths = {b: gdal_path(a["href"], p) for b, (_, a) in assets.items()}
    unsigned = [a["href"] for _, a in assets.values() if _needs_signing(str(a["href"]))]
    if unsigned:
        raise AtlasError(f"{p}: its assets are on the Planetary Computer's storage ({unsigned[0].split('?')[0]}), "
                         "which serves them only with a signed URL: sign the Item first (pip install "
                         "planetary-computer; planetary_computer.sign(item)) and pass the signed Item's JSON")
    ref_band = next((b for b in ("B02", "B03", "B04", "B08") if b in assets), None)
    if ref_band is None:
        raise AtlasError(f"{p}: no 10 m band (B02, B03, B04 or B08) among the Item's assets to set the grid")

    def opened(band: str):
        try:
            return open_dataset(paths[band])
        except RasterioIOError as e:
            where = paths[band].removeprefix("/vsicurl/")
            raise AtlasError(f"{where}: cannot read the {band} asset of {p} ({str(e).splitlines()[0][:160]})") from None

    ref = opened(ref_band)
    check_grid(p, ref)
    transform = tuple(ref.transform)[:6]

    def source(band: str, resampling: str) -> BandSource:
        ds = opened(band)
        where = paths[band].removeprefix("/vsicurl/")
        if ds.crs is None:
            raise AtlasError(f"{where}: the {band} asset of {p} has no CRS, so it cannot be placed on the grid")
        if ds.crs.is_projected and max(abs(ds.res[0]), abs(ds.res[1])) > 61:
            raise AtlasError(f"{where}: the {band} asset of {p} is at {max(ds.res):g} m, coarser than any Sentinel-2 "
                             "band (60 m): a preview or overview, not the band")
        if ds.count != 1:
            warnings.warn(f"{where}: the {band} asset of {p} holds {ds.count} bands; its first is read as {band}",
                          AtlasWarning, stacklevel=3)
        return BandSource(paths[band], 1, warp=tuple(ds.transform)[:6] != transform or ds.shape != ref.shape,
                          resampling=resampling)

    held = tuple(b for b in S2_BANDS if b in assets)
    sources = tuple(source(b, "bilinear") for b in held)
    props = item.get("properties", {})
    baseline = str(props.get("s2:processing_baseline", ""))
    said = claimed_offset(item, assets)
    # from baseline 04.00 the product adds 1000 DN, unless the catalogue took it off again: the pixels decide
    candidate = -1000.0 if baseline[:2].isdigit() and baseline >= "04.00" else 0.0
    offset, offset_how = check_offset(candidate, f"the STAC Item: {said}",
                                       [(paths[b], 1) for b in OFFSET_BANDS if b in paths])
    level = "L2A" if "SCL" in assets or "l2a" in str(item.get("collection", "")).lower() else (
        "L1C" if "l1c" in str(item.get("collection", "")).lower() else None)
    catalog = tuple((b, s, f"asset {assets[b][0]} ({paths[b].removeprefix('/vsicurl/')}"
                           f"{', resampled to 10 m' if s.warp else ''})") for b, s in zip(held, sources))
    return Scene(
        path=p, kind="stac-item", level=level, bands=held, sources=sources,
        crs_wkt=ref.crs.to_wkt(), transform=transform, width=ref.width, height=ref.height,
        block=ref.block_shapes[0][1], offset=offset, offset_how=offset_how, nodata=0.0,
        mask=source("SCL", "nearest") if "SCL" in assets else None, available=held,
        date=metadata_date(str(props.get("datetime") or "")[:10]),
        band_mapping={b: m for b, _, m in catalog}, catalog=catalog,
    )


def save_item(item: dict, url: str, path: Path) -> Path:
    """`item` (fetched from `url`) as a local JSON file at `path`, its relative asset hrefs made
    absolute: a job then reads, hashes and resumes the same Item whatever the catalogue answers later."""
    from ..outputs import atomic_write

    item = json.loads(json.dumps(item))
    for a in item.get("assets", {}).values():
        if "href" in a and not urllib.parse.urlparse(a["href"]).scheme:
            a["href"] = urllib.parse.urljoin(url, a["href"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fh.write(json.dumps(item).encode()))
    return path
