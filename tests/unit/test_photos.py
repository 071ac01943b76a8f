"""Photo validation and conversion to the Fashion-MNIST domain, on synthetic photos whose answer is known,
plus a corpus of 240 malformed files that must each convert or raise the module's own error."""

from __future__ import annotations

import dataclasses
import io
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from fashion_lib import config, photos


def encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kwargs)
    return buf.getvalue()


def silhouette(h=300, w=500, box=(300, 60, 380, 260), colour=(40, 40, 60), background=(255, 255, 255)):
    """A dark rectangle ('garment') off-centre on a plain background; box is x0, y0, x1, y1."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = background
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = colour
    return img


# ---------------------------------------------------------------------------------------- conversion


def right_facing_boot(dataset) -> bytes:
    """Test image 0 (an ankle boot, pointing left like all Fashion-MNIST shoes) rendered as a product photo
    on a plain background (drawn the first way, ``shading="positive"``) and mirrored: the boot points
    right. Its conversion is the same every time; the shipped MobileNetV2 gives it 29 % and its mirror image
    98.5 % (Ankle boot both times); the shipped baseline calls it a Bag."""
    from bench.photo_realistic import mirrored_jpeg
    from fashion_lib import photo_render

    return mirrored_jpeg(photo_render.render(dataset.x_test[0], "plain", seed=3, shading="positive"))


def test_dark_silhouette_on_white_comes_out_centred_light_on_dark_with_its_aspect():
    _, conv = photos.convert_upload(encode(silhouette(), "PNG"))
    im = conv.image
    assert im.shape == (28, 28) and im.dtype == np.uint8
    assert im[0, 0] == 0 and im[:, :3].max() == 0 and im.max() > 200  # black background, light garment
    ys, xs = np.nonzero(im > 60)
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert height == 28 and abs(width / height - 80 / 200) < 0.1  # the longest edge is 28, aspect kept
    assert abs((xs.min() + xs.max()) / 2 - 13.5) <= 1.0  # centred
    x0, y0, x1, y1 = conv.crop_box
    assert abs(x0 - 300) <= 4 and abs(y0 - 60) <= 4 and abs(x1 - 380) <= 4 and abs(y1 - 260) <= 4


def test_coloured_and_noisy_backgrounds_are_removed():
    rng = np.random.default_rng(0)
    img = (rng.random((360, 360, 3)) * 50 + np.array([150, 90, 40])).astype(np.uint8)  # wooden-floor-ish
    cv2.circle(img, (180, 200), 80, (30, 30, 30), -1)
    _, conv = photos.convert_upload(encode(img, "JPEG", quality=90))
    x0, y0, x1, y1 = conv.crop_box
    assert abs(x0 - 100) <= 12 and abs(y0 - 120) <= 12 and abs(x1 - 261) <= 12 and abs(y1 - 281) <= 12
    assert conv.image[0, 0] == 0 and conv.image[14, 14] > 150


def test_transparent_pixels_are_background():
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[20:80, 40:60] = (200, 30, 30, 255)  # opaque red bar; the rest fully transparent
    photo = photos.load_photo(encode(rgba, "PNG"))
    assert photo.alpha is not None
    conv = photos.to_fashion_mnist(photo)
    assert conv.mask_method == "transparency" and conv.crop_box == (40, 20, 60, 80)


def test_light_product_on_a_dark_background_is_not_lost():
    img = silhouette(colour=(235, 235, 235), background=(20, 20, 20))
    conv = photos.to_fashion_mnist(photos.Photo(img))
    assert conv.image.max() > 200 and conv.image[0, 0] == 0


def test_heatmap_maps_back_inside_the_crop_box():
    _, conv = photos.convert_upload(encode(silhouette(), "PNG"))
    heat = np.random.default_rng(1).random((7, 7)).astype(np.float32)
    on_photo = photos.map_to_photo(heat, conv)
    assert on_photo.shape == conv.photo_shape
    x0, y0, x1, y1 = conv.crop_box
    outside = on_photo.copy()
    outside[y0:y1, x0:x1] = 0
    assert outside.max() == 0 and on_photo[y0:y1, x0:x1].max() > 0


def test_a_mirrored_conversion_maps_its_heatmap_back_the_photos_way_round():
    _, centred = photos.convert_upload(encode(silhouette(box=(60, 60, 200, 260)), "PNG"))
    conv = dataclasses.replace(centred, placement=(2, 0, 21, 28))  # off centre: mirroring moves it
    flipped = photos.mirror(conv)
    x0, y0, x1, y1 = conv.placement
    assert flipped.mirrored and (flipped.image == conv.image[:, ::-1]).all()
    assert flipped.placement == (28 - x1, y0, 28 - x0, y1) and flipped.crop_box == conv.crop_box
    heat = np.random.default_rng(1).random((7, 7)).astype(np.float32)  # a map over the original image
    # the same map over the mirror image lies mirrored; back on the photo both are the same
    assert np.allclose(
        photos.map_to_photo(heat[:, ::-1], flipped), photos.map_to_photo(heat, conv), atol=1e-6
    )
    twice = photos.mirror(flipped)
    assert not twice.mirrored and (twice.image == conv.image).all() and twice.placement == conv.placement


# ---------------------------------------------------------------------------------- real-photo quirks


def test_exif_rotated_photo_is_turned_upright():
    img = silhouette(h=200, w=400, box=(50, 50, 150, 100))  # landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    photo = photos.load_photo(encode(img, "JPEG", exif=exif))
    assert photo.rgb.shape[:2] == (400, 200)


def test_sixteen_bit_png_works():
    gray16 = silhouette()[..., 0].astype(np.uint16) * 257
    photo = photos.load_photo(encode(gray16, "PNG"))
    assert photo.rgb.dtype == np.uint8 and photo.rgb.max() == 255 and photo.rgb.min() == 40


def test_cmyk_jpeg_works():
    cmyk = Image.fromarray(silhouette()).convert("CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, "JPEG")
    photo, conv = photos.convert_upload(buf.getvalue())
    assert photo.rgb.shape == (300, 500, 3) and conv.image.max() > 200


def test_a_huge_but_legitimate_photo_works_at_a_bounded_size():
    big = cv2.resize(silhouette(), (6000, 3600), interpolation=cv2.INTER_NEAREST)
    photo, conv = photos.convert_upload(encode(big, "JPEG", quality=70))
    assert photo.original_size == (6000, 3600)
    assert conv.image.shape == (28, 28) and conv.photo_shape == (614, 1024)  # worked on at 1024 px
    # the garment (x 300–380, y 60–260 of 500 × 300) is found at the same place, scaled
    x0, y0, x1, y1 = conv.crop_box
    scale = 1024 / 500
    assert abs(x0 - 300 * scale) <= 8 and abs(x1 - 380 * scale) <= 8
    assert abs(y0 - 60 * scale) <= 8 and abs(y1 - 260 * scale) <= 8


def jpeg_claiming(side: int) -> bytes:
    """A few-hundred-byte JPEG whose frame header claims side × side pixels (the rest decodes as grey)."""
    data = bytearray(encode(np.full((16, 16, 3), 200, np.uint8), "JPEG", quality=50))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = side.to_bytes(2, "big") * 2
    return bytes(data)


MEMORY_PROBE = """
import os, sys, time
from fashion_lib import photos
data = open(sys.argv[1], "rb").read()
# resident memory now (not the peak so far: the imports' peak would hide a smaller one)
before_kb = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
started = time.perf_counter()
try:
    photos.convert_upload(data)
except photos.PhotoError:
    pass
# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over a fork and exec, so a child
# of a large pytest process would report the parent's size.
status = open("/proc/self/status").read()
peak_kb = int(status.split("VmHWM:")[1].split()[0])
print(max(0, peak_kb - before_kb) / 1024, time.perf_counter() - started)
"""


def large_photo(width: int, height: int) -> np.ndarray:
    return cv2.resize(silhouette(h=400, w=600, box=(200, 50, 400, 350)), (width, height))


@pytest.mark.parametrize(
    "kind",
    [
        "header claims 6324 x 6324",
        "genuine 6000 x 4000 photo",
        "6000 x 4000 PNG (decoded whole)",
        "6000 x 4000 WebP (decoded whole, through Pillow's own buffer)",
        "7000 x 5700 PNG (40 MP, the limit)",
    ],
)
def test_a_large_upload_costs_at_most_500_mb_more_memory(kind, tmp_path):
    if kind.startswith("header"):
        payload = jpeg_claiming(6324)
    elif kind.startswith("7000"):
        payload = encode(large_photo(7000, 5700), "PNG")
    else:
        fmt = "PNG" if "PNG" in kind else "WEBP" if "WebP" in kind else "JPEG"
        payload = encode(large_photo(6000, 4000), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    path = tmp_path / "upload.jpg"
    path.write_bytes(payload)
    # A fresh process, so the peak is this upload's alone (the high-water mark never goes down).
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(path)],
        capture_output=True,
        text=True,
        cwd=config.REPO_ROOT,
        check=True,
    )
    extra_mb, seconds = map(float, out.stdout.split())
    assert extra_mb <= 500, f"{kind}: {extra_mb:.0f} MB more at the peak ({seconds:.2f} s)"


def test_a_webp_over_its_own_pixel_limit_is_refused_before_decoding():
    payload = encode(large_photo(6100, 4100), "WEBP", lossless=True)  # 25 MP: over WebP's 24
    with pytest.raises(photos.PhotoError, match="24-megapixel limit for WebP images"):
        photos.convert_upload(payload)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"hello, this is not an image", "not an image"),
        ("gif", "not supported"),
        ("one_pixel", "only 1 × 1"),
        ("bomb", "decompression bomb"),
        ("truncated_png", "truncated or damaged"),
        ("truncated_jpeg", "truncated or damaged"),
        ("animated_webp", "animated"),
        ("dds", "cannot be read as an image"),  # Pillow's DDS reader raised NotImplementedError: a 500
    ],
)
def test_bad_uploads_get_a_clear_message(payload, message):
    with pytest.raises(photos.PhotoError, match=message):
        photos.convert_upload(BAD[payload] if isinstance(payload, str) else payload)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width × height pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + chunk(b"IEND", b"")
    )


def _animated_webp() -> bytes:
    frames = [Image.fromarray(silhouette(colour=(c, c, c))) for c in (30, 90)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:])
    return buf.getvalue()


_GOOD_PNG = encode(silhouette(), "PNG")
_GOOD_JPEG = encode(silhouette(), "JPEG")
BAD = {
    "gif": encode(silhouette(), "GIF"),
    "one_pixel": encode(np.zeros((1, 1, 3), np.uint8), "PNG"),
    "bomb": png_claiming(50_000, 50_000),
    "truncated_png": _GOOD_PNG[: len(_GOOD_PNG) // 2],
    "truncated_jpeg": _GOOD_JPEG[: len(_GOOD_JPEG) // 2],
    "animated_webp": _animated_webp(),
    "dds": b"DDS "
    + struct.pack("<7I", 124, 0x1007, 64, 64, 0, 0, 0)
    + bytes(44)
    + struct.pack("<2I", 32, 0x20000000)
    + bytes(108),
}


def test_a_jpeg_with_a_second_picture_inside_is_the_first_one_not_animated():
    """Phones store a preview (or a stereo pair) after the photo: Pillow reads it as a two-frame MPO,
    which was refused as 'an animated image'."""
    photo = Image.fromarray(silhouette())
    buffer = io.BytesIO()
    photo.save(buffer, "MPO", save_all=True, append_images=[photo.resize((40, 30))])
    loaded, conversion = photos.convert_upload(buffer.getvalue())
    assert loaded.rgb.shape == silhouette().shape and conversion.image.max() > 200


# ------------------------------------------------------------------------------------------ fuzz corpus


def malformed_corpus(n: int = 300) -> list[bytes]:
    """Mutations of valid JPEG, PNG, WebP and BMP files: truncations, flipped bytes, garbage, splices, and
    headers that claim other sizes (up to 65,535 pixels a side)."""
    rng = np.random.default_rng(2026)
    seeds = [
        encode(silhouette(h=60, w=90, box=(30, 10, 60, 50)), fmt) for fmt in ("JPEG", "PNG", "WEBP", "BMP")
    ]
    corpus = []
    for i in range(n):
        base = bytearray(seeds[i % len(seeds)])
        kind = i % 5
        if kind == 4:
            base = bytearray(_claiming_other_size(bytes(base), rng))
        elif kind == 0:
            base = base[: int(rng.integers(0, len(base)))]
        elif kind == 1:
            for _ in range(int(rng.integers(1, 20))):
                base[int(rng.integers(0, len(base)))] = int(rng.integers(0, 256))
        elif kind == 2:
            base = base[:16] + bytearray(
                rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
            )
        else:
            cut = int(rng.integers(8, len(base)))
            base = base[:cut] + base[cut + int(rng.integers(1, 64)) :]
        corpus.append(bytes(base))
    return corpus


def test_every_malformed_file_converts_or_raises_the_modules_own_error():
    outcomes = {"converted": 0, "refused": 0}
    for payload in malformed_corpus():
        try:
            _, conv = photos.convert_upload(payload)
        except photos.PhotoError as exc:
            assert str(exc)  # a message for the user
            outcomes["refused"] += 1
        else:
            assert conv.image.shape == (28, 28) and conv.image.dtype == np.uint8
            outcomes["converted"] += 1
    assert outcomes["refused"] > 0 and sum(outcomes.values()) == 300


def _claiming_other_size(data: bytes, rng: np.random.Generator) -> bytes:
    """The file with its width and height overwritten: JPEG frame, PNG IHDR, BMP header, WebP VP8 frame."""
    data = bytearray(data)
    side = int(rng.choice([0, 1, 7, 4000, 6324, 20_000, 65_535]))
    if data[:2] == b"\xff\xd8":
        at = data.index(b"\xff\xc0") + 5
        data[at : at + 4] = side.to_bytes(2, "big") + int(rng.integers(1, 65_535)).to_bytes(2, "big")
    elif data[:4] == b"\x89PNG":
        data[16:24] = side.to_bytes(4, "big") + int(rng.integers(1, 65_535)).to_bytes(4, "big")
    elif data[:2] == b"BM":
        data[18:26] = side.to_bytes(4, "little") + int(rng.integers(1, 65_535)).to_bytes(4, "little")
    else:  # WebP: the VP8 frame's 14-bit width and height
        at = data.find(b"VP8 ") + 14
        if at > 14:
            data[at : at + 4] = (side & 0x3FFF).to_bytes(2, "little") * 2
    return bytes(data)


def test_an_uploaded_fashion_mnist_image_is_used_as_it_is(dataset):
    image = dataset.x_test[0]  # light on black, 28 × 28: already the model's input
    _, conv = photos.convert_upload(encode(image, "PNG"))
    assert conv.mask_method == photos.AS_IS and np.array_equal(conv.image, image)
    _, photo_like = photos.convert_upload(encode(255 - image, "PNG"))  # dark on white: a photo, converted
    assert photo_like.mask_method != photos.AS_IS


def test_the_same_photo_converts_the_same_every_time(dataset):
    """GrabCut seeds its colour models from OpenCV's per-thread random generator: unseeded, the second
    conversion of a photo differed from the first (by 500–600 grey levels summed over 28 × 28)."""
    from fashion_lib import photo_render

    for background in photo_render.BACKGROUNDS:
        jpeg = photo_render.render(dataset.x_train[10], background, seed=5)
        first = photos.convert_upload(jpeg)[1].image
        assert all(np.array_equal(first, photos.convert_upload(jpeg)[1].image) for _ in range(3))
