"""When to say "not sure" instead of a label. Three signs, each with its reason for the user:

- the photo's conversion went wrong (nothing stands out, no background found, the product cut off);
- the image looks unlike anything the model was trained on: its features (the layer before the output)
  are further from every class than ``FAMILIAR_QUANTILE`` % of its run's validation images are (images
  it never trained on; the Mahalanobis distance to the nearest class mean, one shared covariance);
- the model's calibrated confidence in its best guess is low.

Measured on rendered photos (``bench/photo_realistic``): products on four kinds of background against
shapes, text and landscapes. The softmax confidence alone let most of those other things through (it calls
a circle a Bag with 75 % confidence); the distance catches most of them. The statistics are computed once per
model file from training images (never the test set) and kept on disk.

A photographed product may face the other way than Fashion-MNIST's (whose shoes all point left). For a model
that recognises mirror images as well as the originals (checked on its held-out images when the statistics
are made: ``Familiarity.mirror``), a photo is also classified mirrored and the surer of the two is kept
(``surer_mirrored``); a model that does not (the baseline) sees photos as they are.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashion_lib import config, files, photos, wording

MIN_CONFIDENCE = 0.5  # below this calibrated probability of the top class: not sure
FAMILIAR_QUANTILE = 99.0  # images further than this percentile of held-out training images: unfamiliar
STATS_IMAGES, THRESHOLD_IMAGES = 5000, 1000  # training images for the class statistics / for the threshold
MIN_FOREGROUND = 0.01  # less of the photo than this is the product: almost nothing stands out
MAX_FOREGROUND = 0.85  # more than this: no background was told apart from the product
MAX_BORDER = 0.3  # more of one edge of the photo than this is product: cut off by the frame
MIN_INK = 12.0  # mean grey level of the 28×28 result below this: almost empty
# A model may see photos mirrored when taking each held-out image the way round it is surer of costs it at
# most this much accuracy (``Familiarity.mirror_cost``, printed by bench.photo_realistic). Measured on 1,000
# held-out images of the shipped models: MobileNetV2 loses 0.2 points, the baseline (never shown a
# right-facing shoe) 5.9 points.
MIRROR_TOLERANCE = 0.01
SEED = 3  # which training images the statistics are made from
RIDGE = 1e-3  # added to the covariance's diagonal before it is inverted (features that never vary)
FAMILIARITY_FILE = "familiarity.npz"  # beside a shipped or exported model: its statistics
# What kept statistics depend on besides the model file: statistics kept by another recipe are made again.
# Bump the version whenever the way they are made changes in a way these numbers do not say.
RECIPE_VERSION = 1
RECIPE = (
    f"v{RECIPE_VERSION}: {STATS_IMAGES} fit, {THRESHOLD_IMAGES} held out at {FAMILIAR_QUANTILE:g} %, "
    f"seed {SEED}, ridge {RIDGE:g}"
)
MAX_FEATURES = 4096  # wider kept statistics are not of a model here (MobileNetV2, EfficientNetB0: 1,280)
MAX_KEPT_BYTES = 72 * 2**20  # more than this in all, unpacked, is not statistics (4,096 features: 67 MB)


@dataclass(frozen=True)
class Verdict:
    """The answer for one image: a class name, or None for "not sure" with the reasons."""

    label: str | None
    confidence: float
    reasons: tuple[str, ...] = ()

    @property
    def sure(self) -> bool:
        return self.label is not None

    def sentence(self) -> str:
        if self.sure:
            return f"{self.label} ({wording.confidence(self.confidence)})"
        return "Not sure: " + "; ".join(self.reasons) + "."

    def against(self, truth: str | None) -> tuple[str, str]:
        """(tone, text) to show it with, where the true class may be known (a test image): "success" for a
        right answer, "error" for a wrong one, "info" for an answer nobody can check (an upload: green looked
        like "right" for a pullover called a T-shirt), "warning" for "not sure"."""
        if not self.sure:
            return "warning", self.sentence() + (f" The true class is {truth}." if truth else "")
        if truth is None:
            return "info", self.sentence()
        if self.label == truth:
            return "success", f"{self.sentence()}: right"
        return "error", f"{self.sentence()}: wrong, the true class is {truth}"


def conversion_problems(conversion: photos.Conversion | None) -> list[str]:
    """Why the 28×28 image made from a photo may not show the product (empty when it looks fine)."""
    if conversion is None or conversion.mask_method == photos.AS_IS:
        return []
    problems = []
    if conversion.foreground_share < MIN_FOREGROUND:
        problems.append("almost nothing in the photo stands out from the background")
    elif conversion.foreground_share > MAX_FOREGROUND:
        problems.append("no background could be told apart from the product")
    if conversion.border_share > MAX_BORDER:
        problems.append("the product seems cut off by the edge of the photo")
    if float(np.mean(conversion.image)) < MIN_INK:
        problems.append("the converted image is almost empty")
    return problems


@dataclass(frozen=True)
class Familiarity:
    """Where a model's training images lie in its feature space: per-class means, the inverse of the shared
    covariance, and the distance beyond which an image is unlike them."""

    layer: str
    means: np.ndarray  # (10, d)
    inverse: np.ndarray  # (d, d)
    threshold: float
    # accuracy lost on held-out images by taking each the way round the model is surer of (unknown: never)
    mirror_cost: float = float("inf")

    @property
    def mirror(self) -> bool:
        """Photos are also classified mirrored: the model knows mirror images as well as the originals."""
        return self.mirror_cost <= MIRROR_TOLERANCE

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row of ``features`` to its nearest class mean."""
        # (f - m)ᵀ S⁻¹ (f - m) = fᵀS⁻¹f - 2 fᵀS⁻¹m + mᵀS⁻¹m, with one matrix product for all classes (a
        # three-operand einsum per class took 14 ms per image for a 1,280-feature model: no BLAS there).
        f = np.asarray(features, np.float64)
        weighted_means, mean_terms = self._per_class
        d = np.einsum("ij,ij->i", f @ self.inverse, f)[:, None] - 2 * f @ weighted_means.T + mean_terms
        return np.maximum(np.min(d, axis=1), 0.0)  # rounding can leave a tiny negative for a mean itself

    @functools.cached_property
    def _per_class(self) -> tuple[np.ndarray, np.ndarray]:
        """S⁻¹m per class (10, d) and mᵀS⁻¹m (1, 10): the same for every request, computed once."""
        weighted_means = self.means @ self.inverse  # the inverse is symmetric
        return weighted_means, np.einsum("cj,cj->c", weighted_means, self.means)[None, :]


def feature_layer(model) -> str:
    """The layer whose output the distance is measured on: the one that feeds the output layer's input
    (the baseline's hidden dense layer, a transfer model's pooled backbone features)."""
    names = [layer.name for layer in model.layers]
    for name in ("head_hidden", "head_pool"):
        if name in names:
            return name
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    if len(dense) >= 2:
        return dense[-2].name
    raise ValueError(f"model '{model.name}' has no layer before its output to measure familiarity on")


def with_features(model, layer: str | None = None):
    """A model answering [features, probabilities] in one pass (the same layers as ``model``)."""
    import keras

    layer = layer or feature_layer(model)
    return keras.Model(
        model.inputs[0], [model.get_layer(layer).output, model.output], name=f"{model.name}_familiar"
    )


def digest(model_file: Path) -> str:
    """The model file's fingerprint: statistics are kept for one exact file."""
    return hashlib.md5(model_file.read_bytes()).hexdigest()[:16]


def _stats_path(model_digest: str) -> Path:
    # the recipe in the name too: a version of this code that keeps them another way never reads these
    recipe = hashlib.md5(RECIPE.encode()).hexdigest()[:8]
    return config.cache_dir() / "familiarity" / f"{model_digest}-{recipe}.npz"


def outputs(features_of, images: np.ndarray, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(feature rows, class probabilities) of raw images (N, 28, 28) through a ``with_features`` model."""
    x = np.asarray(images, np.float32).reshape(-1, config.IMAGE_SIZE, config.IMAGE_SIZE, 1)
    parts = [features_of(x[i : i + batch], training=False) for i in range(0, len(x), batch)]
    rows = np.concatenate([np.asarray(f) for f, _ in parts]).astype(np.float64)
    return rows, np.concatenate([np.asarray(p) for _, p in parts])


def features(features_of, images: np.ndarray, batch: int = 128) -> np.ndarray:
    """The feature rows of raw images (N, 28, 28) through a ``with_features`` model."""
    return outputs(features_of, images, batch)[0]


def surer_mirrored(probabilities: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
    """Per row: is the model surer of the mirror image (its top probability higher) than of the image?"""
    return np.max(mirrored, axis=1) > np.max(probabilities, axis=1)


def mirror_cost(probabilities: np.ndarray, mirrored: np.ndarray, labels: np.ndarray) -> float:
    """The accuracy lost on these (held-out, correctly oriented) images by taking each the way round the
    model is surer of: its probabilities or its mirror image's (``mirrored``)."""
    plain = np.mean(np.argmax(probabilities, axis=1) == labels)
    chosen = np.where(surer_mirrored(probabilities, mirrored)[:, None], mirrored, probabilities)
    return float(plain - np.mean(np.argmax(chosen, axis=1) == labels))


def tries_mirror(conversion: photos.Conversion | None, stats: Familiarity | None) -> bool:
    """Whether this image is also classified mirrored: a converted photo (not a Fashion-MNIST image, whose
    orientation is the dataset's), with a model that knows mirror images as well."""
    return (
        conversion is not None
        and conversion.mask_method != photos.AS_IS
        and stats is not None
        and stats.mirror
    )


def mirror_note(conversion: photos.Conversion | None, verdict: Verdict) -> str | None:
    """What to say under a verdict given for the photo's mirror image; nothing when the answer is "not
    sure" (a landscape or a drawing is no more a product one way round than the other)."""
    if conversion is None or not conversion.mirrored or not verdict.sure:
        return None
    return (
        f"Classified as its mirror image: the model was surer of its answer ({verdict.label}) with the "
        "product facing the other way (Fashion-MNIST's products all face one way: its shoes point left). The "
        "heatmap on the photo is turned back."
    )


def held_out(folder: Path, ds) -> np.ndarray | None:
    """Training-set indices of the run's validation split: images its model never trained on (None when
    the run's settings cannot be read)."""
    from fashion_lib.training.config import TrainConfig
    from fashion_lib.training.pipelines import make_splits

    try:
        return make_splits(TrainConfig.from_run(folder), ds).val_index
    except (ValueError, TypeError):
        return None


def orient(
    features_of, image: np.ndarray, conversion: photos.Conversion | None, stats: Familiarity | None
) -> tuple[photos.Conversion | None, np.ndarray, np.ndarray]:
    """(conversion, 28×28 image, feature row) to classify ``image`` (a photo's ``conversion.image``, or a
    Fashion-MNIST image with no conversion) by: mirrored when the model tries mirror images
    (``tries_mirror``) and is surer of this one's mirror image. One forward pass of the image (and its
    mirror) through a ``with_features`` model; the feature row gives the familiarity distance."""
    if not tries_mirror(conversion, stats):
        return conversion, image, features(features_of, image[None])[0]
    rows, probabilities = outputs(features_of, np.stack([image, image[:, ::-1]]))
    if surer_mirrored(probabilities[:1], probabilities[1:])[0]:
        turned = photos.mirror(conversion)
        return turned, turned.image, rows[1]
    return conversion, image, rows[0]


def familiarity(model, model_file: Path, ds, held_out_index: np.ndarray | None = None) -> Familiarity:
    """The model's familiarity statistics: class means and covariance from ``STATS_IMAGES`` balanced
    training images, and the threshold from ``THRESHOLD_IMAGES`` images the model never trained on (its
    run's validation split, ``held_out_index``; other training images when that is unknown).

    Read from ``FAMILIARITY_FILE`` beside the model (a shipped or exported model carries its own), else
    from the cache (``known``); else made (about 40 s for a transfer model at 128 px on 2 cores) and kept
    in the cache."""
    return known(model_file, model) or _made(model, model_file, ds, held_out_index)


def of_model(model, model_file: Path, ds=None) -> Familiarity | None:
    """The statistics of the model in ``model_file`` (its run's folder beside it): kept ones, else made
    from Fashion-MNIST (``ds``, or loaded here when it is found); None where neither is at hand."""
    kept = known(model_file, model)
    if kept is not None:
        return kept
    if ds is None:
        from fashion_lib import data

        try:
            ds = data.load(allow_download=False)
        except data.FashionDataError:
            return None
    return _made(model, model_file, ds, held_out(model_file.parent, ds))


def _made(model, model_file: Path, ds, held_out_index: np.ndarray | None) -> Familiarity:
    from fashion_lib import data

    layer = feature_layer(model)
    features_of = with_features(model, layer)
    if held_out_index is not None and len(held_out_index):
        rng = np.random.default_rng(SEED)
        held = rng.choice(held_out_index, size=min(THRESHOLD_IMAGES, len(held_out_index)), replace=False)
        fit = data.stratified_subset(ds.y_train, STATS_IMAGES, seed=SEED)
    else:
        pool = data.stratified_subset(ds.y_train, STATS_IMAGES + THRESHOLD_IMAGES, seed=SEED)
        fit, held = pool[:STATS_IMAGES], pool[STATS_IMAGES:]
    fitted, labels = features(features_of, ds.x_train[fit]), ds.y_train[fit]
    means = np.stack([fitted[labels == c].mean(axis=0) for c in range(config.NUM_CLASSES)])
    centred = fitted - means[labels]
    inverse = np.linalg.inv(centred.T @ centred / len(fitted) + RIDGE * np.eye(fitted.shape[1]))
    inverse = (inverse + inverse.T) / 2  # exactly symmetric (inv leaves rounding), so half of it is kept
    held_images = ds.x_train[held]
    held_features, held_probabilities = outputs(features_of, held_images)
    distances = Familiarity(layer, means, inverse, 0.0).distances(held_features)
    mirrored = outputs(features_of, held_images[:, :, ::-1])[1]
    cost = mirror_cost(held_probabilities, mirrored, ds.y_train[held])
    result = Familiarity(layer, means, inverse, float(np.percentile(distances, FAMILIAR_QUANTILE)), cost)
    model_digest = digest(model_file)
    save(result, _stats_path(model_digest), model_digest)
    return result


def known(model_file: Path, model=None) -> Familiarity | None:
    """The model file's statistics if they were made already: beside it (``FAMILIARITY_FILE``) or in the
    cache; None otherwise. Only statistics made for this exact file by this ``RECIPE`` count, and with
    ``model`` given only ones whose layer it has, of the width they say."""
    model_digest = digest(model_file)
    for path in (model_file.parent / FAMILIARITY_FILE, _stats_path(model_digest)):
        kept = read(path, model_digest)
        if kept is not None and (model is None or _fits(kept, model)):
            return kept
    return None


def _fits(stats: Familiarity, model) -> bool:
    try:
        width = model.get_layer(stats.layer).output.shape[-1]
    except (ValueError, AttributeError, IndexError):
        return False
    return width == stats.means.shape[1]


def read(path: Path, model_digest: str) -> Familiarity | None:
    """The statistics kept in ``path`` if they were made for the model file of this digest by this
    ``RECIPE`` and make sense (finite, ten classes, a positive threshold); None when they do not, or the
    file is missing or damaged (they are made again)."""
    # Any failure to read a file of derived numbers means "make them again": missing, damaged, not a regular
    # file, a lone array, a pickle (files.read_arrays), an older kind, entries that make no sense
    with contextlib.suppress(Exception):
        kept = files.read_arrays(path, MAX_KEPT_BYTES)
        if _text(kept["recipe"]) != RECIPE or _text(kept["model_digest"]) != model_digest:
            return None
        means = np.asarray(kept["means"])
        if means.dtype != np.float64 or means.ndim != 2 or means.shape[0] != config.NUM_CLASSES:
            return None
        if not 0 < means.shape[1] <= MAX_FEATURES:
            return None
        stats = Familiarity(
            _text(kept["layer"]),
            means,
            _unpacked(kept["inverse"], means.shape[1]),
            _number(kept["threshold"]),
            _number(kept["mirror_cost"]),
        )
        sensible = (
            np.isfinite(stats.means).all()
            and np.isfinite(stats.inverse).all()
            and np.isfinite(stats.threshold)
            and stats.threshold > 0
            and (stats.mirror_cost == float("inf") or -1.0 <= stats.mirror_cost <= 1.0)  # accuracy lost
        )
        return stats if sensible else None
    return None


def _text(value: np.ndarray) -> str:
    if value.shape != () or value.dtype.kind != "U":
        raise ValueError("not a text entry")
    return str(value)


def _number(value: np.ndarray) -> float:
    if value.shape != () or value.dtype.kind != "f":
        raise ValueError("not a number entry")
    return float(value)


def save(stats: Familiarity, path: Path, model_digest: str) -> None:
    """Keep the statistics of the model file of this digest in ``path``: the symmetric inverse covariance
    by its upper triangle, compressed (a feature that never varies leaves a row of zeros; 1.1 MB for the
    shipped MobileNetV2's 1,280 features against 13 MB in full)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic(path, suffix=".npz") as tmp:
        np.savez_compressed(
            tmp,
            recipe=RECIPE,
            model_digest=model_digest,
            layer=stats.layer,
            means=np.asarray(stats.means, np.float64),
            inverse=np.asarray(stats.inverse, np.float64)[np.triu_indices(len(stats.inverse))],
            threshold=float(stats.threshold),
            mirror_cost=float(stats.mirror_cost),
        )


def _unpacked(upper: np.ndarray, size: int) -> np.ndarray:
    if upper.dtype != np.float64 or upper.shape != (size * (size + 1) // 2,):
        raise ValueError(f"the kept inverse covariance does not fit {size} features")
    rows, cols = np.triu_indices(size)
    inverse = np.empty((size, size), np.float64)
    inverse[rows, cols] = upper
    inverse[cols, rows] = upper
    return inverse


def decide(
    probabilities: np.ndarray,
    conversion: photos.Conversion | None = None,
    distance: float | None = None,
    stats: Familiarity | None = None,
) -> Verdict:
    """The verdict for one image: its calibrated class probabilities, for a photo its conversion, and its
    feature distance with the model's familiarity statistics (when known)."""
    top = int(np.argmax(probabilities))
    confidence = float(probabilities[top])
    reasons = conversion_problems(conversion)
    if distance is not None and stats is not None and not np.isnan(distance) and distance > stats.threshold:
        reasons.append(
            "it looks unlike the images the model learnt from (further from all ten classes than "
            f"{FAMILIAR_QUANTILE:g} % of the images it was checked on)"
        )
    if confidence < MIN_CONFIDENCE:
        reasons.append(
            f"the model is only {wording.confidence(confidence)} sure of its best guess, "
            f"{config.CLASS_NAMES[top]} — it may be none of the ten classes"
        )
    return Verdict(None if reasons else config.CLASS_NAMES[top], confidence, tuple(reasons))
