"""Augmentation settings (one dataclass, JSON round-trip) and the Keras preprocessing layers they make.

The same ``AugmentConfig`` drives the augmentation preview, the training pipeline and the command line, so
what a user previews is exactly what trains. Images stay in the 0–255 range throughout.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fashion_lib import config, files


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each random transform; all zero / False is the identity.

    ``rotation`` is a fraction of a full turn (Keras's RandomRotation factor: 0.05 = ±18°); ``zoom`` and
    ``translation`` are fractions of the image size; ``contrast`` is Keras's RandomContrast factor;
    ``erasing`` is the share of images in which one random rectangle (2–33 % of the image) is replaced by
    noise (random erasing, Zhong et al. 2017; Keras fills it with Gaussian noise clipped to 0–255, so about
    half of its pixels are black).
    """

    flip_horizontal: bool = False
    flip_vertical: bool = False
    rotation: float = 0.0
    zoom: float = 0.0
    translation: float = 0.0
    contrast: float = 0.0
    erasing: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        config.check_types(self, "augmentation settings")  # "no" or "false" would be truthy: flips on
        limits = (("rotation", 0.5), ("zoom", 0.9), ("translation", 0.5), ("contrast", 1.0), ("erasing", 1.0))
        for name, upper in limits:
            value = getattr(self, name)
            if not 0.0 <= value <= upper:
                raise ValueError(f"augmentation '{name}' must be between 0 and {upper}, got {value}")

    @property
    def is_identity(self) -> bool:
        return not (
            self.flip_horizontal
            or self.flip_vertical
            or self.rotation
            or self.zoom
            or self.translation
            or self.contrast
            or self.erasing
        )

    @property
    def rotation_degrees(self) -> float:
        return self.rotation * 360

    def describe(self) -> str:
        """The settings as a person reads them: 'horizontal flips, rotation ±10°, zoom ±10 %'."""
        parts = []
        flips = [
            n for n, on in (("horizontal", self.flip_horizontal), ("vertical", self.flip_vertical)) if on
        ]
        if flips:
            parts.append(" and ".join(flips) + " flips")
        if self.rotation:
            parts.append(f"rotation ±{self.rotation_degrees:.0f}°")
        for name, value in (("zoom", self.zoom), ("shift", self.translation)):
            if value:
                parts.append(f"{name} ±{100 * value:.0f} %")
        if self.contrast:
            parts.append(f"contrast ±{self.contrast:.1f}")
        if self.erasing:
            parts.append(f"random erasing in {100 * self.erasing:.3g} % of images")
        return ", ".join(parts) if parts else "no augmentation"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AugmentConfig:
        return config.dataclass_from_dict(cls, values, "augmentation settings")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AugmentConfig:
        return cls.from_dict(files.parse_json(text))


# At strength 1: ±14° rotation, 10 % zoom, 10 % shift; no flips, which cost accuracy here. The tuner searches
# 0–0.3 of this scale (tuning.space.AUGMENT_STRENGTH_MAX).
STRENGTH_AT_ONE = {"rotation": 0.04, "zoom": 0.1, "translation": 0.1}


def of_strength(strength: float, seed: int = 0) -> AugmentConfig:
    """One knob for the tuner: 0 is no augmentation, 1 is STRENGTH_AT_ONE, in between scaled."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"augmentation strength must be between 0 and 1, got {strength}")
    return AugmentConfig(**{k: round(v * strength, 4) for k, v in STRENGTH_AT_ONE.items()}, seed=seed)


ERASED_AREA = (0.02, 0.33)  # the share of the image one erased rectangle covers (Keras's RandomErasing scale)


def build_layers(cfg: AugmentConfig) -> list:
    """The Keras preprocessing layers for ``cfg`` (an empty list for the identity), seeded."""
    import keras

    layers = []
    seed = cfg.seed
    if cfg.flip_horizontal or cfg.flip_vertical:
        mode = (
            "horizontal_and_vertical"
            if cfg.flip_horizontal and cfg.flip_vertical
            else ("horizontal" if cfg.flip_horizontal else "vertical")
        )
        layers.append(keras.layers.RandomFlip(mode, seed=seed))
    if cfg.rotation:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="constant", seed=seed + 1))
    if cfg.zoom:
        layers.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="constant", seed=seed + 2))
    if cfg.translation:
        layers.append(
            keras.layers.RandomTranslation(
                cfg.translation, cfg.translation, fill_mode="constant", seed=seed + 3
            )
        )
    if cfg.contrast:
        layers.append(keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 4))
    if cfg.erasing:
        layers.append(
            keras.layers.RandomErasing(
                (cfg.erasing, cfg.erasing), scale=ERASED_AREA, value_range=(0, 255), seed=seed + 5
            )
        )
    return layers


def augment_batch(images: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    """Apply ``cfg`` to a batch of (N, 28, 28) or (N, 28, 28, 1) uint8 images; returns uint8 (N, 28, 28)."""
    x = np.asarray(images, dtype="float32").reshape(-1, config.IMAGE_SIZE, config.IMAGE_SIZE, 1)
    for layer in build_layers(cfg):
        x = np.asarray(layer(x, training=True))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, config.IMAGE_SIZE, config.IMAGE_SIZE)


# ------------------------------------------------------------------------------------ label-meaning risks

ROTATION_LIMIT = 30 / 360  # beyond ±30° a garment lies on its side, which no catalogue photo shows
ZOOM_LIMIT = 0.3  # zooming in further crops away sleeves and collars, the cues between Shirt and T-shirt
TRANSLATION_LIMIT = 0.2  # shifting further pushes part of the item out of the frame


@dataclass(frozen=True)
class LabelRisk:
    """A setting strong enough to change what an image shows, with classes that show it best."""

    setting: str
    message: str
    example_classes: tuple[str, ...]
    worst_case: AugmentConfig  # the transform at its extreme, applied the same way to every example


def label_risks(cfg: AugmentConfig) -> list[LabelRisk]:
    """Warnings computed from the settings, for transforms that would break the label's meaning."""
    risks = []
    if cfg.flip_vertical:
        risks.append(
            LabelRisk(
                "vertical flip",
                "Vertical flips turn shoes and bags upside down: no Fashion-MNIST image looks like that, so "
                "the model spends capacity on views it will never be tested on.",
                ("Ankle boot", "Sneaker", "Bag"),
                AugmentConfig(flip_vertical=True),
            )
        )
    if cfg.rotation > ROTATION_LIMIT:
        degrees = cfg.rotation_degrees
        what = (
            "turn garments upside down"
            if degrees >= 135
            else (
                "lay garments on their side"
                if degrees >= 60
                else "tilt garments well beyond any catalogue photo"
            )
        )
        risks.append(
            LabelRisk(
                "rotation",
                f"Rotations up to ±{degrees:.0f}° {what} (advised: ±30° at most): a trouser at that angle no "
                "longer looks like the catalogue view the label describes.",
                ("Trouser", "Dress", "Ankle boot"),
                AugmentConfig(rotation=cfg.rotation),
            )
        )
    if cfg.zoom > ZOOM_LIMIT:
        risks.append(
            LabelRisk(
                "zoom",
                f"Zooming in by up to {cfg.zoom:.0%} crops away sleeves and collars — the cues that separate "
                "Shirt, T-shirt/top and Pullover.",
                ("Shirt", "T-shirt/top", "Pullover"),
                AugmentConfig(zoom=cfg.zoom),
            )
        )
    if cfg.translation > TRANSLATION_LIMIT:
        risks.append(
            LabelRisk(
                "translation",
                f"Shifts of up to {cfg.translation:.0%} of the image push part of the item out of the frame.",
                ("Sandal", "Coat", "Bag"),
                AugmentConfig(translation=cfg.translation),
            )
        )
    return risks


def apply_extreme(images: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    """Apply each set transform of ``cfg`` at its full strength (not a random draw): the worst case."""
    import keras

    x = np.asarray(images, dtype="float32").reshape(-1, config.IMAGE_SIZE, config.IMAGE_SIZE, 1)
    if cfg.flip_vertical:
        x = x[:, ::-1]
    if cfg.flip_horizontal:
        x = x[:, :, ::-1]
    fixed = []
    if cfg.rotation:
        fixed.append(keras.layers.RandomRotation((cfg.rotation, cfg.rotation), fill_mode="constant"))
    if cfg.zoom:
        fixed.append(keras.layers.RandomZoom((-cfg.zoom, -cfg.zoom), fill_mode="constant"))
    if cfg.translation:
        t = (cfg.translation, cfg.translation)
        fixed.append(keras.layers.RandomTranslation(t, t, fill_mode="constant"))
    for layer in fixed:
        x = np.asarray(layer(x, training=True))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, config.IMAGE_SIZE, config.IMAGE_SIZE)


# ----------------------------------------------------------------------------------------------- presets


def presets_dir() -> Path:
    return config.fashion_home() / "augment_presets"


def save_preset(name: str, cfg: AugmentConfig) -> Path:
    """Save ``cfg`` as a named preset that the training page and ``--augment NAME`` can use."""
    clean = name.strip()
    if not clean or not all(c.isalnum() or c in "-_" for c in clean):
        suggestion = "-".join("".join(c for c in word if c.isalnum() or c in "-_") for word in clean.split())
        hint = f" — for example '{suggestion}'" if suggestion.strip("-") else ""
        raise ValueError(f"a preset name may hold letters, digits, '-' and '_' only{hint}")
    presets_dir().mkdir(parents=True, exist_ok=True)
    path = presets_dir() / f"{clean}.json"
    path.write_text(cfg.to_json())
    return path


def list_presets() -> list[str]:
    folder = presets_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def load_preset(name: str) -> AugmentConfig:
    path = presets_dir() / f"{name}.json"
    if not path.is_file():
        available = ", ".join(list_presets()) or "none saved yet"
        raise ValueError(f"no augmentation preset named '{name}' (available: {available})")
    return AugmentConfig.from_json(path.read_text())
