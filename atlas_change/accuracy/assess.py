"""Assess stage: good-practice accuracy and area estimates from a labelled stratified sample
(Olofsson, Foody, Herold, Stehman, Woodcock, Wulder 2014, "Good practices for estimating area and
assessing accuracy of land change", Remote Sensing of Environment 148: 42-57; eq. numbers below).

Strata are the map's classes (rows of the error matrix); reference labels are the columns. With
W_i the map share of stratum i, n_ij the sample counts and n_i the stratum's sample size:
p_ij = W_i n_ij / n_i (eq. 4); user's accuracy U_i = p_ii / p_i. (eq. 2), producer's P_j = p_jj / p_.j
(eq. 3), overall O = sum p_jj (eq. 1); area A_j = A p_.j (eq. 9) with SE(p_.j) of eq. 10; the
variances of O, U_i and P_j of eqs. 5-7; 95 % intervals = 1.96 SE. A map stratum that is not a
reference class (here: `uncertain`, cells the map abstains on) adds to the areas but is never
'correct': overall accuracy is then that of the labelled map area (O / (1 - W_uncertain))."""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..outputs import atomic_write, csv_text, hectares, strict_json
from ..classes import CLASSES, GROUP_NAMES
from ..errors import AtlasError

Z95 = 1.96


@dataclass(frozen=True)
class Estimates:
    """Olofsson et al. (2014) estimates; arrays follow `reference` (columns) or `strata` (rows)."""

    strata: list[str]
    reference: list[str]
    proportions: np.ndarray  # (strata, reference): estimated area proportions p_ij
    area: np.ndarray  # per reference class, in the unit of the map areas
    area_se: np.ndarray
    users: dict[str, tuple[float, float]]  # stratum -> (U, SE), strata that are reference classes
    producers: dict[str, tuple[float, float]]  # class -> (P, SE), reference classes that are strata
    overall: tuple[float, float]


def estimate(strata: list[str], map_area: np.ndarray, reference: list[str], counts: np.ndarray) -> Estimates:
    """Estimates from map areas per stratum (any unit) and sample counts (strata x reference)."""
    n_ij = np.asarray(counts, float)
    a_m = np.asarray(map_area, float)
    n_i = n_ij.sum(axis=1)
    if (n_i < 2).any():
        raise AtlasError(f"strata {', '.join(s for s, k in zip(strata, n_i) if k < 2)}: fewer than 2 labelled "
                         "sample cells, no variance can be estimated")
    total = a_m.sum()
    w = a_m / total
    share = n_ij / n_i[:, None]  # n_ij / n_i.
    p = w[:, None] * share  # eq. 4
    p_col = p.sum(axis=0)
    se_col = np.sqrt((w[:, None] ** 2 * share * (1 - share) / (n_i[:, None] - 1)).sum(axis=0))  # eq. 10
    diag = {s: (i, reference.index(s)) for i, s in enumerate(strata) if s in reference}
    users = {}
    for s, (i, j) in diag.items():
        u = share[i, j]
        users[s] = (float(u), float(np.sqrt(u * (1 - u) / (n_i[i] - 1))))  # eq. 6
    labelled = sum(w[i] for i, _ in diag.values())
    o = sum(p[i, j] for i, j in diag.values()) / labelled
    v_o = sum(w[i] ** 2 * users[s][0] * (1 - users[s][0]) / (n_i[i] - 1) for s, (i, _) in diag.items()) / labelled ** 2
    producers = {}
    n_map = a_m  # N_i.: map units per stratum (eq. 7 uses counts; any unit cancels)
    for s, (i, j) in diag.items():
        n_col = (n_map / n_i * n_ij[:, j]).sum()  # N_.j estimated
        pj = p[i, j] / p_col[j] if p_col[j] else float("nan")
        u = users[s][0]
        rest = sum(n_map[k] ** 2 * share[k, j] * (1 - share[k, j]) / (n_i[k] - 1) for k in range(len(strata)) if k != i)
        v = (n_map[i] ** 2 * (1 - pj) ** 2 * u * (1 - u) / (n_i[i] - 1) + pj ** 2 * rest) / n_col ** 2
        producers[s] = (float(pj), float(np.sqrt(v)))
    return Estimates(strata, reference, p, p_col * total, se_col * total, users, producers, (float(o), float(np.sqrt(v_o))))


def sample_size(weights: np.ndarray, expected_users: np.ndarray, target_se: float) -> int:
    """Olofsson et al. (2014) eq. 13 (Cochran 1977, eq. 5.25): n = (sum W_i S_i / S(O))^2 with
    S_i = sqrt(U_i (1 - U_i)) from the user's accuracies expected of each stratum."""
    s = np.sqrt(np.asarray(expected_users) * (1 - np.asarray(expected_users)))
    return int(np.ceil((np.asarray(weights) @ s / target_se) ** 2))


def allocate(cells: np.ndarray, n: int, minimum: int) -> np.ndarray:
    """Sample sizes per stratum (Olofsson et al. 2014, section 5.1.2's example): in proportion to
    area, but at least `minimum` (all of a smaller stratum) for the rare ones, e.g. the change
    strata (the paper: 50-100); what those take comes off the others, still in proportion to area."""
    cells = np.asarray(cells, int)
    fixed = np.zeros(len(cells), bool)
    alloc = np.zeros(len(cells), int)
    for _ in range(len(cells)):
        free = ~fixed
        share = np.where(free, cells, 0) / max(np.where(free, cells, 0).sum(), 1)
        alloc = np.where(fixed, alloc, np.round(share * (n - alloc[fixed].sum())).astype(int))
        small = free & (alloc < np.minimum(cells, minimum))
        big = free & (alloc > cells)
        if not small.any() and not big.any():
            break
        alloc = np.where(small, np.minimum(cells, minimum), np.where(big, cells, alloc))
        fixed |= small | big
    return np.minimum(alloc, cells)


# -- files ---------------------------------------------------------------------------------------

def read_labelled(folder: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str], np.ndarray, float]:
    """strata.csv and the labelled sample.csv of a `sample` folder -> (strata, map hectares,
    reference classes, counts, cell hectares). Errors name the file and row."""
    d = Path(folder)
    strata_csv, sample_csv = d / "strata.csv", d / "sample.csv"
    for f in (strata_csv, sample_csv):
        if not f.exists():
            raise AtlasError(f"{f}: not found (make it with `atlas_change sample`)")
    rows, sample = _read_csv(strata_csv), _read_csv(sample_csv)
    try:
        strata = [r["stratum"] for r in rows]
        map_ha = np.array([float(r["map_ha"]) for r in rows])
        drawn = [int(r["sample_cells"]) for r in rows]
        cell_ha = float(rows[0]["cell_ha"])
        legend = [r["stratum"] for r in rows if r["reference_class"] == "yes"]
        legend += [c for r in rows[:1] for c in (r.get("other_reference") or "").split(";") if c and c not in legend]
    except (KeyError, ValueError, IndexError, TypeError) as e:
        raise AtlasError(f"{strata_csv}: not a strata table written by `sample` ({e})") from None
    if not (np.isfinite(map_ha).all() and (map_ha >= 0).all() and np.isfinite(cell_ha) and cell_ha > 0):
        raise AtlasError(f"{strata_csv}: map_ha and cell_ha must be finite hectares (not NaN, infinite or negative)")
    if len(set(strata)) != len(strata) or not all(x.strip() for x in strata):
        raise AtlasError(f"{strata_csv}: every stratum needs a name of its own")
    if not sample or "reference" not in sample[0] or "stratum" not in sample[0]:
        raise AtlasError(f"{sample_csv}: needs the columns stratum and reference")
    ids = [r.get("sample_id") for r in sample]
    if "sample_id" in sample[0] and len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise AtlasError(f"{sample_csv}: sample_id {dup} appears more than once; each drawn cell is labelled once")
    for x, n in zip(strata, drawn):
        if (got := sum(r["stratum"] == x for r in sample)) > n:
            raise AtlasError(f"{sample_csv}: {got} rows of stratum {x!r} but {n} were drawn ({strata_csv.name}); "
                             "only the cells `sample` drew can be labelled")
    sample = _with_gpkg_labels(sample, d / "sample.gpkg", legend)
    empty = [r.get("sample_id", str(i)) for i, r in enumerate(sample, 1) if not (r["reference"] or "").strip()]
    if empty:
        raise AtlasError(f"{sample_csv}: {len(empty)} of {len(sample)} sample cells have no reference label yet "
                         f"(first: sample_id {empty[0]}), in it or in sample.gpkg; label every row with one of: "
                         f"{'; '.join(legend)}")
    reference = list(legend)
    refs = [_canonical(r["reference"], legend) for r in sample]
    for i, (r, ref) in enumerate(zip(sample, refs), 2):
        if r["stratum"] not in strata:
            raise AtlasError(f"{sample_csv}: line {i}: stratum {r['stratum']!r} is not in {strata_csv.name}")
        if ref not in reference:
            if not _legend_label(ref):
                raise AtlasError(f"{sample_csv}: line {i}: reference {ref!r} is not a class of the legend "
                                 f"({'; '.join(legend)}; or 'A -> B' for another change between classes or groups)")
            reference.append(ref)
    counts = np.zeros((len(strata), len(reference)), int)
    for r, ref in zip(sample, refs):
        counts[strata.index(r["stratum"]), reference.index(ref)] += 1
    return strata, map_ha, reference, counts, cell_ha


def _with_gpkg_labels(sample: list[dict], gpkg: Path, legend: list[str]) -> list[dict]:
    """sample.csv's rows with the references typed into sample.gpkg's attribute table (in QGIS, say)
    where sample.csv has none, matched by sample_id; AtlasError where the two files give one cell two
    different references."""
    if not gpkg.exists() or "sample_id" not in sample[0]:
        return sample
    import pyogrio

    try:
        table = pyogrio.read_dataframe(gpkg, layer="sample", columns=["sample_id", "reference"], read_geometry=False)
        typed = {str(int(i)): str(r).strip() for i, r in zip(table["sample_id"], table["reference"])
                 if r is not None and str(r).strip()}
    except Exception as e:  # noqa: BLE001  (pyogrio raises several types; a NaN sample_id)
        raise AtlasError(f"{gpkg}: not the sample layer written by `sample` ({str(e).splitlines()[0][:160]})") from None
    out = []
    for r in sample:
        mine, theirs = (r["reference"] or "").strip(), typed.get(str(r["sample_id"]).strip(), "")
        if mine and theirs and _canonical(mine, legend) != _canonical(theirs, legend):
            raise AtlasError(f"{gpkg}: sample_id {r['sample_id']} is {theirs!r} here but {mine!r} in sample.csv; "
                             "label each cell in one of the two files")
        out.append({**r, "reference": mine or theirs})
    return out


def _read_csv(path: Path) -> list[dict]:
    """A CSV file's rows (UTF-8, with or without a byte-order mark; fields separated by commas, or by
    semicolons or tabs as spreadsheets save them where the decimal mark is a comma), or AtlasError
    naming it."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
        header = text.split("\n", 1)[0]
        return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=max(",;\t", key=header.count)))
    except UnicodeDecodeError as e:
        raise AtlasError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8 CSV") from None
    except (OSError, csv.Error) as e:
        raise AtlasError(f"{path}: not a readable CSV file ({e})") from None


def _canonical(text: str, legend: list[str]) -> str:
    """A reference label as the legend spells it, whatever its case, runs of spaces and spaces round
    '->' ('STABLE  agricultural', 'forest->Residential')."""
    t = re.sub(r"\s*->\s*", " -> ", " ".join(text.split()))
    known = {n.casefold(): n for n in (*CLASSES, *GROUP_NAMES, *legend)}
    if t.casefold() in known:
        return known[t.casefold()]
    if t.casefold().startswith("stable ") and t[7:].casefold() in known:
        return "stable " + known[t[7:].casefold()]
    a, sep, b = t.partition(" -> ")
    return f"{known.get(a.casefold(), a)} -> {known.get(b.casefold(), b)}" if sep else t


def _legend_label(text: str) -> bool:
    """Whether `text` names a map class: a class or group, 'stable <class or group>' or '<A> -> <B>' of two
    different classes or two different groups."""
    names = (*CLASSES, *GROUP_NAMES)
    if text in names or (text.startswith("stable ") and text[7:] in names):
        return True
    a, sep, b = text.partition(" -> ")
    return bool(sep) and a != b and ((a in CLASSES and b in CLASSES) or (a in GROUP_NAMES and b in GROUP_NAMES))


def assess(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> dict:
    """Error matrix (area proportions), accuracies and error-adjusted areas with 95 % intervals from
    a labelled `sample` folder; writes assessment.json, error_matrix.csv and areas.csv into `out`
    (default: the folder)."""
    strata, map_ha, reference, counts, cell_ha = read_labelled(folder)
    keep = counts.sum(axis=1) > 0  # a stratum nobody sampled (none drawn) adds nothing to the estimates
    if not keep.all():
        raise AtlasError(f"{Path(folder) / 'sample.csv'}: strata without any labelled cell: "
                         f"{', '.join(s for s, k in zip(strata, keep) if not k)}")
    e = estimate(strata, map_ha, reference, counts)
    ci = lambda se: hectares(Z95 * se)  # noqa: E731
    result = {
        "method": "Olofsson et al. 2014, Remote Sensing of Environment 148: 42-57 (stratified estimators, eqs. 1-10)",
        "cell_area_ha": cell_ha, "map_total_ha": hectares(map_ha.sum()), "sample_size": int(counts.sum()),
        "overall_accuracy": round(e.overall[0], 4), "overall_accuracy_ci95": round(Z95 * e.overall[1], 4),
        "overall_accuracy_of": "the labelled map area" + (" (the uncertain stratum left out)" if "uncertain" in strata
                                                          else ""),
        "classes": {c: {"map_ha": hectares(map_ha[strata.index(c)]) if c in strata else 0.0,
                        "estimated_ha": hectares(e.area[j]), "estimated_ha_ci95": ci(e.area_se[j]),
                        "users_accuracy": round(e.users[c][0], 4) if c in e.users else None,
                        "users_accuracy_ci95": round(Z95 * e.users[c][1], 4) if c in e.users else None,
                        "producers_accuracy": round(e.producers[c][0], 4) if c in e.producers else None,
                        "producers_accuracy_ci95": round(Z95 * e.producers[c][1], 4) if c in e.producers else None}
                    for j, c in enumerate(reference)},
        "counts": {s: {r: int(v) for r, v in zip(reference, row)} for s, row in zip(strata, counts)},
    }
    out = Path(out or folder)
    out.mkdir(parents=True, exist_ok=True)
    matrix = [["map\\reference", *reference, "map_share"]]
    matrix += [[s, *(f"{v:.6f}" for v in e.proportions[i]), f"{map_ha[i] / map_ha.sum():.6f}"]
               for i, s in enumerate(strata)]
    matrix.append(["estimated_share", *(f"{v:.6f}" for v in e.proportions.sum(axis=0)), "1"])
    areas = [["class", "map_ha", "estimated_ha", "ci95_ha", "users_accuracy", "users_ci95", "producers_accuracy",
              "producers_ci95"]]
    areas += [[c, *(None if v is None or v != v else v for v in r.values())] for c, r in result["classes"].items()]
    for name, text in (("error_matrix.csv", csv_text(matrix)), ("areas.csv", csv_text(areas)),
                       ("assessment.json", strict_json(result))):
        atomic_write(out / name, lambda f, t=text: f.write(t.encode()))
    return result
