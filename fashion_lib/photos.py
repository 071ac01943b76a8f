"""Upload validation and the conversion of real product photos to the Fashion-MNIST domain.

Fashion-MNIST was made from catalogue photos (Xiao, Rasul, Vollgraf 2017, section 2): trim the background
using the corner colour, resize the longest edge to 28, sharpen, extend to 28×28 with the object centred,
negate the intensities, convert to 8-bit grayscale. ``to_fashion_mnist`` follows that procedure, with a
foreground-segmentation step (OpenCV's GrabCut, seeded by the corner colour) in front of the trim, because
real uploads are rarely clean catalogue shots. Every step's picture is kept for the step strip, and the crop
box is kept so a heatmap on the 28×28 image can be drawn back onto the photo.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from fashion_lib import config

MAX_FILE_BYTES = 10 * 1024 * 1024  # the upload limit set in .streamlit/config.toml
MAX_PIXELS = 40_000_000  # about 8000 × 5000: larger claims are decompression bombs or scans, not photos
# Pillow decodes a WebP whole, through a buffer of its own (≈ 15 MB per megapixel at the peak, measured):
# a lower limit keeps one upload under 500 MB. JPEGs decode at reduced scale; PNG and BMP at ≈ 5 MB/MP.
MAX_PIXELS_BY_FORMAT = {"WEBP": 24_000_000}
MAX_UPLOAD_FILES = 16  # photos per upload (the page's uploader, the service's POST /predict)
MIN_SIDE = 8
ALLOWED_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP"}
SEGMENT_SIDE = 200  # GrabCut runs on a copy this size: fast on a CPU, accurate enough for a 28 px result
# Photos are decoded and worked on at most this size (longest side). The result is 28×28: more pixels add
# time and memory, not accuracy. JPEGs are decoded straight at a reduced scale (libjpeg's DCT scaling), so a
# 12-megapixel photo, or a tiny file whose header claims 6324 × 6324 pixels, never exists at full size.
WORK_SIDE = 1024
SIZE = config.IMAGE_SIZE


class PhotoError(Exception):
    """An upload that cannot be used as a photo; the message says why and what to do."""


@dataclass(frozen=True)
class Photo:
    """A decoded upload: RGB uint8 (H, W, 3), and the alpha channel (H, W) in [0, 1] when it has one.

    ``original_size`` is the (width, height) the file holds; ``rgb`` is at most WORK_SIDE on its longest
    side."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    format: str = ""
    original_size: tuple[int, int] | None = None


def load_photo(data: bytes) -> Photo:
    """Decode and validate an upload by its content (not its name): JPEG, PNG, WebP or BMP, one frame.

    Handles EXIF rotation, RGBA (transparent pixels become background), 16-bit and CMYK images. Raises
    ``PhotoError`` with a clear message for anything else: empty, not an image, truncated, animated, too
    small, or claiming more pixels than a photo has (a decompression bomb)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise PhotoError("the file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise PhotoError(f"the file is {len(data) / 1e6:.1f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            kind = image.format
            width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PhotoError(
            f"the image claims more pixels than the {MAX_PIXELS / 1e6:.0f}-megapixel limit "
            "(a decompression bomb or a huge scan): resize it first"
        ) from exc
    except UnidentifiedImageError as exc:
        raise PhotoError("this is not an image we can read (JPEG, PNG, WebP or BMP)") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise PhotoError(f"the image header is damaged ({exc})") from exc
    except Exception as exc:  # any other of Pillow's readers failing (a DDS header: NotImplementedError)
        raise PhotoError(f"this file cannot be read as an image ({type(exc).__name__}: {exc})") from exc
    if kind not in ALLOWED_FORMATS:
        raise PhotoError(f"{kind or 'this'} images are not supported: upload a JPEG, PNG, WebP or BMP photo")
    # An MPO is a JPEG with more pictures after the first (a phone's preview, a stereo pair): the first is
    # the photo. Any other image with frames is animated.
    if kind != "MPO" and getattr(image, "n_frames", 1) > 1:
        raise PhotoError("this is an animated image: upload a single still photo")
    limit = MAX_PIXELS_BY_FORMAT.get(kind, MAX_PIXELS)
    if width * height > limit:
        which = f" for {ALLOWED_FORMATS[kind]} images" if limit != MAX_PIXELS else ""
        raise PhotoError(
            f"the image claims {width:,} × {height:,} pixels, more than the {limit / 1e6:.0f}-megapixel "
            f"limit{which} (a decompression bomb or a huge scan): resize it first"
        )
    if min(width, height) < MIN_SIDE:
        raise PhotoError(
            f"the image is only {width} × {height} pixels: at least {MIN_SIDE} × {MIN_SIDE} needed"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if kind in ("JPEG", "MPO"):
                image.draft(image.mode, (WORK_SIDE, WORK_SIDE))  # decode at 1/2, 1/4 or 1/8 scale
            image.load()
            orientation = image.getexif().get(_ORIENTATION, 1)
            image = _work_size(image)  # first: turning a 40-megapixel image would copy all of it
            if orientation in _TURNS:
                image = image.transpose(Image.Transpose[_TURNS[orientation]])
    except Exception as exc:  # OSError, ValueError, SyntaxError, a decompression bomb, any reader's own
        raise PhotoError(f"the image is truncated or damaged ({exc})") from exc
    photo = _to_rgb(image, ALLOWED_FORMATS[kind])
    return Photo(photo.rgb, photo.alpha, photo.format, (width, height))


_ORIENTATION = 0x0112  # the EXIF tag: how the camera was held
_TURNS = {  # its values → the transpose that shows the photo upright (as ImageOps.exif_transpose)
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


def _work_size(image):
    """The image at most WORK_SIDE on its longest side (area-averaged), in a mode resizing supports."""
    from PIL import Image

    if max(image.size) <= WORK_SIDE:
        return image
    if image.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
        transparent = image.mode in ("PA", "LA") or "transparency" in image.info
        image = image.convert("RGBA" if transparent else ("I" if image.mode.startswith("I;16") else "RGB"))
    scale = WORK_SIDE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BOX, reducing_gap=2.0)


def _to_rgb(image, kind: str) -> Photo:
    alpha = None
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit (or 32-bit integer) grayscale
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if values.max() > 255 else 255.0
        gray = np.clip(values / top * 255.0, 0, 255).astype(np.uint8)
        return Photo(np.repeat(gray[..., None], 3, axis=2), None, kind)
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        span = (values.max() - values.min()) or 1.0
        gray = ((values - values.min()) / span * 255).astype(np.uint8)
        return Photo(np.repeat(gray[..., None], 3, axis=2), None, kind)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"))
        alpha = rgba[..., 3].astype(np.float32) / 255.0
        if alpha.min() >= 1.0:
            alpha = None
        return Photo(np.ascontiguousarray(rgba[..., :3]), alpha, kind)
    return Photo(np.asarray(image.convert("RGB")), None, kind)  # RGB, L, CMYK, YCbCr, P, 1 …


# ------------------------------------------------------------------------------------------ conversion


@dataclass(frozen=True)
class Conversion:
    """The 28×28 result, the pictures of each step, and where the object sits in the photo and the result."""

    image: np.ndarray  # (28, 28) uint8, light object on black, like Fashion-MNIST
    steps: dict[str, np.ndarray] = field(repr=False)
    crop_box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the photo (x1, y1 exclusive)
    placement: tuple[int, int, int, int]  # x0, y0, x1, y1 of the object inside the 28×28 image
    photo_shape: tuple[int, int]
    mask_method: str
    foreground_share: float = 0.0  # of the photo's pixels, what the mask took for the product
    border_share: float = 0.0  # the largest share of one edge's pixels that are product (cut off?)
    mirrored: bool = False  # ``image`` is the mirror image of the converted photo (``mirror``)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def corner_colour(rgb: np.ndarray) -> np.ndarray:
    """The median colour of the photo's border (3 % of each side): the background the procedure trims."""
    h, w = rgb.shape[:2]
    b = max(1, round(0.03 * min(h, w)))
    border = np.concatenate(
        [
            rgb[:b].reshape(-1, 3),
            rgb[-b:].reshape(-1, 3),
            rgb[:, :b].reshape(-1, 3),
            rgb[:, -b:].reshape(-1, 3),
        ]
    )
    return np.median(border, axis=0).astype(np.float32)


def _dither(small: np.ndarray) -> np.ndarray:
    """The image with ±2 levels of fixed noise. GrabCut's colour models degenerate on images of a handful
    of exact colours (flat graphics, a damaged JPEG decoded to a few grey blocks): measured here, 2.3–9.9 s
    on a 200 × 200 copy instead of 0.06 s. The noise is invisible at 28 × 28 and breaks the tie."""
    noise = np.random.default_rng(0).integers(-2, 3, small.shape, dtype=np.int16)
    return np.clip(small.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def foreground_mask(photo: Photo, segment: bool = True) -> tuple[np.ndarray, str]:
    """A boolean mask of the product: transparency when the photo has it; else GrabCut seeded with the
    corner-colour distance (works on coloured sheets, floors and people); else the corner colour alone."""
    rgb = photo.rgb
    h, w = rgb.shape[:2]
    if photo.alpha is not None:
        return photo.alpha > 0.5, "transparency"
    distance = np.linalg.norm(rgb.astype(np.float32) - corner_colour(rgb), axis=2)
    colour_mask = distance > max(30.0, float(np.percentile(distance, 20)) * 1.5)
    if not segment or min(h, w) < 16:
        return colour_mask, "corner colour"
    scale = SEGMENT_SIDE / max(h, w)
    small = cv2.resize(
        rgb, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    sh, sw = small.shape[:2]
    small_colour = cv2.resize(colour_mask.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST).astype(
        bool
    )
    labels = np.full((sh, sw), cv2.GC_PR_BGD, np.uint8)
    labels[small_colour] = cv2.GC_PR_FGD
    edge = max(1, round(0.02 * min(sh, sw)))
    labels[:edge], labels[-edge:], labels[:, :edge], labels[:, -edge:] = (cv2.GC_BGD,) * 4
    if not (labels == cv2.GC_PR_FGD).any():  # nothing differs from the corners: try the centre
        labels[sh // 4 : 3 * sh // 4, sw // 4 : 3 * sw // 4] = cv2.GC_PR_FGD
    try:
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        # GrabCut starts its colour models with k-means on OpenCV's random generator (one per thread, never
        # reset): without a fixed seed the same photo converted twice came out different
        cv2.setRNGSeed(0)
        cv2.grabCut(
            cv2.cvtColor(_dither(small), cv2.COLOR_RGB2BGR), labels, None, bgd, fgd, 4, cv2.GC_INIT_WITH_MASK
        )
    except cv2.error:
        return colour_mask, "corner colour"
    small_mask = main_object(np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8))
    share = small_mask.mean()
    if not 0.01 < share < 0.98:  # GrabCut gave up: keep the procedure's own corner-colour trim
        return colour_mask, "corner colour"
    return cv2.resize(small_mask, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool), "GrabCut"


KEEP_COMPONENT = 0.15  # a separate blob this large (against the largest) may be part of the product


def main_object(mask: np.ndarray) -> np.ndarray:
    """The mask's largest connected region, and only other regions at least KEEP_COMPONENT of its size:
    on a busy background GrabCut keeps bits of clutter, which would stretch the crop box around them."""
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:  # background and at most one region
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.flatnonzero(areas >= KEEP_COMPONENT * areas.max())
    return np.isin(components, keep).astype(np.uint8)


def _sharpen(image: np.ndarray) -> np.ndarray:
    blurred = cv2.GaussianBlur(image, (0, 0), 1.0)
    return cv2.addWeighted(image, 1.6, blurred, -0.6, 0)


def to_fashion_mnist(photo: Photo, segment: bool = True) -> Conversion:
    """Convert a product photo to a 28×28 Fashion-MNIST-like image, keeping each step's picture."""
    rgb = photo.rgb
    h, w = rgb.shape[:2]
    mask, method = foreground_mask(photo, segment)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise PhotoError("no product could be told apart from the background")
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    # Negate: a dark product on a light catalogue background becomes a light product on black.
    negated = 255.0 - _luminance(rgb)
    negated[~mask] = 0.0
    crop = negated[y0:y1, x0:x1]
    crop_mask = mask[y0:y1, x0:x1]
    # Light products on dark backgrounds come out faint after negation: stretch the product's range.
    top = float(np.percentile(crop[crop_mask], 99.5)) if crop_mask.any() else 0.0
    if top > 0:
        crop = np.clip(crop * (255.0 / top), 0, 255)
    ch, cw = crop.shape
    scale = SIZE / max(ch, cw)
    nh, nw = max(1, round(ch * scale)), max(1, round(cw * scale))
    resized = cv2.resize(crop.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA)
    sharpened = np.clip(_sharpen(resized), 0, 255)
    canvas = np.zeros((SIZE, SIZE), np.float32)
    oy, ox = (SIZE - nh) // 2, (SIZE - nw) // 2
    canvas[oy : oy + nh, ox : ox + nw] = sharpened
    final = np.rint(canvas).astype(np.uint8)
    mask_picture = rgb.copy()
    mask_picture[~mask] = (mask_picture[~mask] * 0.25).astype(np.uint8)
    steps = {
        "photo": rgb,
        f"foreground ({method})": mask_picture,
        "trimmed + negated": np.rint(crop).astype(np.uint8),
        "resized + sharpened": np.rint(sharpened).astype(np.uint8),
        "28×28, centred": final,
    }
    # A product cut off by the frame reaches the edge; GrabCut keeps its outermost 2 % as background, so
    # look just inside that band.
    m = min(max(1, round(0.03 * min(h, w))), min(h, w) // 2 - 1)
    edges = max(float(line.mean()) for line in (mask[m], mask[-m - 1], mask[:, m], mask[:, -m - 1]))
    return Conversion(
        final,
        steps,
        (x0, y0, x1, y1),
        (ox, oy, ox + nw, oy + nh),
        (h, w),
        method,
        float(mask.mean()),
        edges,
    )


def mirror(conversion: Conversion) -> Conversion:
    """The conversion with its 28×28 image mirrored left to right (the product facing the other way)."""
    x0, y0, x1, y1 = conversion.placement
    return replace(
        conversion,
        image=np.ascontiguousarray(conversion.image[:, ::-1]),
        placement=(SIZE - x1, y0, SIZE - x0, y1),
        mirrored=not conversion.mirrored,
    )


def map_to_photo(heatmap: np.ndarray, conversion: Conversion) -> np.ndarray:
    """A heatmap over the 28×28 image, resized back onto the photo: zero outside the crop box."""
    h, w = conversion.photo_shape
    full = np.zeros((h, w), np.float32)
    at28 = cv2.resize(heatmap.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    px0, py0, px1, py1 = conversion.placement
    if conversion.mirrored:  # the map lies over the mirror image: turn it back to the photo's way round
        at28, px0, px1 = at28[:, ::-1], SIZE - px1, SIZE - px0
    x0, y0, x1, y1 = conversion.crop_box
    part = at28[py0:py1, px0:px1]
    full[y0:y1, x0:x1] = cv2.resize(part, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return full


AS_IS = "as it is"  # the mask method of an upload that already is a Fashion-MNIST image


def already_fashion_mnist(photo: Photo) -> bool:
    """A 28×28 grayscale image, light on a dark background: Fashion-MNIST's own form, used as it is
    (converted like a photo it would be negated and misread)."""
    rgb = photo.rgb
    return (
        rgb.shape[:2] == (SIZE, SIZE)
        and photo.alpha is None
        and bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
        and corner_colour(rgb)[0] < 128
    )


def as_is(photo: Photo) -> Conversion:
    image = np.ascontiguousarray(photo.rgb[..., 0])
    full = (0, 0, SIZE, SIZE)
    return Conversion(image, {"28×28, used as uploaded": image}, full, full, (SIZE, SIZE), AS_IS)


def convert_upload(data: bytes, segment: bool = True) -> tuple[Photo, Conversion]:
    """Validate an upload and convert it (or take it as it is, when it already is a Fashion-MNIST image);
    raises PhotoError only."""
    photo = load_photo(data)
    if already_fashion_mnist(photo):
        return photo, as_is(photo)
    try:
        return photo, to_fashion_mnist(photo, segment)
    except PhotoError:
        raise
    except (cv2.error, ValueError, MemoryError) as exc:
        raise PhotoError(f"the photo could not be converted ({exc})") from exc
