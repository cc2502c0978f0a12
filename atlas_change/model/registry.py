"""Model registry: each model is a folder with `model.keras`, `card.json` and `README.md`.

The card holds everything inference needs (bands in order, normalisation, classes) and the
SHA-256 of the weights, which is checked every time a model is loaded."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..classes import CLASSES
from ..errors import AtlasError

#: the models `classify` picks from when none is named, most preferred first: the first that is
#: shipped, trained and whose bands the input holds (spectrumnet-l1c13 ships only where it beats the RGB models)
DEFAULT_MODELS = ("spectrumnet-l1c13", "spectrumnet-rgb", "resnet50-rgb")
WEIGHTS_FILE = "model.keras"
#: networks `train` can build (atlas_change.model.nets); any width 'spectrumnet[-bn]-wW' (0 < W <= 1) works too
ARCHITECTURES = ("spectrumnet", "spectrumnet-bn", "spectrumnet-bn-w0.5", "resnet50", "resnet50-nomaxpool")
#: Keras dtype policies `train` can use; mixed_bfloat16 keeps float32 weights, and the model is saved float32
PRECISIONS = ("float32", "mixed_bfloat16")


def cache_dir() -> Path:
    """Where derived data are kept between runs (decoded EuroSAT arrays, training state, converted
    models): $ATLAS_CACHE, else ~/.cache/atlas_change."""
    return Path(os.environ.get("ATLAS_CACHE", Path.home() / ".cache" / "atlas_change"))


def models_dir() -> Path:
    """Where named models live: $ATLAS_MODELS, else the project's `models/` folder."""
    return Path(os.environ.get("ATLAS_MODELS", Path(__file__).resolve().parents[2] / "models"))


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
    #: input mapping applied before normalisation; {} = none. RGB models trained on the EuroSAT JPEGs
    #: have {"kind": "eurosat-jpeg", "scale": 255/2750, "max": 255}: v = min(DN * scale, max)
    radiometry: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    #: temperature scaling of the probabilities (calibrate.py): {"temperature": T, ...}; {} = none
    calibration: dict = field(default_factory=dict)
    #: the OpenVINO int8 network made by `quantize` (quantize.py): its file, SHA-256, what it scored and
    #: whether it is the default of runtime 'openvino' (it kept the float labels); {} = none
    int8: dict = field(default_factory=dict)
    date: str = ""
    path: str = ""  # folder the card was read from (not stored)

    @property
    def short_hash(self) -> str:
        return self.weights_sha256[:12]

    def stamp(self) -> dict:
        """What every output carries about the model."""
        return {"model": self.name, "architecture": self.architecture, "weights_sha256": self.weights_sha256,
                "trained": self.trained, "bands": list(self.bands), "normalisation": self.normalisation,
                "radiometry": self.radiometry,
                "mean": list(self.mean), "std": list(self.std), "temperature": self.temperature,
                **({"change_prior_stay": self.change_stay} if self.change_stay is not None else {})}

    @property
    def change_stay(self) -> float | None:
        """The change prior fitted to this model (calibrate; change/prior.py), or None: not fitted."""
        stay = self.calibration.get("change_prior", {}).get("stay")
        return None if stay is None else float(stay)

    @property
    def temperature(self) -> float:
        """The calibration's temperature (1.0: the network's own probabilities)."""
        return float(self.calibration.get("temperature", 1.0))

    @property
    def int8_default(self) -> bool:
        """Whether runtime 'openvino' runs this model's int8 network (quantize.py decided it keeps the labels)."""
        return bool(self.int8.get("default")) and bool(self.int8.get("file"))

    def cell_temperature(self, stride: int) -> float:
        """The map cells' second temperature at `stride` (calibrate.fit_stride_temperatures; 1.0: none)."""
        return float(self.calibration.get("stride_temperature", {}).get(str(stride), {}).get("temperature", 1.0))


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
                     f" in {models_dir()}; leave --model out to use the default, train one with "
                     "`python -m atlas_change train`, or try the pipeline with `python -m atlas_change demo`")


def shipped_defaults() -> list[ModelCard]:
    """The trained models of DEFAULT_MODELS that are in models_dir(), in order of preference."""
    cards = []
    for name in DEFAULT_MODELS:
        if (models_dir() / name / "card.json").exists():
            card = load_card(name, verify=False)
            if card.trained:
                cards.append(card)
    return cards


def choose_model(available: tuple[str, ...], source: str) -> tuple[ModelCard, str]:
    """(card, why) of the default model for an input holding the bands `available`."""
    cards = shipped_defaults()
    if not cards:
        raise AtlasError(f"no trained model in {models_dir()} (looked for {', '.join(DEFAULT_MODELS)}); "
                         "train one with `python -m atlas_change train`, or name one with --model")
    for card in cards:
        if set(card.bands) <= set(available):
            why = (f"default: the first of {', '.join(DEFAULT_MODELS)} that is shipped, trained and whose bands "
                   f"({', '.join(card.bands)}) the input has")
            return load_card(card.path), why
    raise AtlasError(f"{source}: no shipped model fits its bands ({', '.join(available) or 'none named'}); "
                     + "; ".join(f"{c.name} needs {', '.join(c.bands)}" for c in cards))


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
    from .. import quiet_tensorflow

    quiet_tensorflow()
    import keras

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    if getattr(model, "optimizer", None) is not None:  # the optimizer's state (2x the weights) is not the model
        clean = keras.Model.from_config(model.get_config())  # (clone_model would copy the optimizer too)
        clean.set_weights(model.get_weights())
        model = clean
    tmp = d / f".tmp-{os.getpid()}.keras"
    model.save(tmp)
    os.replace(tmp, d / WEIGHTS_FILE)
    card = ModelCard(weights_sha256=sha256_file(d / WEIGHTS_FILE), **card_fields)
    data = {k: v for k, v in asdict(card).items() if k != "path"}
    _write_text(d / "card.json", json.dumps(data, indent=2) + "\n")
    _write_text(d / "README.md", card_markdown(card))
    return ModelCard(**{**asdict(card), "path": str(d)})


def set_card_entry(folder: str | os.PathLike, keys: tuple[str, ...], value) -> None:
    """Set one entry of a model folder's card.json (e.g. ("calibration", "change_prior")), written
    whole and atomically; the weights, and so their SHA-256, are untouched."""
    path = Path(folder) / "card.json"
    doc = json.loads(path.read_text())
    d = doc
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value
    _write_text(path, json.dumps(doc, indent=2) + "\n")


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
             f"- Mean / std: {', '.join(f'{v:.2f}' for v in card.mean)} / {', '.join(f'{v:.2f}' for v in card.std)}",
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
