"""Settings, constants and paths: the one place every other module reads them from.

Settings are environment variables with defaults, read when asked for (not at import), so a test or a
caller can change them with ``os.environ`` and see the effect at once.
"""

from __future__ import annotations

import functools
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

# The repository root: fashion_lib/ lives directly below it.
REPO_ROOT = Path(__file__).resolve().parent.parent

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 28

# Shipped, read-only models trained by this project's own command line.
CACHED_MODELS_DIR = REPO_ROOT / "cached_models"


@dataclass(frozen=True)
class Setting:
    """One environment variable the project reads, with its default and what it is for."""

    name: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "FASHION_MNIST_DIR",
        "(unset)",
        "Folder holding the four Fashion-MNIST files (train/t10k images/labels, .gz or raw). "
        "Searched first; when unset the checkout's data/fashion-mnist/, Debian's "
        "/usr/share/datasets/fashion-mnist/ and the Keras cache are tried, then a download.",
    ),
    Setting(
        "FASHION_HOME",
        "<checkout>/fashion_home",
        "The one folder everything the app writes goes to: runs, tuning database, feature caches.",
    ),
    Setting(
        "FASHION_WEIGHTS_DIR",
        "$FASHION_HOME/weights",
        "Local ImageNet weights folder (Keras file names, e.g. efficientnetb0_notop.h5).",
    ),
    Setting(
        "FASHION_MNIST_MIRRORS",
        "Zalando's S3 mirror, then Keras's mirror",
        "Comma-separated base URLs to download the dataset from when no local copy exists; "
        "'none' disables downloading.",
    ),
    Setting(
        "FASHION_TUNING_DB",
        "sqlite:///$FASHION_HOME/tuning/studies.db",
        "Where tuning studies are stored: any SQLAlchemy URL. Point several machines at one PostgreSQL "
        "database (postgresql+psycopg2://user:password@host/db) to share a study.",
    ),
    Setting(
        "KERAS_HOME",
        "~/.keras",
        "Keras's own cache root; the dataset is looked for and downloaded under datasets/fashion-mnist/.",
    ),
    Setting(
        "FASHION_API_TOKEN",
        "(unset)",
        "Bearer token the inference service (python -m fashion_lib serve) requires on every request but "
        "/health and the docs; unset: no token needed (the service listens on loopback by default).",
    ),
)

DEFAULT_MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
)

DEBIAN_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def fashion_home() -> Path:
    """Root folder for everything the app writes (not created here)."""
    return _env_path("FASHION_HOME") or REPO_ROOT / "fashion_home"


def runs_dir() -> Path:
    return fashion_home() / "runs"


def cache_dir() -> Path:
    return fashion_home() / "cache"


def weights_dir() -> Path:
    return _env_path("FASHION_WEIGHTS_DIR") or fashion_home() / "weights"


def data_dir_setting() -> Path | None:
    """The user's explicit data folder, or None when FASHION_MNIST_DIR is unset."""
    return _env_path("FASHION_MNIST_DIR")


def checkout_data_dir() -> Path:
    return REPO_ROOT / "data" / "fashion-mnist"


def keras_home() -> Path:
    return _env_path("KERAS_HOME") or Path("~/.keras").expanduser()


def keras_cache_data_dir() -> Path:
    """Where ``keras.datasets.fashion_mnist`` keeps its download (KERAS_HOME or ~/.keras)."""
    return keras_home() / "datasets" / "fashion-mnist"


def keras_models_cache_dir() -> Path:
    """Where Keras keeps downloaded application weights."""
    return keras_home() / "models"


def mirrors() -> tuple[str, ...]:
    value = os.environ.get("FASHION_MNIST_MIRRORS", "").strip()
    if not value:
        return DEFAULT_MIRRORS
    if value.lower() == "none":
        return ()
    return tuple(
        u.strip() if u.strip().endswith("/") else u.strip() + "/" for u in value.split(",") if u.strip()
    )


def api_token() -> str | None:
    """The inference service's bearer token, or None when FASHION_API_TOKEN is unset or empty."""
    return os.environ.get("FASHION_API_TOKEN", "").strip() or None


def current_settings() -> dict[str, str]:
    """The value in effect for each setting, for display (Home page, CLI)."""
    data = data_dir_setting()
    return {
        "FASHION_MNIST_DIR": str(data) if data else "(unset)",
        "FASHION_HOME": str(fashion_home()),
        "FASHION_WEIGHTS_DIR": str(weights_dir()),
        "FASHION_TUNING_DB": redacted_url(tuning_db_url()),
        "FASHION_MNIST_MIRRORS": ", ".join(mirrors()) or "none (downloads disabled)",
        "KERAS_HOME": str(keras_cache_data_dir().parent.parent),
        "FASHION_API_TOKEN": "set (hidden)" if api_token() else "(unset)",
    }


def tuning_db_url() -> str:
    """``FASHION_TUNING_DB``, else the SQLite file under ``$FASHION_HOME/tuning``."""
    url = os.environ.get("FASHION_TUNING_DB", "").strip()
    return url or f"sqlite:///{fashion_home() / 'tuning' / 'studies.db'}"


def redacted_url(url: str) -> str:
    """A database URL without its password, for messages and display: everything between the user and
    the last '@' (an unencoded '@', '/' or '?' in the password stays hidden; hiding too much is the safe
    side), and a ``password=`` in the query. SQLite URLs hold a path, no password."""
    import re

    scheme, sep, rest = url.partition("://")
    if sep and not scheme.startswith("sqlite") and "@" in rest:
        userinfo, host = rest.rsplit("@", 1)
        if ":" in userinfo:
            rest = userinfo.split(":", 1)[0] + ":***@" + host
    rest = re.sub(r"(?i)([?&](?:password|passwd|pwd)=)[^&]*", r"\1***", rest)
    return scheme + sep + rest


def dataclass_from_dict(cls, values: dict, what: str):
    """Build a config dataclass from a dict, naming any unknown keys (a typo in a JSON file or flag)."""
    from dataclasses import fields

    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(sorted(unknown))}")
    return cls(**values)


_KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "text"}


def check_types(settings, what: str) -> None:
    """ValueError naming each field of the dataclass ``settings`` that is annotated as a number, a bool or
    text (or that or None) and holds something else: a hand-edited file's ``"epochs": "many"`` said so, not
    "'<' not supported between 'str' and 'int'" from deep inside, and ``"flip": "no"`` no truthy string."""
    wrong = [
        f"'{name}' must be {_KINDS[kind[0]]}, got {getattr(settings, name)!r:.40}"
        for name, kind in _simple_kinds(type(settings)).items()
        if not _is_kind(getattr(settings, name), kind)
    ]
    if wrong:
        raise ValueError(f"invalid {what}: " + "; ".join(wrong))


@functools.cache  # per class: every settings object built (many per tuning search) asks again
def _simple_kinds(cls) -> dict[str, tuple[str, bool]]:
    """Each field annotated as one of _KINDS (or it | None) → (that kind, whether None is allowed)."""
    from dataclasses import fields

    kinds = {}
    for field in fields(cls):
        parts = [part.strip() for part in str(field.type).split("|")]
        named = [part for part in parts if part != "None"]
        if len(named) == 1 and named[0] in _KINDS:
            kinds[field.name] = (named[0], "None" in parts)
    return kinds


def _is_kind(value, kind: tuple[str, bool]) -> bool:
    name, optional = kind
    if value is None:
        return optional
    is_bool = isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"  # or NumPy
    if name == "bool" or is_bool:  # True is an int to Python, not to a settings file
        return name == "bool" and is_bool
    return isinstance(value, {"int": numbers.Integral, "float": numbers.Real, "str": str}[name])
