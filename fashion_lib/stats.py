"""EDA statistics over uint8 image arrays (pure numpy / pandas / scikit-learn; no Streamlit).

Heavy results (per-class pixel statistics, PCA, t-SNE) are computed once: the app caches them per process,
and the embeddings are also kept on disk under ``$FASHION_HOME/cache`` so they are computed once per machine.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fashion_lib import config, data, files, wording

# --------------------------------------------------------------------------------- class distribution


@dataclass(frozen=True)
class BalanceVerdict:
    max_min_ratio: float
    chi_square: float
    p_value: float

    @property
    def balanced(self) -> bool:
        return self.max_min_ratio < 1.5 and self.p_value > 0.05

    def sentence(self, split: str) -> str:
        state = "balanced" if self.balanced else "imbalanced"
        return (
            f"{split}: {state} — largest/smallest class ratio {self.max_min_ratio:.2f}, "
            f"chi-square against equal shares {self.chi_square:.2f} (p = {self.p_value:.3g})."
        )


def class_distribution(labels_by_split: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long table: split, class, count, share (of that split)."""
    rows = []
    for split, labels in labels_by_split.items():
        counts = np.bincount(labels, minlength=config.NUM_CLASSES)
        for c, n in enumerate(counts):
            rows.append(
                {"split": split, "class": config.CLASS_NAMES[c], "count": int(n), "share": n / counts.sum()}
            )
    return pd.DataFrame(rows)


def balance_verdict(labels: np.ndarray) -> BalanceVerdict:
    """Max/min class-count ratio and a chi-square goodness-of-fit test against equal class shares."""
    from scipy.stats import chisquare

    counts = np.bincount(labels, minlength=config.NUM_CLASSES)
    result = chisquare(counts)
    ratio = float(counts.max() / counts.min()) if counts.min() > 0 else float("inf")
    return BalanceVerdict(ratio, float(result.statistic), float(result.pvalue))


# ---------------------------------------------------------------------------------------- sampling


def sample_indices(
    labels: np.ndarray, classes: list[int], per_class: int, seed: int
) -> dict[int, np.ndarray]:
    """``per_class`` random image indices of each class in ``classes`` (sorted), chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in classes:
        pool = np.flatnonzero(labels == c)
        out[c] = np.sort(rng.choice(pool, size=min(per_class, len(pool)), replace=False))
    return out


# ---------------------------------------------------------------------------------- pixel statistics


def parse_indices(text: str, limit: int) -> list[int]:
    """'12, 3045' → [12, 3045]; ValueError saying what is wrong for anything else (or out of 0…limit-1)."""
    try:
        indices = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError("indices must be whole numbers separated by commas, e.g. 12, 3045") from None
    if any(not 0 <= i < limit for i in indices):
        raise ValueError(f"indices must be between 0 and {limit - 1}")
    return indices


def preview_sample(labels: np.ndarray, class_index: int | None, n: int, seed: int) -> list[int]:
    """``n`` random image indices (of one class, or of any), sorted, chosen by ``seed``."""
    pool = np.arange(len(labels)) if class_index is None else np.flatnonzero(labels == class_index)
    return sorted(np.random.default_rng(seed).choice(pool, size=min(n, len(pool)), replace=False).tolist())


def selection_sample(
    selected: np.ndarray, labels: np.ndarray, n: int, classes=None, seed: int = 0
) -> np.ndarray:
    """Up to ``n`` of ``selected`` image indices for a gallery, spread over the classes present (round
    robin, in index order within a class), optionally only ``classes``: a lasso over 52 bags among 1,000
    shirts still shows bags."""
    selected = np.asarray(selected, dtype=int)
    if classes is not None:
        selected = selected[np.isin(labels[selected], list(classes))]
    groups = [np.sort(selected[labels[selected] == c]) for c in np.unique(labels[selected])]
    picked = []
    for k in range(max((len(g) for g in groups), default=0)):
        picked.extend(int(g[k]) for g in groups if k < len(g))
        if len(picked) >= n:
            break
    return np.array(picked[:n], dtype=int)


def pixel_histograms(images: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Counts of each intensity 0–255, overall and per class. Columns: intensity, class, count, share."""
    frames = []
    flat = images.reshape(len(images), -1)
    groups = [("all classes", flat)] + [
        (config.CLASS_NAMES[c], flat[labels == c]) for c in range(config.NUM_CLASSES)
    ]
    for name, pixels in groups:
        counts = np.bincount(pixels.ravel(), minlength=256)
        frames.append(
            pd.DataFrame(
                {"intensity": np.arange(256), "class": name, "count": counts, "share": counts / counts.sum()}
            )
        )
    return pd.concat(frames, ignore_index=True)


def per_class_pixel_table(images: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Per class: mean and standard deviation of pixel intensity, fraction of zero pixels, image count."""
    rows = []
    flat = images.reshape(len(images), -1)
    for c in range(config.NUM_CLASSES):
        pixels = flat[labels == c]
        rows.append(
            {
                "class": config.CLASS_NAMES[c],
                "images": len(pixels),
                "mean": float(pixels.mean()),
                "std": float(pixels.std()),
                "zero fraction": float((pixels == 0).mean()),
            }
        )
    return pd.DataFrame(rows)


def class_mean_images(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(10, 28, 28) float64: the mean image of each class."""
    return np.stack([images[labels == c].mean(axis=0, dtype=np.float64) for c in range(config.NUM_CLASSES)])


def class_std_images(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(10, 28, 28) float64: the pixel-wise standard deviation of each class."""
    return np.stack([images[labels == c].std(axis=0, dtype=np.float64) for c in range(config.NUM_CLASSES)])


def mean_image_correlation(means: np.ndarray) -> np.ndarray:
    """(10, 10) Pearson correlation between the classes' mean images (flattened)."""
    return np.corrcoef(means.reshape(len(means), -1))


def most_correlated_pairs(corr: np.ndarray, top: int = 5) -> pd.DataFrame:
    """The ``top`` class pairs with the highest correlation, highest first."""
    i, j = np.triu_indices(len(corr), k=1)
    order = np.argsort(-corr[i, j])[:top]
    return pd.DataFrame(
        {
            "class A": [config.CLASS_NAMES[a] for a in i[order]],
            "class B": [config.CLASS_NAMES[b] for b in j[order]],
            "correlation": corr[i, j][order],
        }
    )


def pair_correlation(corr: np.ndarray, a: str, b: str) -> float:
    return float(corr[config.CLASS_NAMES.index(a), config.CLASS_NAMES.index(b)])


def correlation_rank(corr: np.ndarray, a: str, b: str) -> str:
    """Where the pair a/b stands among all class pairs by correlation: 'number 3 of the 45 class pairs
    (more alike: Coat/Shirt 0.967, Pullover/Coat 0.958)'."""
    if a == b or {a, b} - set(config.CLASS_NAMES):
        raise ValueError(f"'{a}' and '{b}' are not a pair of classes")
    pairs = most_correlated_pairs(corr, top=len(corr) * (len(corr) - 1) // 2)
    higher = []
    for x, y, value in pairs.itertuples(index=False):
        if {x, y} == {a, b}:
            break
        higher.append(f"{x} ↔ {y} {value:.3f}")
    if not higher:
        return f"the most alike of the {len(pairs)} class pairs"
    return f"number {len(higher) + 1} of the {len(pairs)} class pairs (more alike: {', '.join(higher)})"


# ---------------------------------------------------------------------------------------- embeddings


@dataclass(frozen=True)
class Embedding:
    """2-D coordinates of some training images: ``index`` are their positions in the training set."""

    method: str
    coords: np.ndarray  # (n, 2)
    index: np.ndarray  # (n,)
    labels: np.ndarray  # (n,)
    explained_variance: tuple[float, float] | None = None

    @property
    def axis_titles(self) -> tuple[str, str]:
        """What each axis is: a principal component and its share of the pixel variance; t-SNE's axes
        have no meaning of their own (only who is near whom does)."""
        if self.explained_variance is not None:
            return tuple(  # type: ignore[return-value]
                f"principal component {i} ({wording.percent(share, 1)} of the pixel variance)"
                for i, share in enumerate(self.explained_variance, start=1)
            )
        return (f"{self.method} 1 (no unit: only neighbours matter)", f"{self.method} 2")


def _cache_path(name: str, **params) -> Path:
    key = hashlib.sha256(repr(sorted(params.items())).encode() + data.DATA_FINGERPRINT.encode()).hexdigest()[
        :16
    ]
    return config.cache_dir() / "embeddings" / f"{name}-{key}.npz"


def _load_valid(path: Path, valid) -> dict[str, np.ndarray] | None:
    """The cache file's arrays when they hold what ``valid`` asks for; a damaged or foreign file (not an
    archive, or one that loads with the wrong keys or shapes) is removed, never trusted."""
    if not path.is_file():
        return None
    try:
        stored = files.read_arrays(path)
        if valid(stored):
            return stored
    except (ValueError, KeyError, TypeError, IndexError):
        pass
    path.unlink(missing_ok=True)
    return None


def _load_or_compute(path: Path, compute, valid) -> dict[str, np.ndarray]:
    stored = _load_valid(path, valid)
    if stored is not None:
        return stored
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **result)
    tmp.replace(path)
    return result


def pca_embedding(images: np.ndarray, labels: np.ndarray, seed: int = 0) -> Embedding:
    """PCA of all given images (pixels scaled to [0, 1]) to two components; cached on disk."""
    from sklearn.decomposition import PCA

    def compute():
        pca = PCA(n_components=2, svd_solver="randomized", random_state=seed)
        coords = pca.fit_transform(images.reshape(len(images), -1).astype(np.float32) / 255.0)
        return {"coords": coords.astype(np.float32), "ratio": pca.explained_variance_ratio_}

    def valid(stored) -> bool:
        coords, ratio = stored["coords"], stored["ratio"]
        return coords.shape == (len(images), 2) and ratio.shape == (2,) and bool(np.isfinite(ratio).all())

    stored = _load_or_compute(_cache_path("pca", n=len(images), seed=seed), compute, valid)
    ratio = tuple(float(r) for r in stored["ratio"])
    return Embedding("PCA", stored["coords"], np.arange(len(images)), np.asarray(labels), ratio)


def tsne_cache_path(n: int, seed: int) -> Path:
    return _cache_path("tsne", n=n, seed=seed)


def _tsne_valid(labels: np.ndarray, n: int, seed: int):
    index = data.stratified_subset(labels, n, seed)

    def valid(stored) -> bool:
        return np.array_equal(stored["index"], index) and stored["coords"].shape == (len(index), 2)

    return index, valid


_TSNE_CHECKED: dict[tuple[str, int, int], bool] = {}  # (file, mtime, size) → sound: checked once per version


def tsne_cached(labels: np.ndarray, n: int, seed: int = 0) -> bool:
    """Whether this machine has the t-SNE of ``n`` images on disk, sound (a damaged one is removed: the page
    then offers to compute it again, in the background). The page asks on every rerun of its tab: a file is
    read and checked once per version, not each time."""
    path = tsne_cache_path(n, seed)
    try:
        info = path.stat()
    except OSError:
        return False
    key = (str(path), info.st_mtime_ns, info.st_size)
    if key not in _TSNE_CHECKED:
        _TSNE_CHECKED[key] = _load_valid(path, _tsne_valid(labels, n, seed)[1]) is not None
    return _TSNE_CHECKED[key] and path.exists()


def tsne_embedding(images: np.ndarray, labels: np.ndarray, n: int = 5000, seed: int = 0) -> Embedding:
    """t-SNE of a stratified subset of ``n`` images (PCA to 50 dimensions first); cached on disk."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    index, valid = _tsne_valid(labels, n, seed)

    def compute():
        x = images[index].reshape(len(index), -1).astype(np.float32) / 255.0
        reduced = PCA(n_components=50, random_state=seed).fit_transform(x)
        coords = TSNE(n_components=2, init="pca", perplexity=30, random_state=seed).fit_transform(reduced)
        return {"coords": coords.astype(np.float32), "index": index}

    def timed():
        started = time.perf_counter()
        result = compute()
        result["seconds"] = np.array(time.perf_counter() - started)
        return result

    stored = _load_or_compute(tsne_cache_path(n, seed), timed, valid)
    return Embedding("t-SNE", stored["coords"], stored["index"], np.asarray(labels)[stored["index"]])


TSNE_SECONDS_PER_IMAGE = 0.012  # until this machine has computed one: about 1 min for 5,000 images


def tsne_expected_seconds(n: int) -> tuple[float, str]:
    """How long a t-SNE of ``n`` images should take here, and what that stands on: the last one this
    machine computed (scaled), else about a minute per 5,000 images."""
    folder = config.cache_dir() / "embeddings"
    done = sorted(folder.glob("tsne-*.npz"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    for path in reversed(done):
        try:
            stored = files.read_arrays(path)
            took, size = float(stored["seconds"]), len(stored["index"])
        except (ValueError, KeyError, TypeError):
            continue
        if np.isfinite(took) and took > 0 and size > 0:
            return took * n / size, f"the last t-SNE here took {took:.0f} s for {size:,} images"
    return TSNE_SECONDS_PER_IMAGE * n, "about a minute per 5,000 images on a 2-core machine"


def class_mix(labels: np.ndarray) -> pd.DataFrame:
    """How many of each class a selection holds (classes with none are left out), most first."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=config.NUM_CLASSES)
    table = pd.DataFrame({"class": config.CLASS_NAMES, "count": counts})
    table = table[table["count"] > 0].sort_values("count", ascending=False, kind="stable")
    table["share"] = table["count"] / max(1, counts.sum())
    return table.reset_index(drop=True)


# ---------------------------------------------------------------------------------- normalization


NORMALIZATION = {
    "baseline": "÷ 255 inside the model (Rescaling 1/255) → [0, 1]",
    "efficientnet_b0": "unchanged 0–255: EfficientNet rescales inside its own graph",
    "mobilenet_v2": "÷ 127.5 − 1 inside the model (MobileNetV2's preprocess_input) → [-1, 1]",
}


def normalized_pixels(images: np.ndarray, model: str, input_size: int = 32) -> np.ndarray:
    """What the model's own input pipeline (the layers inside the saved model) makes of raw pixels."""
    from fashion_lib import models

    pipeline = models.input_pipeline(model, input_size)
    x = images.reshape(-1, config.IMAGE_SIZE, config.IMAGE_SIZE, 1).astype(np.float32)
    return np.asarray(pipeline(x, training=False))
