"""Models on product photos: test images rendered as photos (``fashion_lib.photo_render``: coloured and
patterned products, rotation, perspective, shadows) on white, plain-colour, gradient and busy backgrounds,
converted by the app's own ``photos.convert_upload`` and classified by each shipped model (or the runs named).
Also: how often the app says "not sure" on those photos and on pictures of things that are not clothes, and
the same photos mirrored (the products facing right, where Fashion-MNIST's shoes all point left). Models
that know mirror images (``confidence.Familiarity.mirror``) answer for each photo the way round they are
surer of, as the app does; the others take photos as they are.

    python -m bench.photo_realistic [--per-class 20] [--models baseline,mobilenet_v2] [--no-segment]
                                    [--shading negative|positive]

Prints accuracy by background, the "not sure" rates, and the conversion time; asserts nothing. It is more
realistic than bench.photo_synthetic (plain pastes of test images), but rendered, not photographed: real
photos of worn clothes and cluttered rooms are harder.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

from fashion_lib import confidence, config, data, models, photo_render, photos, runs
from fashion_lib.training.pipelines import predict

SHOES = [config.CLASS_NAMES.index(name) for name in ("Sandal", "Sneaker", "Ankle boot")]


def shifted_views(x: np.ndarray, mirror: bool) -> list[np.ndarray]:
    """Test-time augmentation: the image, shifted by one pixel each way, and (``mirror``) mirrored."""
    views = [x, *(np.roll(x, step, axis=axis) for axis in (1, 2) for step in (-1, 1))]
    return views + [v[:, :, ::-1] for v in views] if mirror else views


def mirrored_jpeg(jpeg: bytes) -> bytes:
    """The photo mirrored left to right (the product facing the other way)."""
    photo = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return cv2.imencode(".jpg", photo[:, ::-1])[1].tobytes()


def as_the_app_answers(
    features_of, stats, x: np.ndarray, conversions: list
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities, familiarity distances, mirrored or not) of converted photos (N, 28, 28, 1): each the
    way round the model is surer of where the app tries it (``confidence.tries_mirror``), else as it is."""
    features, probs = confidence.outputs(features_of, x)
    flip = np.zeros(len(x), bool)
    tried = np.array([confidence.tries_mirror(c, stats) for c in conversions])
    if tried.any():
        mirrored_features, mirrored_probs = confidence.outputs(features_of, x[:, :, ::-1])
        flip = tried & confidence.surer_mirrored(probs, mirrored_probs)
        probs = np.where(flip[:, None], mirrored_probs, probs)
        features = np.where(flip[:, None], mirrored_features, features)
    return probs, stats.distances(features), flip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-class", type=int, default=20, help="test images per class and background")
    parser.add_argument("--models", help="run ids or shipped names (default: every shipped model)")
    parser.add_argument("--no-segment", action="store_true", help="the corner-colour trim only (no GrabCut)")
    parser.add_argument(
        "--shading",
        choices=photo_render.SHADINGS,
        default="negative",
        help="how the image's intensity becomes the product's brightness (photo_render.render)",
    )
    args = parser.parse_args()

    ds = data.load()
    index = data.stratified_subset(ds.y_test, args.per_class * config.NUM_CLASSES, seed=0)
    names = args.models.split(",") if args.models else [r.run_id for r in runs.shipped_models()]
    loaded = {name: models.load_model(runs.resolve_run(name) / runs.MODEL_FILE) for name in names}

    images, labels, kinds, seconds, conversions, facing_right = [], [], [], [], [], []
    for b, background in enumerate(photo_render.BACKGROUNDS):
        for k, i in enumerate(index):
            jpeg = photo_render.render(ds.x_test[i], background, seed=100_000 * b + k, shading=args.shading)
            started = time.perf_counter()
            _, conversion = photos.convert_upload(jpeg, segment=not args.no_segment)
            seconds.append(time.perf_counter() - started)
            images.append(conversion.image)
            facing_right.append(photos.convert_upload(mirrored_jpeg(jpeg), segment=not args.no_segment)[1])
            conversions.append(conversion)
            labels.append(int(ds.y_test[i]))
            kinds.append(background)
    ood, ood_conversions = [], []
    for k, kind in enumerate(photo_render.OUT_OF_CLASS * (args.per_class * 2)):
        _, conversion = photos.convert_upload(
            photo_render.not_clothes(kind, seed=k), segment=not args.no_segment
        )
        ood.append(conversion.image)
        ood_conversions.append(conversion)
    x = np.stack(images)[..., None]
    labels, kinds = np.array(labels), np.array(kinds)
    grid = f"{args.per_class} per class × {len(photo_render.BACKGROUNDS)} backgrounds, {args.shading} shading"
    print(
        f"{len(images)} rendered product photos ({grid}) and {len(ood)} pictures of other things; "
        f"conversion median {1000 * statistics.median(seconds):.0f} ms, slowest {1000 * max(seconds):.0f} ms"
        + (" (no GrabCut)" if args.no_segment else "")
    )
    for name, model in loaded.items():
        folder = runs.resolve_run(name)
        stats = confidence.of_model(model, folder / runs.MODEL_FILE, ds)
        features_of = confidence.with_features(model, stats.layer)
        probs, distances, flipped = as_the_app_answers(features_of, stats, x, conversions)
        right = probs.argmax(1) == labels
        plain_right = predict(model, x, batch_size=256).argmax(1) == labels
        x_right = np.stack([c.image for c in facing_right])[..., None]
        right_facing = as_the_app_answers(features_of, stats, x_right, facing_right)[0].argmax(1) == labels
        plain_right_facing = predict(model, x_right, batch_size=256).argmax(1) == labels
        verdicts = [
            confidence.decide(p, c, d, stats) for p, c, d in zip(probs, conversions, distances, strict=True)
        ]
        sure = np.array([v.sure for v in verdicts])
        x_ood = np.stack(ood)[..., None]
        ood_probs, ood_distances, _ = as_the_app_answers(features_of, stats, x_ood, ood_conversions)
        ood_sure = np.array(
            [
                confidence.decide(p, c, d, stats).sure
                for p, c, d in zip(ood_probs, ood_conversions, ood_distances, strict=True)
            ]
        )
        natural = ds.x_test[index][..., None]
        natural_sure = np.array(
            [
                confidence.decide(p, None, d, stats).sure
                for p, d in zip(
                    predict(model, natural),
                    stats.distances(confidence.features(features_of, natural)),
                    strict=True,
                )
            ]
        )

        def by_bg(right: np.ndarray) -> str:
            return ", ".join(f"{bg} {np.mean(right[kinds == bg]):.1%}" for bg in photo_render.BACKGROUNDS)

        shoes = np.isin(labels, SHOES)
        rule = "each photo the way round it is surer of" if stats.mirror else "photos as they are"
        print(f"\n== {runs.read_folder(folder).label}")
        print(
            f"   as the app answers ({rule}: mirror images cost {100 * stats.mirror_cost:.1f} points on "
            f"held-out images; {np.mean(flipped):.0%} of the photos mirrored)"
        )
        print(
            f"   accuracy on rendered photos: {np.mean(right):.1%} ({by_bg(right)});",
            f"shoes {np.mean(right[shoes]):.1%}",
        )
        print(
            f"   the same photos mirrored (products facing right): {np.mean(right_facing):.1%} "
            f"({by_bg(right_facing)}); shoes {np.mean(right_facing[shoes]):.1%}"
        )
        if stats.mirror:
            print(
                f"   without trying mirror images: {np.mean(plain_right):.1%} ({by_bg(plain_right)}); "
                f"mirrored photos {np.mean(plain_right_facing):.1%}, their shoes "
                f"{np.mean(plain_right_facing[shoes]):.1%}"
            )
        print(
            f"   'not sure' on product photos: {np.mean(~sure):.1%} (of the right answers "
            f"{np.mean(~sure[right]):.1%}, of the wrong ones {np.mean(~sure[~right]):.1%}); accuracy when "
            f"sure {np.mean(right[sure]) if sure.any() else float('nan'):.1%}"
        )
        for mirror in (False, True):  # test-time augmentation: probabilities averaged over the views
            averaged = np.mean([predict(model, v, batch_size=256) for v in shifted_views(x, mirror)], axis=0)
            tta_right = averaged.argmax(1) == labels
            views = "1-px shifts and their mirror images" if mirror else "1-px shifts"
            print(f"   with test-time augmentation ({views}): {np.mean(tta_right):.1%} ({by_bg(tta_right)})")
        print(f"   'not sure' on things that are not clothes: {np.mean(~ood_sure):.1%}")
        print(f"   'not sure' on the same test images as they are (no photo): {np.mean(~natural_sure):.1%}")


if __name__ == "__main__":
    main()
