"""Find, verify, load and download Fashion-MNIST; stratified subsets and train/validation splits.

``load()`` looks in this order and uses the first folder that holds all four files:
``FASHION_MNIST_DIR`` → ``<checkout>/data/fashion-mnist`` → Debian's ``/usr/share/datasets/fashion-mnist``
→ the Keras cache (``$KERAS_HOME/datasets/fashion-mnist``) → a download into the Keras cache.

Every file is verified: the MD5 of the bytes tells whether they are Zalando's originals (Debian recompressed
them, so its gzip bytes differ), and for any source the decoded content must have the IDX magic number,
the expected shape and the SHA-256 of the decoded pixels/labels recorded here from the verified originals.
"""

from __future__ import annotations

import gzip
import hashlib
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fashion_lib import config


class FashionDataError(Exception):
    """Base class of the data layer's errors; the message says what is wrong and what to do."""


class DataNotFoundError(FashionDataError):
    """No local copy of the dataset, and downloading was impossible or disabled."""


class DataIntegrityError(FashionDataError):
    """A dataset file exists but is truncated, corrupted or not Fashion-MNIST."""


@dataclass(frozen=True)
class DataFile:
    """One of the four dataset files and what its content must be."""

    key: str
    stem: str  # file name without ".gz"
    gz_md5: str  # MD5 of Zalando's original .gz bytes
    magic: int  # IDX magic number: 2051 for images, 2049 for labels
    shape: tuple[int, ...]
    content_sha256: str  # SHA-256 of the decoded payload (the bytes after the IDX header)

    @property
    def header_size(self) -> int:
        return 4 + 4 * len(self.shape)


DATA_FILES: tuple[DataFile, ...] = (
    DataFile(
        "train_images",
        "train-images-idx3-ubyte",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        2051,
        (60000, 28, 28),
        "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
    ),
    DataFile(
        "train_labels",
        "train-labels-idx1-ubyte",
        "25c81989df183df01b3e8a0aad5dffbe",
        2049,
        (60000,),
        "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
    ),
    DataFile(
        "test_images",
        "t10k-images-idx3-ubyte",
        "bef4ecab320f06d8554ea6380940ec79",
        2051,
        (10000, 28, 28),
        "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
    ),
    DataFile(
        "test_labels",
        "t10k-labels-idx1-ubyte",
        "bb300cfdad3c16e7a12a480ee83cd310",
        2049,
        (10000,),
        "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    ),
)

# One fingerprint of the whole verified dataset, recorded in run summaries and model cards.
DATA_FINGERPRINT = hashlib.sha256("".join(f.content_sha256 for f in DATA_FILES).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FileCheck:
    """What verifying one file found."""

    name: str
    path: Path
    original_bytes: bool  # byte-identical to Zalando's .gz
    content_ok: bool  # magic, shape and decoded checksum all match


@dataclass(frozen=True)
class DataSource:
    """Where the data came from and what the checks said."""

    kind: str  # "FASHION_MNIST_DIR", "checkout", "debian", "keras-cache" or "download"
    description: str
    folder: Path
    files: tuple[FileCheck, ...]
    load_seconds: float = 0.0

    @property
    def verified(self) -> bool:
        return all(f.content_ok for f in self.files)

    @property
    def byte_identical(self) -> bool:
        return all(f.original_bytes for f in self.files)

    @property
    def fingerprint(self) -> str:
        return DATA_FINGERPRINT


@dataclass(frozen=True)
class FashionMNIST:
    """The full dataset as read-only uint8 arrays: images (N, 28, 28), labels (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: DataSource = field(repr=False)

    def class_counts(self, split: str = "train") -> np.ndarray:
        labels = self.y_train if split == "train" else self.y_test
        return np.bincount(labels, minlength=config.NUM_CLASSES)


# --------------------------------------------------------------------------------------------- finding

_SOURCE_DESCRIPTIONS = {
    "FASHION_MNIST_DIR": "the folder named by FASHION_MNIST_DIR",
    "checkout": "data/fashion-mnist/ in the checkout",
    "debian": "Debian's package dataset-fashion-mnist",
    "keras-cache": "the Keras dataset cache",
    "download": "downloaded into the Keras dataset cache",
}


def _file_in(folder: Path, spec: DataFile) -> Path | None:
    for name in (spec.stem + ".gz", spec.stem):
        path = folder / name
        if path.is_file():
            return path
    return None


def find_files(folder: Path) -> dict[str, Path] | None:
    """The four files in ``folder`` (gzipped or raw), or None unless all four are there."""
    found = {spec.key: _file_in(folder, spec) for spec in DATA_FILES}
    if any(path is None for path in found.values()):
        return None
    return found  # type: ignore[return-value]


def candidate_folders() -> list[tuple[str, Path]]:
    """The local folders searched, in order, as (kind, folder)."""
    candidates = []
    explicit = config.data_dir_setting()
    if explicit is not None:
        candidates.append(("FASHION_MNIST_DIR", explicit))
    candidates += [
        ("checkout", config.checkout_data_dir()),
        ("debian", config.DEBIAN_DATA_DIR),
        ("keras-cache", config.keras_cache_data_dir()),
    ]
    return candidates


# ------------------------------------------------------------------------------------------- verifying


def _integrity_error(path: Path, problem: str) -> DataIntegrityError:
    return DataIntegrityError(
        f"{path}: {problem}. The file is damaged or is not Fashion-MNIST. Fix: replace it with a good copy "
        f"(delete it and run `python -m fashion_lib data` to download it again, or point FASHION_MNIST_DIR "
        f"at a folder with the original files)."
    )


def read_idx(path: Path, spec: DataFile) -> tuple[np.ndarray, FileCheck]:
    """Decode and verify one IDX file (gzipped or raw); raise DataIntegrityError naming it when bad."""
    raw = path.read_bytes()
    original = hashlib.md5(raw).hexdigest() == spec.gz_md5
    if raw[:2] == b"\x1f\x8b":
        try:
            payload = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise _integrity_error(path, f"cannot be decompressed ({exc})") from exc
    else:
        payload = raw
    if len(payload) < spec.header_size:
        raise _integrity_error(path, f"is only {len(payload)} bytes long, shorter than an IDX header")
    header = np.frombuffer(payload[: spec.header_size], dtype=">u4")
    magic, dims = int(header[0]), tuple(int(d) for d in header[1:])
    if magic != spec.magic:
        raise _integrity_error(path, f"has IDX magic number {magic}, expected {spec.magic}")
    if dims != spec.shape:
        raise _integrity_error(path, f"holds an array of shape {dims}, expected {spec.shape}")
    expected_len = spec.header_size + int(np.prod(spec.shape))
    if len(payload) != expected_len:
        raise _integrity_error(path, f"is {len(payload)} bytes decoded, expected {expected_len} (truncated?)")
    body = memoryview(payload)[spec.header_size :]
    if hashlib.sha256(body).hexdigest() != spec.content_sha256:
        raise _integrity_error(
            path, "decodes to different pixels or labels than Fashion-MNIST (checksum mismatch)"
        )
    array = np.frombuffer(body, dtype=np.uint8).reshape(spec.shape)
    array.setflags(write=False)
    return array, FileCheck(path.name, path, original, True)


# ----------------------------------------------------------------------------------------- downloading


def download(dest: Path, mirrors: tuple[str, ...] | None = None, timeout: float = 20.0) -> Path:
    """Download the four original files into ``dest`` (MD5-checked, written atomically).

    Tries each mirror in turn; raises DataNotFoundError with every mirror's failure when none works.
    """
    mirrors = config.mirrors() if mirrors is None else mirrors
    if not mirrors:
        raise DataNotFoundError("downloading is disabled (FASHION_MNIST_MIRRORS=none)")
    dest.mkdir(parents=True, exist_ok=True)
    failures = []
    for base in mirrors:
        try:
            for spec in DATA_FILES:
                target = dest / (spec.stem + ".gz")
                if target.is_file() and hashlib.md5(target.read_bytes()).hexdigest() == spec.gz_md5:
                    continue
                with urllib.request.urlopen(base + spec.stem + ".gz", timeout=timeout) as response:
                    body = response.read()
                if hashlib.md5(body).hexdigest() != spec.gz_md5:
                    raise ValueError(f"{spec.stem}.gz from {base} has the wrong MD5")
                part = target.with_suffix(".gz.part")
                part.write_bytes(body)
                part.replace(target)
            return dest
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"{base}: {getattr(exc, 'reason', exc)}")
    raise DataNotFoundError("download failed — " + "; ".join(failures))


def not_found_message(reason: str) -> str:
    """The one message that says where we looked and the three ways to provide the data."""
    searched = "\n".join(
        f"  - {folder} ({_SOURCE_DESCRIPTIONS[kind]})" for kind, folder in candidate_folders()
    )
    names = ", ".join(spec.stem + ".gz" for spec in DATA_FILES)
    return (
        f"Fashion-MNIST was not found on this machine, and {reason}.\n"
        f"Searched:\n{searched}\n"
        "Provide the data in one of three ways:\n"
        f"  1. Put the four files ({names}) in a folder and set FASHION_MNIST_DIR to it "
        f"(or copy them into {config.checkout_data_dir()}).\n"
        "  2. Install Debian's package: sudo apt-get install dataset-fashion-mnist\n"
        "  3. On a machine with internet access, run `python -m fashion_lib data` once: it downloads "
        f"the files into {config.keras_cache_data_dir()}."
    )


# --------------------------------------------------------------------------------------------- loading


def _load_folder(kind: str, folder: Path, files: dict[str, Path], started: float) -> FashionMNIST:
    arrays, checks = {}, []
    for spec in DATA_FILES:
        arrays[spec.key], check = read_idx(files[spec.key], spec)
        checks.append(check)
    description = _SOURCE_DESCRIPTIONS[kind]
    source = DataSource(kind, description, folder, tuple(checks), time.perf_counter() - started)
    return FashionMNIST(
        arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"], source
    )


def load(allow_download: bool = True) -> FashionMNIST:
    """Load and verify the 60,000 training and 10,000 test images with their labels.

    Returns read-only uint8 arrays and a ``DataSource`` that says where they came from. Raises
    ``DataIntegrityError`` for a damaged file and ``DataNotFoundError`` when there is no copy to be had.
    """
    started = time.perf_counter()
    for kind, folder in candidate_folders():
        files = find_files(folder)
        if files is not None:
            return _load_folder(kind, folder, files, started)
        if kind == "FASHION_MNIST_DIR":
            missing = [s.stem + ".gz" for s in DATA_FILES if _file_in(folder, s) is None]
            raise DataNotFoundError(
                f"FASHION_MNIST_DIR is set to {folder}, but it lacks {', '.join(missing)}. "
                "Put the four Fashion-MNIST files there, or unset FASHION_MNIST_DIR to use the other sources."
            )
    if not allow_download:
        raise DataNotFoundError(not_found_message("downloading was not allowed"))
    dest = config.keras_cache_data_dir()
    try:
        download(dest)
    except DataNotFoundError as exc:
        raise DataNotFoundError(not_found_message(str(exc))) from exc
    return _load_folder("download", dest, find_files(dest) or {}, started)


# ------------------------------------------------------------------------------ subsets and splits


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` samples, balanced across classes, chosen by ``seed``; sorted ascending.

    Each class gets ``n // 10`` samples; when ``n`` is not a multiple of 10 the remainder goes, one each,
    to classes picked by the seed, so class counts never differ by more than one.
    """
    labels = np.asarray(labels)
    classes = np.arange(config.NUM_CLASSES)
    counts = np.bincount(labels, minlength=config.NUM_CLASSES)
    if not 1 <= n <= len(labels):
        raise ValueError(f"subset size must be between 1 and {len(labels)}, got {n}")
    rng = np.random.default_rng(seed)
    per_class = np.full(config.NUM_CLASSES, n // config.NUM_CLASSES)
    per_class[rng.choice(classes, size=n % config.NUM_CLASSES, replace=False)] += 1
    if np.any(per_class > counts):
        worst = int(np.argmax(per_class - counts))
        raise ValueError(
            f"a balanced subset of {n} needs {per_class[worst]} images of class "
            f"'{config.CLASS_NAMES[worst]}', but only {counts[worst]} exist"
        )
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
        for c, k in zip(classes, per_class, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sample positions into (train, validation) index arrays, class by class, chosen by ``seed``.

    Each class contributes ``round(val_fraction * its count)`` samples to validation, at least one and at
    most all but one when it has two or more (a tiny subset never leaves validation empty); both arrays
    are sorted.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"validation fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in range(config.NUM_CLASSES):
        positions = rng.permutation(np.flatnonzero(labels == c))
        k = round(val_fraction * len(positions))
        if len(positions) >= 2:
            k = min(max(k, 1), len(positions) - 1)
        val.append(positions[:k])
        train.append(positions[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
