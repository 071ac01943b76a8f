"""Synthetic product photos: test images turned back into 'photos' (upscaled, negated to a dark product,
scaled, rotated, moved, pasted onto white, plain-coloured, noisy-textured and gradient backgrounds), then
converted by fashion_lib.photos and classified by each shipped model (or the runs named). Compares with a
naive resize.

It is a development stand-in for real photos (the acceptance set is not in the repo); it prints accuracy per
background. Run: python -m bench.photo_synthetic [--n 400] [--models baseline,mobilenet_v2]
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from fashion_lib import data, models, photos, runs
from fashion_lib.training.pipelines import predict

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
    parser.add_argument("--models", help="run ids or shipped names (default: every shipped model)")
    args = parser.parse_args()
    ds = data.load()
    names = args.models.split(",") if args.models else [r.run_id for r in runs.shipped_models()]
    loaded = {name: models.load_model(runs.resolve_run(name) / runs.MODEL_FILE) for name in names}
    rng = np.random.default_rng(0)
    index = data.stratified_subset(ds.y_test, args.n, seed=0)
    labels = ds.y_test[index]
    photos_by_background = {}
    for background in BACKGROUNDS:
        converted, squashed, methods = [], [], []
        for i in index:
            photo = make_photo(ds.x_test[i], background, rng)
            conversion = photos.to_fashion_mnist(photos.Photo(photo))
            converted.append(conversion.image)
            squashed.append(naive(photo))
            methods.append(conversion.mask_method)
        photos_by_background[background] = (np.stack(converted), np.stack(squashed), methods)
    for name, model in loaded.items():
        folder = runs.resolve_run(name)
        original = np.mean(predict(model, ds.x_test[index][..., None]).argmax(1) == labels)
        print(
            f"{runs.read_folder(folder).label} on {args.n} synthetic photos "
            f"per background (original test images: {original:.1%})"
        )
        for background, (converted, squashed, methods) in photos_by_background.items():
            ours = np.mean(predict(model, converted[..., None]).argmax(1) == labels)
            plain = np.mean(predict(model, squashed[..., None]).argmax(1) == labels)
            grabcut = methods.count("GrabCut") / len(methods)
            print(f"  {background:<16} converted {ours:6.1%}   naive resize {plain:6.1%}", end="")
            print(f"   (GrabCut used {grabcut:.0%})")


if __name__ == "__main__":
    main()
