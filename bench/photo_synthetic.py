"""Synthetic product photos: test images turned back into 'photos' (upscaled, negated to a dark product,
scaled, rotated, moved, pasted onto white, plain-coloured, noisy-textured and gradient backgrounds), then
converted by fashion_lib.photos and classified by the shipped baseline. Compares with a naive resize.

It is a development stand-in for real photos (the acceptance set is not in the repo); it prints accuracy per
background. Run: python -m bench.photo_synthetic [--n 400]
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from fashion_lib import config, data, models, photos

BACKGROUNDS = ("white catalogue", "plain colour", "noisy texture", "gradient")


def make_photo(image28: np.ndarray, background: str, rng: np.random.Generator) -> np.ndarray:
    side = int(rng.integers(160, 260))
    product = cv2.resize(image28.astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC)
    alpha = np.clip(product / 40.0, 0, 1)  # Fashion-MNIST's black is background
    angle, scale = float(rng.uniform(-12, 12)), 1.0
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, scale)
    product = cv2.warpAffine(product, matrix, (side, side))
    alpha = cv2.warpAffine(alpha, matrix, (side, side))
    h, w = int(rng.integers(300, 420)), int(rng.integers(300, 480))
    if background == "white catalogue":
        canvas = np.full((h, w, 3), 250.0)
    elif background == "plain colour":
        canvas = np.ones((h, w, 3)) * rng.integers(60, 230, 3)
    elif background == "noisy texture":
        canvas = rng.integers(90, 200, 3) + rng.normal(0, 25, (h, w, 3))
    else:
        ramp = np.linspace(0, 1, w)[None, :, None]
        canvas = (
            rng.integers(120, 255, 3) * (1 - ramp) + rng.integers(30, 200, 3) * ramp + np.zeros((h, 1, 3))
        )
    y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
    tint = rng.uniform(0.6, 1.0, 3)  # coloured garments
    garment = (255.0 - product)[..., None] * tint  # a photo shows the product dark where the image is light
    region = canvas[y : y + side, x : x + side]
    canvas[y : y + side, x : x + side] = region * (1 - alpha[..., None]) + garment * alpha[..., None]
    return np.clip(canvas, 0, 255).astype(np.uint8)


def naive(photo_rgb: np.ndarray) -> np.ndarray:
    """What a plain pipeline does: grayscale, squash to 28×28, no negation, no trimming."""
    gray = cv2.cvtColor(photo_rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (28, 28), interpolation=cv2.INTER_AREA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=400, help="test images per background")
    args = parser.parse_args()
    ds = data.load()
    model = models.load_model(config.CACHED_MODELS_DIR / "baseline" / "model.keras")
    rng = np.random.default_rng(0)
    index = data.stratified_subset(ds.y_test, args.n, seed=0)
    print(
        f"shipped baseline on {args.n} synthetic photos per background (original test images: "
        f"{np.mean(model.predict(ds.x_test[index][..., None], verbose=0).argmax(1) == ds.y_test[index]):.1%})"
    )
    for background in BACKGROUNDS:
        converted, squashed, methods = [], [], []
        for i in index:
            photo = make_photo(ds.x_test[i], background, rng)
            conversion = photos.to_fashion_mnist(photos.Photo(photo))
            converted.append(conversion.image)
            squashed.append(naive(photo))
            methods.append(conversion.mask_method)
        labels = ds.y_test[index]
        ours = np.mean(model.predict(np.stack(converted)[..., None], verbose=0).argmax(1) == labels)
        plain = np.mean(model.predict(np.stack(squashed)[..., None], verbose=0).argmax(1) == labels)
        grabcut = methods.count("GrabCut") / len(methods)
        print(f"  {background:<16} converted {ours:6.1%}   naive resize {plain:6.1%}", end="")
        print(f"   (GrabCut used {grabcut:.0%})")


if __name__ == "__main__":
    main()
