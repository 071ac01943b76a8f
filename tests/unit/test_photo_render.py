"""The product-photo renderer (bench.photo_realistic's measuring tape): which way its shadings go, and
that it is seeded."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fashion_lib import photo_render, photos


def two_tone() -> np.ndarray:
    """A square product, bright (dark in the photo it came from) on the left, dim on the right."""
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 4:14] = 250
    image[4:24, 14:24] = 90
    return image


def halves(shading: str, background: str, seed: int) -> tuple[float, float]:
    """Mean intensity of the left and right halves of the product after the app's conversion."""
    image = photos.convert_upload(photo_render.render(two_tone(), background, seed, shading=shading))[1].image
    product = image[:, 4:24].astype(float)
    return product[:, :10].mean(), product[:, 10:].mean()


@pytest.mark.parametrize("background", ["white", "plain"])
def test_negative_shading_comes_back_through_the_conversion_the_way_it_went_in(background):
    """Fashion-MNIST is a catalogue photo negated: drawn "negative" (the default), the bright half is the
    dark half of the photo, and the conversion (which negates) gives it back as the brighter half, by far.
    "positive" draws the bright half lighter: the conversion loses that order or turns it round."""
    for seed in range(6):
        left, right = halves("negative", background, seed)
        assert left > right + 60, (seed, left, right)
        left_first, right_first = halves("positive", background, seed)
        assert left - right > left_first - right_first + 60, (seed, left_first, right_first)
    assert photo_render.render(two_tone(), background, 1) == photo_render.render(
        two_tone(), background, 1, shading="negative"
    )


def test_the_faint_rim_is_filled_from_inside_so_no_halo_is_drawn():
    image = np.zeros((28, 28), np.uint8)
    image[8:20, 8:20] = 40  # the rim: the product blended with white, one pixel wide
    image[9:19, 9:19] = 200
    image[12, 12] = 250
    body = photo_render.without_rim(image)
    np.testing.assert_allclose(body[9:19, 9:19], image[9:19, 9:19] / 255.0)  # the product as it was
    assert body[8, 8:20].min() > 0.75 and body[8:20, 19].min() > 0.75  # the rim like the product inside
    faint = np.where(image > 0, 40, 0).astype(np.uint8)  # a product faint all over keeps its values
    np.testing.assert_allclose(photo_render.without_rim(faint), faint / 255.0)


def test_tinted_pixels_keep_their_brightness_and_the_colours_hue():
    brightness = np.linspace(0, 255, 52, dtype=np.float32)
    for colour in photo_render.COLOURS:
        colour = np.array(colour, np.float32)
        pixels = photo_render.tinted(brightness, colour)
        assert pixels.min() >= 0 and pixels.max() <= 255.0 + 1e-3
        np.testing.assert_allclose(pixels @ photo_render.LUMA, brightness, atol=0.01)
        # dark enough for no channel to pass 255: exactly the colour, scaled
        dark = pixels[(brightness > 0) & (brightness < 40)]
        np.testing.assert_allclose(
            dark / np.maximum(dark.sum(1, keepdims=True), 1e-6),
            np.broadcast_to(colour / colour.sum(), dark.shape),
            atol=1e-3,
        )
    # a light red is paler, not darker: the channel that would pass 255 makes room by mixing in grey
    light_red = photo_render.tinted(np.float32(200.0), np.array([170, 30, 40], np.float32))
    assert light_red[0] == pytest.approx(255.0) and light_red[1] > 150 and light_red[2] > 150


def test_both_shadings_draw_the_same_scene_for_a_seed():
    """Only the product differs: the two photos of a seed are the same outside the product's box."""
    for seed in range(4):
        jpegs = [photo_render.render(two_tone(), "gradient", seed, shading=s) for s in photo_render.SHADINGS]
        a, b = (cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR).astype(int) for j in jpegs)
        ys, xs = np.nonzero(np.abs(a - b).max(axis=2) > 30)
        box = photos.convert_upload(jpegs[0])[1].crop_box
        margin = 16  # JPEG blocks next to the product
        assert xs.min() >= box[0] - margin and xs.max() < box[2] + margin, (seed, box, xs.min(), xs.max())
        assert ys.min() >= box[1] - margin and ys.max() < box[3] + margin, (seed, box, ys.min(), ys.max())


def test_the_same_arguments_give_the_same_photo_and_bad_ones_are_refused():
    assert photo_render.render(two_tone(), "busy", 7) == photo_render.render(two_tone(), "busy", 7)
    assert photo_render.render(two_tone(), "busy", 7) != photo_render.render(two_tone(), "busy", 8)
    with pytest.raises(ValueError, match="shading"):
        photo_render.render(two_tone(), "white", 0, shading="sepia")
    with pytest.raises(ValueError, match="background"):
        photo_render.render(two_tone(), "beach", 0)
