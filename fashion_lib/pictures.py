"""Image arrays made for people to look at: small images enlarged without blur, many small images as one
picture (one element on a page instead of a hundred), and thumbnails of any photo in a square."""

from __future__ import annotations

import numpy as np

GAP = 4  # pixels of white between the tiles of a mosaic


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Each pixel becomes a factor × factor block (no smoothing: the 28 px original stays visible)."""
    return np.kron(np.asarray(image, dtype=np.uint8), np.ones((factor, factor), dtype=np.uint8))


def mosaic(images: np.ndarray, columns: int, factor: int = 3, gap: int = GAP) -> np.ndarray:
    """(N, h, w) uint8 images as one (rows × columns) picture, each enlarged by ``factor``, white gaps."""
    images = np.asarray(images, dtype=np.uint8)
    n, h, w = images.shape
    rows = max(1, -(-n // columns))
    th, tw = h * factor, w * factor
    canvas = np.full((rows * th + (rows - 1) * gap, columns * tw + (columns - 1) * gap), 255, np.uint8)
    for k, image in enumerate(images):
        r, c = divmod(k, columns)
        canvas[r * (th + gap) : r * (th + gap) + th, c * (tw + gap) : c * (tw + gap) + tw] = upscale(
            image, factor
        )
    return canvas


def thumbnail(image: np.ndarray, size: int = 130) -> np.ndarray:
    """The image fitted into a size × size square (aspect kept, grey margins); small images stay crisp."""
    import cv2

    image = np.asarray(image)
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    method = cv2.INTER_NEAREST if max(h, w) <= 64 else cv2.INTER_AREA
    resized = cv2.resize(image, (nw, nh), interpolation=method)
    canvas = np.full((size, size, *image.shape[2:]), 128, dtype=image.dtype)
    y, x = (size - nh) // 2, (size - nw) // 2
    canvas[y : y + nh, x : x + nw] = resized
    return canvas
