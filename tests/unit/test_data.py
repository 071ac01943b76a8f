"""Data layer: loading, lookup order, verification, download, stratified subsets and splits."""

from __future__ import annotations

import gzip
import http.server
import re
import shutil
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from fashion_lib import config, data

SPECS = {spec.key: spec for spec in data.DATA_FILES}


# ------------------------------------------------------------------------------------------ helpers


@pytest.fixture
def isolated_sources(tmp_path, monkeypatch):
    """No data anywhere: every lookup folder points into an empty temp folder, downloading goes nowhere."""
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(config, "checkout_data_dir", lambda: tmp_path / "checkout" / "data" / "fashion-mnist")
    monkeypatch.setattr(config, "DEBIAN_DATA_DIR", tmp_path / "debian" / "fashion-mnist")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("FASHION_MNIST_MIRRORS", "http://127.0.0.1:9/")  # nothing listens on port 9
    return tmp_path


def link_dataset(src: Path, dest: Path) -> Path:
    """Make ``dest`` hold the four real files (as symlinks, no copying)."""
    dest.mkdir(parents=True, exist_ok=True)
    for spec in data.DATA_FILES:
        path = data._file_in(src, spec)
        (dest / path.name).symlink_to(path)
    return dest


def decoded_bytes(src: Path, spec: data.DataFile) -> bytes:
    raw = data._file_in(src, spec).read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def copy_with(src: Path, dest: Path, key: str, content: bytes, name: str | None = None) -> Path:
    """``dest`` holds the real files except ``key``, whose file gets ``content``."""
    dest.mkdir(parents=True, exist_ok=True)
    for spec in data.DATA_FILES:
        if spec.key != key:
            (dest / data._file_in(src, spec).name).symlink_to(data._file_in(src, spec))
    target = dest / (name or SPECS[key].stem + ".gz")
    target.write_bytes(content)
    return target


# ------------------------------------------------------------------------------------------ loading


def test_load_gives_60000_train_and_10000_test_uint8_images(dataset):
    assert dataset.x_train.shape == (60000, 28, 28) and dataset.x_train.dtype == np.uint8
    assert dataset.x_test.shape == (10000, 28, 28) and dataset.x_test.dtype == np.uint8
    assert dataset.y_train.shape == (60000,) and dataset.y_test.shape == (10000,)
    assert dataset.y_train.dtype == np.uint8
    assert np.array_equal(dataset.class_counts("train"), np.full(10, 6000))
    assert np.array_equal(dataset.class_counts("test"), np.full(10, 1000))
    assert dataset.x_train.max() == 255 and dataset.x_train.min() == 0


def test_loaded_arrays_are_read_only_so_a_shared_cache_cannot_be_corrupted(dataset):
    with pytest.raises(ValueError):
        dataset.x_train[0, 0, 0] = 1


def test_source_says_where_and_is_verified(dataset):
    src = dataset.source
    assert src.verified
    assert src.folder.is_dir()
    assert len(src.files) == 4 and all(check.content_ok for check in src.files)
    assert src.fingerprint == data.DATA_FINGERPRINT


def test_class_names_are_the_ten_fashion_mnist_classes():
    assert len(config.CLASS_NAMES) == 10 == config.NUM_CLASSES
    assert config.CLASS_NAMES[0] == "T-shirt/top" and config.CLASS_NAMES[6] == "Shirt"
    assert config.CLASS_NAMES[2] == "Pullover" and config.CLASS_NAMES[9] == "Ankle boot"


# ------------------------------------------------------------------------------------- lookup order


def test_explicit_folder_wins_over_every_other_source(isolated_sources, data_folder, monkeypatch):
    link_dataset(data_folder, config.checkout_data_dir())
    explicit = link_dataset(data_folder, isolated_sources / "mine")
    monkeypatch.setenv("FASHION_MNIST_DIR", str(explicit))
    assert data.load().source.kind == "FASHION_MNIST_DIR"
    assert data.load().source.folder == explicit


@pytest.mark.parametrize(
    ("kind", "folder"),
    [
        ("checkout", lambda tmp: config.checkout_data_dir()),
        ("debian", lambda tmp: config.DEBIAN_DATA_DIR),
        ("keras-cache", lambda tmp: config.keras_cache_data_dir()),
    ],
)
def test_each_local_source_is_found_when_it_is_the_only_one(isolated_sources, data_folder, kind, folder):
    link_dataset(data_folder, folder(isolated_sources))
    assert data.load(allow_download=False).source.kind == kind


def test_checkout_folder_comes_before_debian_and_keras_cache(isolated_sources, data_folder):
    for folder in (config.checkout_data_dir(), config.DEBIAN_DATA_DIR, config.keras_cache_data_dir()):
        link_dataset(data_folder, folder)
    assert data.load().source.kind == "checkout"
    shutil.rmtree(config.checkout_data_dir())
    assert data.load().source.kind == "debian"


def test_repacked_files_like_debians_are_accepted_by_content(isolated_sources, data_folder, dataset):
    # Debian recompressed the originals: other gzip bytes, same decoded content. Raw IDX files work too.
    folder = isolated_sources / "repacked"
    folder.mkdir()
    for spec in data.DATA_FILES:
        content = decoded_bytes(data_folder, spec)
        if spec.key.endswith("labels"):
            (folder / (spec.stem + ".gz")).write_bytes(gzip.compress(content, compresslevel=1, mtime=1))
        else:
            (folder / spec.stem).write_bytes(content)
    link = config.DEBIAN_DATA_DIR
    link.parent.mkdir(parents=True)
    link.symlink_to(folder)
    ds = data.load()
    assert ds.source.kind == "debian" and ds.source.verified and not ds.source.byte_identical
    assert np.array_equal(ds.x_train, dataset.x_train) and np.array_equal(ds.y_test, dataset.y_test)


# ------------------------------------------------------------------------------- damaged files


def test_truncated_file_is_rejected_naming_the_file_and_the_fix(isolated_sources, data_folder, monkeypatch):
    raw = data._file_in(data_folder, SPECS["test_images"]).read_bytes()
    bad = copy_with(data_folder, isolated_sources / "bad", "test_images", raw[: len(raw) // 2])
    monkeypatch.setenv("FASHION_MNIST_DIR", str(bad.parent))
    with pytest.raises(data.DataIntegrityError) as err:
        data.load()
    message = str(err.value)
    assert bad.name in message and "Fix:" in message


def test_flipped_pixel_fails_the_decoded_checksum(isolated_sources, data_folder, monkeypatch):
    content = bytearray(decoded_bytes(data_folder, SPECS["train_labels"]))
    content[100] = (content[100] + 1) % 10  # still a valid label, but not Fashion-MNIST's
    bad = copy_with(
        data_folder, isolated_sources / "bad", "train_labels", bytes(content), name="train-labels-idx1-ubyte"
    )
    monkeypatch.setenv("FASHION_MNIST_DIR", str(bad.parent))
    with pytest.raises(data.DataIntegrityError, match="checksum mismatch"):
        data.load()


def test_wrong_magic_number_is_rejected(isolated_sources, data_folder, monkeypatch):
    # The test labels where the test images should be: right size class, wrong kind of file.
    content = decoded_bytes(data_folder, SPECS["test_labels"])
    bad = copy_with(data_folder, isolated_sources / "bad", "test_images", gzip.compress(content))
    monkeypatch.setenv("FASHION_MNIST_DIR", str(bad.parent))
    with pytest.raises(data.DataIntegrityError, match="magic number 2049, expected 2051"):
        data.load()


def test_not_a_gzip_and_not_idx_is_rejected(isolated_sources, data_folder, monkeypatch):
    bad = copy_with(data_folder, isolated_sources / "bad", "train_images", b"<html>404</html>")
    monkeypatch.setenv("FASHION_MNIST_DIR", str(bad.parent))
    with pytest.raises(data.DataIntegrityError, match=re.escape("train-images-idx3-ubyte.gz")):
        data.load()


# ------------------------------------------------------------------------------- missing data


def test_no_data_and_no_network_gives_one_message_with_the_three_ways(isolated_sources):
    with pytest.raises(data.DataNotFoundError) as err:
        data.load()
    message = str(err.value)
    assert "FASHION_MNIST_DIR" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "python -m fashion_lib data" in message
    assert "127.0.0.1:9" in message  # says why the download failed


def test_explicit_folder_missing_files_names_them(isolated_sources, monkeypatch):
    (isolated_sources / "empty").mkdir()
    monkeypatch.setenv("FASHION_MNIST_DIR", str(isolated_sources / "empty"))
    with pytest.raises(data.DataNotFoundError, match=re.escape("lacks train-images-idx3-ubyte.gz")):
        data.load()


def test_downloading_can_be_disabled(isolated_sources, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_MIRRORS", "none")
    with pytest.raises(data.DataNotFoundError, match="disabled"):
        data.load()


@pytest.fixture
def mirror(dataset, data_folder, tmp_path):
    """A loopback HTTP server serving the original files, like the canonical mirror does."""
    if not dataset.source.byte_identical:
        pytest.skip("the local copy is repacked; a mirror must serve the original bytes")
    served = tmp_path / "served"
    served.mkdir()
    for spec in data.DATA_FILES:
        shutil.copy(data_folder / (spec.stem + ".gz"), served / (spec.stem + ".gz"))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_fills_the_keras_cache_and_then_loads_from_it(isolated_sources, mirror, monkeypatch):
    _, url = mirror
    monkeypatch.setenv("FASHION_MNIST_MIRRORS", f"http://127.0.0.1:9/,{url}")  # first mirror is down
    ds = data.load()
    assert ds.source.kind == "download" and ds.source.byte_identical
    assert ds.source.folder == config.keras_cache_data_dir()
    assert data.load(allow_download=False).source.kind == "keras-cache"


def test_download_refuses_a_mirror_serving_wrong_bytes(isolated_sources, mirror, monkeypatch):
    served, url = mirror
    (served / "train-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    monkeypatch.setenv("FASHION_MNIST_MIRRORS", url)
    with pytest.raises(data.DataNotFoundError, match="wrong MD5"):
        data.load()
    assert not (config.keras_cache_data_dir() / "train-labels-idx1-ubyte.gz").exists()


# ---------------------------------------------------------------------- subsets and splits (real labels)


def test_stratified_subset_of_20000_is_exactly_balanced_and_seeded(dataset):
    idx = data.stratified_subset(dataset.y_train, 20000, seed=42)
    assert len(idx) == 20000 and len(np.unique(idx)) == 20000
    assert np.array_equal(np.bincount(dataset.y_train[idx], minlength=10), np.full(10, 2000))
    assert np.array_equal(idx, data.stratified_subset(dataset.y_train, 20000, seed=42))
    assert not np.array_equal(idx, data.stratified_subset(dataset.y_train, 20000, seed=43))


def test_subset_not_divisible_by_ten_differs_by_at_most_one_per_class(dataset):
    idx = data.stratified_subset(dataset.y_train, 1003, seed=0)
    counts = np.bincount(dataset.y_train[idx], minlength=10)
    assert counts.sum() == 1003 and counts.max() - counts.min() == 1


def test_subset_larger_than_the_data_is_refused(dataset):
    with pytest.raises(ValueError, match="between 1 and 60000"):
        data.stratified_subset(dataset.y_train, 60001, seed=0)


def test_subset_needing_more_of_a_class_than_exists_names_it():
    labels = np.array([0] * 5 + [1] * 100 + list(range(2, 10)) * 100)
    with pytest.raises(ValueError, match="T-shirt/top"):
        data.stratified_subset(labels, 100, seed=0)


def test_stratified_split_keeps_class_shares_and_is_deterministic(dataset):
    train, val = data.stratified_split(dataset.y_train, 0.1, seed=7)
    assert len(np.intersect1d(train, val)) == 0
    assert len(train) + len(val) == 60000
    assert np.array_equal(np.bincount(dataset.y_train[val], minlength=10), np.full(10, 600))
    again = data.stratified_split(dataset.y_train, 0.1, seed=7)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, data.stratified_split(dataset.y_train, 0.1, seed=8)[1])


def test_split_of_a_subset_on_synthetic_labels():
    labels = np.repeat(np.arange(10), 10)  # 10 per class: 20 % → 2 per class in validation
    train, val = data.stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(np.bincount(labels[val], minlength=10), np.full(10, 2))
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(100))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(ValueError, match="between 0 and 1"):
        data.stratified_split(np.arange(10), fraction, seed=0)


def test_a_tiny_subset_keeps_one_validation_image_per_class():
    labels = np.repeat(np.arange(10), 5)  # a subset of 50: 10 % of 5 rounds to 0 per class
    train_pos, val_pos = data.stratified_split(labels, 0.1, seed=0)
    assert np.bincount(labels[val_pos], minlength=10).tolist() == [1] * 10
    assert np.bincount(labels[train_pos], minlength=10).tolist() == [4] * 10
    two = np.repeat(np.arange(10), 2)  # the smallest subset allowed (20): one of each side
    train_pos, val_pos = data.stratified_split(two, 0.9, seed=0)
    assert len(train_pos) == len(val_pos) == 10
