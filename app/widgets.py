"""UI pieces shared by pages: the cached dataset and heavy statistics, data-source banner, image grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from fashion_lib import data, pictures, runs, stats, wording

GRID_SCALE = 3  # 28 px images are shown at 84 px, upscaled without smoothing


@st.cache_resource(show_spinner="Loading and verifying Fashion-MNIST…")
def _cached_dataset() -> data.FashionMNIST:
    # One copy per process: the arrays are read-only and shared by every session.
    return data.load()


def dataset_or_explain() -> data.FashionMNIST | None:
    """The verified dataset; when it cannot be had, show how to provide it and return None."""
    try:
        return _cached_dataset()
    except data.FashionDataError as exc:
        st.error("**The Fashion-MNIST data is not available.**")
        st.code(str(exc), language=None, wrap_lines=True)
        st.info("Fix it, then reload this page.")
        return None


def dataset_or_stop() -> data.FashionMNIST:
    """The verified dataset; when it cannot be had, show how to provide it and stop the page."""
    ds = dataset_or_explain()
    if ds is None:
        st.stop()
    return ds


@st.cache_resource(show_spinner="Computing pixel statistics…")
def pixel_statistics() -> dict:
    """Histograms, per-class table, mean/std images and their correlation, over the training set."""
    ds = _cached_dataset()
    means = stats.class_mean_images(ds.x_train, ds.y_train)
    return {
        "histograms": stats.pixel_histograms(ds.x_train, ds.y_train),
        "table": stats.per_class_pixel_table(ds.x_train, ds.y_train),
        "means": means,
        "stds": stats.class_std_images(ds.x_train, ds.y_train),
        "correlation": stats.mean_image_correlation(means),
    }


@st.cache_resource(show_spinner="Computing PCA of all training images…")
def pca_embedding() -> stats.Embedding:
    ds = _cached_dataset()
    return stats.pca_embedding(ds.x_train, ds.y_train)


@st.cache_resource(show_spinner="Computing t-SNE (once per machine; it is kept on disk)…")
def tsne_embedding(n: int) -> stats.Embedding:
    ds = _cached_dataset()
    return stats.tsne_embedding(ds.x_train, ds.y_train, n=n)


@st.cache_resource(show_spinner="Running each model's input pipeline…")
def normalized_sample(model: str) -> tuple[np.ndarray, np.ndarray]:
    """(raw pixels, model input values) of a fixed balanced sample of 500 training images."""
    ds = _cached_dataset()
    idx = data.stratified_subset(ds.y_train, 500, seed=0)
    raw = ds.x_train[idx]
    return raw, stats.normalized_pixels(raw, model)


@st.cache_data(show_spinner=False)
def value_histograms(model: str):
    """The normalization histograms of ``model``'s input pipeline (binned once per process)."""
    from fashion_lib import figures

    raw, after = normalized_sample(model)
    return figures.value_histograms(raw, after, "model input")


@dataclass
class Background:
    """Work started from a page that goes on while the page is used (one per key, shared by sessions)."""

    started: float
    done: bool = False
    error: str | None = None


@st.cache_resource
def _background_jobs() -> dict[str, Background]:
    return {}


def start_background(key: str, function, *args, **kwargs) -> Background:
    """Run ``function`` in a thread of the server process (once per key at a time)."""
    import threading
    import time

    jobs = _background_jobs()
    if key in jobs and not jobs[key].done:
        return jobs[key]
    job = jobs[key] = Background(time.time())

    def work() -> None:
        try:
            function(*args, **kwargs)
        except Exception as exc:  # shown on the page that started it
            job.error = str(exc)
        job.done = True

    threading.Thread(target=work, daemon=True, name=f"background-{key}").start()
    return job


def background(key: str) -> Background | None:
    return _background_jobs().get(key)


def data_source_banner(ds: data.FashionMNIST) -> None:
    """One line that says where the data came from and whether it was verified."""
    src = ds.source
    mark = ":material/verified:" if src.verified else ":material/error:"
    origin = "byte-identical to Zalando's originals" if src.byte_identical else "content verified"
    st.caption(
        f"{mark} Data: {len(ds.y_train):,} train + {len(ds.y_test):,} test images from {src.description} "
        f"(`{src.folder}`), {origin}."
    )


def upscale(image: np.ndarray, factor: int = GRID_SCALE) -> np.ndarray:
    return pictures.upscale(image, factor)


def image_grid(images: np.ndarray, captions: list[str], columns: int = 10, key: str | None = None) -> None:
    """Images in rows of ``columns``, each with its caption (e.g. its index) underneath."""
    with st.container(key=key):
        for start in range(0, len(images), columns):
            cols = st.columns(columns)
            for col, image, caption in zip(
                cols, images[start : start + columns], captions[start : start + columns], strict=False
            ):
                col.image(upscale(image), caption=caption, width=28 * GRID_SCALE)  # the same size everywhere


duration = wording.duration


def weights_status(model: str, weights: str) -> str:
    """One line on what 'imagenet' or 'none' will mean for this model on this machine."""
    from fashion_lib import models

    if weights == "none":
        return f"Random initialisation: results are labelled '{models.NO_WEIGHTS_LABEL}'."
    try:
        resolved = models.resolve_weights(model, "imagenet")
    except models.WeightsUnavailableError as exc:
        return f":material/error: {exc}"
    if resolved.path is not None:
        return f":material/check_circle: {resolved.label} weights found: `{resolved.path}`"
    return (
        ":material/cloud_download: No local ImageNet weights: Keras will try to download them (needs "
        f"internet). {models.weights_help(model)}"
    )


@st.cache_data(show_spinner=False, max_entries=16)
def run_predictions(folder: str, mtime: float):
    """A run's saved predictions, cached per file version (``mtime`` keys the cache)."""
    from fashion_lib import evaluate

    return evaluate.load_predictions(Path(folder))


@st.cache_data(show_spinner="Ranking possible label errors (confident learning)…", max_entries=16)
def run_label_issues(folder: str, mtime: float):
    from fashion_lib import evaluate

    return evaluate.label_issues(run_predictions(folder, mtime))


def predictions_of(folder: Path):
    """A run's saved predictions; raises ValueError (with what is wrong) for a damaged file."""
    return run_predictions(str(folder), (folder / "predictions.npz").stat().st_mtime)


def label_issues_of(folder: Path):
    return run_label_issues(str(folder), (folder / "predictions.npz").stat().st_mtime)


LAST_CHOICE = "chosen_model"  # the run id the user last picked on any page, in this browser tab


def _remember_choice(key: str) -> None:
    if st.session_state.get(key):
        st.session_state[LAST_CHOICE] = st.session_state[key]


def run_picker(label: str, key: str, exclude: str | None = None, need_model: bool = False, none: str = ""):
    """Choose a finished run or a shipped model by a readable name; None when there is none (or the user
    chose ``none``, when that option is offered).

    Opens on the user's last explicit choice in this tab (any page), else on the best completed model
    (``runs.default_choice``: shipped models included, never a collapsed or damaged one)."""
    candidates = [
        r for r in runs.comparable_runs() if r.run_id != exclude and (r.has_model or not need_model)
    ]
    if not candidates:
        return None
    by_id = {r.run_id: r for r in candidates}
    options = ([""] if none else []) + list(by_id)
    if st.session_state.get(key) not in options:
        st.session_state[key] = (
            "" if none else runs.default_choice(candidates, st.session_state.get(LAST_CHOICE)).run_id
        )
    chosen = st.selectbox(
        label,
        options,
        key=key,
        format_func=lambda rid: by_id[rid].label if rid else none,
        on_change=_remember_choice,
        args=(key,),
    )
    return by_id.get(chosen)


@st.cache_resource(show_spinner="Loading the model…", max_entries=6)
def _loaded_model(path: str, mtime: float):
    from fashion_lib import models

    return models.load_model(Path(path))


def loaded_model(folder: Path):
    """A run's model, loaded once per process (and again only when the file changes).

    Raises ValueError saying what is wrong when the file is missing or cannot be loaded."""
    path = folder / runs.MODEL_FILE
    try:
        return _loaded_model(str(path), path.stat().st_mtime)
    except Exception as exc:  # a damaged file can fail inside Keras, h5py or zipfile in many ways
        raise ValueError(f"the model of {folder.name} cannot be loaded ({exc})") from None


@st.cache_resource(
    show_spinner="Learning what this model's training images look like (once per model)…", max_entries=6
)
def _familiar(path: str, mtime: float):
    from fashion_lib import confidence

    model, ds = _loaded_model(path, mtime), _cached_dataset()
    stats = confidence.of_model(model, Path(path), ds)
    return stats, confidence.with_features(model, stats.layer)


def familiar(folder: Path):
    """(familiarity statistics, a [features, probabilities] model) of a run's model, once per file."""
    path = folder / runs.MODEL_FILE
    return _familiar(str(path), path.stat().st_mtime)


@st.cache_data(show_spinner="Converting the photo…", max_entries=32)
def converted(payload: bytes, segment: bool):
    """An upload's conversion, once per file and setting (changing the opacity does not redo it);
    raises photos.PhotoError for a bad file."""
    from fashion_lib import photos

    return photos.convert_upload(payload, segment=segment)[1]


thumbnail = pictures.thumbnail
