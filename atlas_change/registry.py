"""Model registry: each model is a folder with `model.keras`, `card.json` and `README.md`.

The card holds everything inference needs (bands in order, normalisation, classes) and the
SHA-256 of the weights, which is checked every time a model is loaded."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .classes import CLASSES
from .errors import AtlasError

DEFAULT_MODEL = "spectrumnet-l1c13"
WEIGHTS_FILE = "model.keras"


def models_dir() -> Path:
    """Where named models live: $ATLAS_MODELS, else the project's `models/` folder."""
    return Path(os.environ.get("ATLAS_MODELS", Path(__file__).resolve().parents[1] / "models"))


@dataclass(frozen=True)
class ModelCard:
    name: str
    architecture: str
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights_sha256: str
    classes: tuple[str, ...] = CLASSES
    trained: bool = True
    normalisation: str = ("(DN - mean) / std per band, DN = Sentinel-2 L1C digital numbers on the "
                          "pre-04.00 scale (reflectance x 10000; the -1000 offset of newer baselines removed)")
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    date: str = ""
    path: str = ""  # folder the card was read from (not stored)

    @property
    def short_hash(self) -> str:
        return self.weights_sha256[:12]

    def stamp(self) -> dict:
        """What every output carries about the model."""
        return {"model": self.name, "architecture": self.architecture, "weights_sha256": self.weights_sha256,
                "trained": self.trained, "bands": list(self.bands), "normalisation": self.normalisation,
                "mean": list(self.mean), "std": list(self.std)}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve(model: str | os.PathLike) -> Path:
    """A model folder from a name (under models_dir()) or a path."""
    p = Path(model)
    if (p / "card.json").exists():
        return p
    q = models_dir() / str(model)
    if (q / "card.json").exists():
        return q
    known = sorted(d.name for d in models_dir().glob("*") if (d / "card.json").exists())
    raise AtlasError(f"{model}: no such model (no card.json); known models: {', '.join(known) or 'none'}"
                     f" in {models_dir()}; train one with `python -m atlas_change train`")


def load_card(model: str | os.PathLike, verify: bool = True) -> ModelCard:
    """Read a model card; with `verify`, refuse weights whose SHA-256 differs from the card's."""
    d = resolve(model)
    try:
        raw = json.loads((d / "card.json").read_text())
        keys = ModelCard.__dataclass_fields__
        card = ModelCard(**{k: tuple(v) if isinstance(v, list) and k in ("bands", "mean", "std", "classes") else v
                            for k, v in raw.items() if k in keys and k != "path"}, path=str(d))
    except (ValueError, TypeError) as e:
        raise AtlasError(f"{d / 'card.json'}: not a valid model card ({e})") from None
    if not (len(card.bands) == len(card.mean) == len(card.std)):
        raise AtlasError(f"{d / 'card.json'}: bands, mean and std differ in length")
    w = d / WEIGHTS_FILE
    if verify:
        if not w.exists():
            raise AtlasError(f"{w}: weights file missing")
        actual = sha256_file(w)
        if actual != card.weights_sha256:
            raise AtlasError(f"{w}: weights SHA-256 {actual[:12]}... does not match the card's "
                             f"{card.weights_sha256[:12]}...; the weights were changed or corrupted")
    return card


def save(model, out_dir: str | os.PathLike, **card_fields) -> ModelCard:
    """Save a Keras model with its card (JSON + Markdown) into `out_dir`, atomically per file."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".tmp-{os.getpid()}.keras"
    model.save(tmp)
    os.replace(tmp, d / WEIGHTS_FILE)
    card = ModelCard(weights_sha256=sha256_file(d / WEIGHTS_FILE), **card_fields)
    data = {k: v for k, v in asdict(card).items() if k != "path"}
    _write_text(d / "card.json", json.dumps(data, indent=2) + "\n")
    _write_text(d / "README.md", card_markdown(card))
    return ModelCard(**{**asdict(card), "path": str(d)})


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def card_markdown(card: ModelCard) -> str:
    """The human-readable model card."""
    m, t = card.metrics, card.training
    lines = [f"# Model card: {card.name}", "",
             f"- Architecture: {card.architecture}",
             f"- Trained: {'yes' if card.trained else 'NO - weights are randomly initialised; labels are meaningless'}",
             f"- Input bands (in order): {', '.join(card.bands)}",
             f"- Normalisation: {card.normalisation}",
             f"- Classes (ids 1..{len(card.classes)}): {', '.join(card.classes)}",
             f"- Weights: `{WEIGHTS_FILE}`, SHA-256 `{card.weights_sha256}`",
             f"- Date: {card.date}", ""]
    if t:
        lines += ["## Training", ""] + [f"- {k}: {v}" for k, v in t.items()] + [""]
    if m:
        lines += ["## Evaluation", ""]
        if "accuracy" in m:
            lines += [f"- Overall accuracy ({m.get('split', 'test')}, n={m.get('n')}): {m['accuracy']:.4f}", ""]
        if "per_class" in m:
            lines += ["| class | accuracy |", "|---|---|"] + [f"| {c} | {a:.4f} |" for c, a in m["per_class"].items()]
            lines += [""]
        if "confusion" in m:
            lines += ["Confusion matrix (rows = true, columns = predicted, class order as above):", "", "```"]
            lines += [" ".join(f"{v:5d}" for v in row) for row in m["confusion"]] + ["```", ""]
    return "\n".join(lines)
