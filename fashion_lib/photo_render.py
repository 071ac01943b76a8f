"""Product photos rendered from Fashion-MNIST images, and pictures of things that are not clothes: the
measuring tape for the photo conversion and for how models do on photos (``bench/photo_realistic``).

A 28×28 image is Fashion-MNIST's own negative of a catalogue photo: light where the product is, with its
shading. ``render`` turns it back into a photo as a shop or a phone would take it: a coloured (sometimes
patterned) product whose brightness is the image's negative (by default; ``shading="positive"`` is the
first drawing, see ``render``), slightly rotated and in perspective, casting a soft shadow, on one of four
kinds of background — white (catalogue), a plain colour, a gradient, or a busy scene — then lit, noised
and JPEG-compressed. ``not_clothes`` draws things the ten classes do not cover (shapes, text, landscapes),
to measure how often the app says "not sure" when it should.

Everything is seeded: the same arguments give the same picture.
"""

from __future__ import annotations

import io

import cv2
import numpy as np

BACKGROUNDS = ("white", "plain", "gradient", "busy")
OUT_OF_CLASS = ("shapes", "text", "landscape")
SHADINGS = ("negative", "positive")
SIDE = 480  # rendered photos are SIDE × SIDE before JPEG
RIM = 0.3  # image intensities below this (of 1) next to brighter ones are mostly the edge, blended with white

COLOURS = (
    (235, 235, 230),  # white
    (40, 40, 45),  # black
    (35, 45, 90),  # navy
    (170, 30, 40),  # red
    (200, 180, 140),  # beige
    (120, 120, 125),  # grey
    (60, 110, 60),  # green
    (90, 60, 40),  # brown
    (210, 120, 160),  # pink
    (70, 130, 190),  # light blue
)


def _texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A multiplicative pattern in [0.75, 1.15]: plain, stripes, checks or fabric noise."""
    h, w = shape
    kind = rng.integers(0, 4)
    if kind == 0:
        return np.ones(shape, np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = float(rng.uniform(8, 24))
    if kind == 1:
        angle = rng.uniform(0, np.pi)
        stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0
        return np.where(stripes, 1.1, 0.8).astype(np.float32)
    if kind == 2:
        checks = ((xx // period).astype(int) + (yy // period).astype(int)) % 2 == 0
        return np.where(checks, 1.1, 0.82).astype(np.float32)
    noise = cv2.GaussianBlur(rng.normal(0, 1, shape).astype(np.float32), (0, 0), 1.5)
    return (1.0 + 0.08 * noise).astype(np.float32)


def _background(kind: str, rng: np.random.Generator) -> np.ndarray:
    h = w = SIDE
    if kind == "white":
        tone = rng.uniform(238, 255)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        vignette = 1 - 0.06 * (((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (w * w / 2))
        return np.repeat((tone * vignette)[..., None], 3, axis=2)
    if kind == "plain":
        colour = rng.uniform(30, 230, 3)
        return np.broadcast_to(colour, (h, w, 3)).astype(np.float32).copy()
    if kind == "gradient":
        a, b = rng.uniform(20, 240, 3), rng.uniform(20, 240, 3)
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        return (a * (1 - t) + b * t) * np.ones((1, w, 1), np.float32)
    # busy: a floor or bed of large blobs, stripes and small clutter, like a room or a market stall
    base = rng.uniform(60, 200, 3)
    image = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
    for _ in range(int(rng.integers(6, 14))):
        colour = rng.uniform(0, 255, 3).tolist()
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            axes = (int(rng.integers(20, 160)), int(rng.integers(20, 160)))
            cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        else:
            size = (int(rng.integers(30, 200)), int(rng.integers(30, 200)))
            cv2.rectangle(image, centre, (centre[0] + size[0], centre[1] + size[1]), colour, -1)
    grain = cv2.GaussianBlur(rng.normal(0, 18, (h, w)).astype(np.float32), (0, 0), 2)
    return cv2.GaussianBlur(image, (0, 0), 2) + grain[..., None]


LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # brightness from RGB (ITU-R 601, as OpenCV's grey)


def tinted(brightness: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """RGB pixels of the given brightness (0–255) in the colour's hue. Where the full colour would pass 255
    in a channel (a light red), it is mixed towards grey just enough: the pixel is paler but keeps its
    brightness, so the garment's shading survives."""
    b = np.clip(brightness, 0.0, 255.0)[..., None]
    k = colour / max(8.0, float(colour @ LUMA))  # the colour scaled to brightness 1
    room = np.where(k > 1, (255.0 - b) / np.maximum((k - 1) * b, 1e-6), np.inf)
    saturation = np.clip(room.min(axis=-1, keepdims=True), 0.0, 1.0)
    return (b + saturation * (k * b - b)).astype(np.float32)


def without_rim(image28: np.ndarray) -> np.ndarray:
    """The image (0–1) with its faint rim filled from inside. The rim is the product blended with Zalando's
    white background, not a lighter edge: drawn as it is, the negative drawing gave every product a light
    halo. Each pixel below ``RIM`` next to brighter ones takes the mean of those neighbours (at 28 × 28 the
    rim is one pixel wide); a product that is faint all over keeps its values."""
    image = np.asarray(image28, np.float32) / 255.0
    interior = (image >= RIM).astype(np.float32)
    near = cv2.blur(interior, (3, 3), borderType=cv2.BORDER_CONSTANT)
    nearby = cv2.blur(image * interior, (3, 3), borderType=cv2.BORDER_CONSTANT) / np.maximum(near, 1e-6)
    return np.where((image < RIM) & (near > 0), nearby, image)


def render(image28: np.ndarray, background: str, seed: int, shading: str = "negative") -> bytes:
    """A JPEG product photo of the Fashion-MNIST image ``image28`` on a ``background`` (see BACKGROUNDS).

    ``shading`` (see SHADINGS) says how the image's intensity becomes the product's brightness:

    - "negative" (the default): the photo's brightness is the image's negative, in the hue of the drawn
      colour — how Zalando made Fashion-MNIST (catalogue photos, negated), so a dark coat is a bright image
      and a white T-shirt a faint one. How models score on it against real photos: the README
      (``bench.photo_realistic``).
    - "positive": the product is lighter where the image is light, in the drawn colour (the drawing this
      project used first; the shipped models' training photos, ``training.photo_mix``, are drawn this way
      and must stay as they are: its cache holds them).

    Both draw the same size, colour, pattern, placement and background for the same seed."""
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}")
    if shading not in SHADINGS:
        raise ValueError(f"shading must be one of {', '.join(SHADINGS)}")
    rng = np.random.default_rng(seed)
    size = int(rng.uniform(0.45, 0.8) * SIDE)
    shade = cv2.resize(np.asarray(image28, np.float32) / 255.0, (size, size), interpolation=cv2.INTER_CUBIC)
    shade = np.clip(shade, 0, 1)
    alpha = np.clip((shade - 0.06) / 0.12, 0, 1)  # the product: where Fashion-MNIST is not black
    # (the negative drawing keeps only the colour's hue, so this brightness factor changes nothing there;
    # it is drawn anyway to keep both drawings' random draws in step)
    colour = np.array(COLOURS[int(rng.integers(0, len(COLOURS)))], np.float32) * rng.uniform(0.85, 1.1)
    texture = _texture(rng, shade.shape)
    if shading == "negative":
        body = np.clip(cv2.resize(without_rim(image28), (size, size), interpolation=cv2.INTER_CUBIC), 0, 1)
        product = tinted(255.0 * (1.0 - body) * texture, colour)
    else:
        light = 0.55 + 0.45 * shade
        product = colour * (light * texture)[..., None]
    # place it: a random position, a slight rotation and perspective
    canvas_alpha = np.zeros((SIDE, SIDE), np.float32)
    canvas = np.zeros((SIDE, SIDE, 3), np.float32)
    x0 = int(rng.integers(0, SIDE - size + 1))
    y0 = int(rng.integers(0, SIDE - size + 1))
    canvas_alpha[y0 : y0 + size, x0 : x0 + size] = alpha
    canvas[y0 : y0 + size, x0 : x0 + size] = product
    src = np.float32([[0, 0], [SIDE, 0], [SIDE, SIDE], [0, SIDE]])
    jitter = rng.uniform(-0.04, 0.04, (4, 2)).astype(np.float32) * SIDE
    turn = cv2.getRotationMatrix2D((SIDE / 2, SIDE / 2), float(rng.uniform(-8, 8)), 1.0)
    dst = cv2.transform((src + jitter)[None], turn)[0].astype(np.float32)
    warp = cv2.getPerspectiveTransform(src, dst)
    canvas_alpha = cv2.warpPerspective(canvas_alpha, warp, (SIDE, SIDE))
    canvas = cv2.warpPerspective(canvas, warp, (SIDE, SIDE))
    # a soft shadow under and beside it
    scene = _background(background, rng)
    shift = rng.integers(4, 18, 2)
    shadow = cv2.GaussianBlur(np.roll(canvas_alpha, tuple(shift), axis=(0, 1)), (0, 0), 9)
    scene = scene * (1 - 0.35 * shadow[..., None])
    photo = scene * (1 - canvas_alpha[..., None]) + canvas * canvas_alpha[..., None]
    # light and sensor
    photo = photo * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15)
    photo = photo + rng.normal(0, rng.uniform(1, 5), photo.shape)
    return _jpeg(np.clip(photo, 0, 255).astype(np.uint8), int(rng.integers(70, 95)))


def not_clothes(kind: str, seed: int) -> bytes:
    """A JPEG of something that is none of the ten classes: ``shapes``, ``text`` or a ``landscape``."""
    if kind not in OUT_OF_CLASS:
        raise ValueError(f"kind must be one of {', '.join(OUT_OF_CLASS)}")
    rng = np.random.default_rng(seed)
    image = np.clip(_background("white" if kind != "landscape" else "gradient", rng), 0, 255).astype(np.uint8)
    if kind == "shapes":
        for _ in range(int(rng.integers(1, 4))):
            colour = rng.uniform(0, 200, 3).tolist()
            centre = (int(rng.integers(120, SIDE - 120)), int(rng.integers(120, SIDE - 120)))
            radius = int(rng.integers(30, 110))
            if rng.random() < 0.5:
                cv2.circle(image, centre, radius, colour, -1)
            else:
                points = rng.integers(60, SIDE - 60, (int(rng.integers(3, 7)), 2)).astype(np.int32)
                cv2.fillPoly(image, [points], colour)
    elif kind == "text":
        words = ("SALE", "Hello", "2026", "Menu", "OPEN", "Fashion", "Receipt", "Total 42")
        for line in range(int(rng.integers(1, 4))):
            cv2.putText(
                image,
                str(rng.choice(words)),
                (int(rng.integers(20, 120)), 140 + 110 * line),
                cv2.FONT_HERSHEY_SIMPLEX,
                float(rng.uniform(1.6, 3.0)),
                rng.uniform(0, 120, 3).tolist(),
                int(rng.integers(3, 9)),
            )
    else:  # landscape: sky, hills, a sun
        horizon = int(rng.uniform(0.4, 0.7) * SIDE)
        xs = np.arange(SIDE)
        hills = (horizon + 30 * np.sin(xs / rng.uniform(30, 90) + rng.uniform(0, 6))).astype(int)
        ground = rng.uniform(30, 140, 3)
        for x, top in zip(xs, hills, strict=True):
            image[top:, x] = ground
        cv2.circle(
            image,
            (int(rng.integers(60, SIDE - 60)), int(rng.integers(40, horizon - 40))),
            35,
            (250, 220, 120),
            -1,
        )
    noisy = image.astype(np.float32) + rng.normal(0, 3, image.shape)
    return _jpeg(np.clip(noisy, 0, 255).astype(np.uint8), 90)


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
