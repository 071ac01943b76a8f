"""Grad-CAM speed per photo, warm (models loaded once per process, as the page does).

Targets: predict + Grad-CAM ≤ 150 ms per photo for the baseline and ≤ 400 ms for EfficientNetB0 at the CPU
default input size (96 px) and for the shipped MobileNetV2; the conversion of a 12-megapixel JPEG ≤ 300 ms,
and no upload the validation accepts costing more than 500 MB (both measured in a fresh process).
Run: python -m bench.gradcam_speed
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time

import cv2

from fashion_lib import config, explain, models, photos
from tests.unit.test_photos import MEMORY_PROBE, encode, jpeg_claiming, silhouette

REPEATS = 15


def per_call_ms(fn) -> float:
    fn()  # warm-up: graph tracing, first allocation
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def fresh_process(payload: bytes) -> tuple[float, float]:
    """(extra MB at the peak, seconds) to convert ``payload`` in a new process (tests.unit.test_photos)."""
    with tempfile.NamedTemporaryFile(suffix=".jpg") as f:
        f.write(payload)
        f.flush()
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, f.name],
            capture_output=True,
            text=True,
            check=True,
            cwd=config.REPO_ROOT,
        )
    extra, seconds = map(float, out.stdout.split())
    return extra, seconds


def main() -> None:
    photo = cv2.resize(silhouette(h=300, w=400, box=(150, 50, 250, 250)), (4000, 3000))
    twelve = encode(photo, "JPEG", quality=90)
    print(
        f"12-megapixel JPEG ({len(twelve) / 1e6:.1f} MB), warm:                 "
        f"{per_call_ms(lambda: photos.convert_upload(twelve)):7.1f} ms (target ≤ 300 ms)"
    )
    for label, payload in (
        ("12-megapixel JPEG", twelve),
        ("JPEG header claiming 6324 × 6324", jpeg_claiming(6324)),
    ):
        extra, seconds = fresh_process(payload)
        print(
            f"{label:<34} fresh process: {1000 * seconds:6.0f} ms, {extra:5.0f} MB more at the peak (≤ 500)"
        )
    upload = encode(silhouette(h=1200, w=1600, box=(900, 200, 1300, 1000)), "JPEG")
    conversion_ms = per_call_ms(lambda: photos.convert_upload(upload))
    image = photos.convert_upload(upload)[1].image[None, ..., None]
    baseline = models.load_model(config.CACHED_MODELS_DIR / "baseline" / "model.keras")
    effnet = models.build_model(models.EFFICIENTNET_B0, models.DEFAULT_INPUT_SIZE, "none")
    mobilenet = models.load_model(config.CACHED_MODELS_DIR / "mobilenet_v2" / "model.keras")
    print(f"photo validation + conversion (1600×1200 JPEG, GrabCut): {conversion_ms:7.1f} ms")
    for name, model, target in (
        ("baseline CNN", baseline, 150),
        ("EfficientNetB0 @ 96 px", effnet, 400),
        ("MobileNetV2 shipped", mobilenet, 400),
    ):
        ms = per_call_ms(lambda m=model: explain.gradcam(m, image))
        layer = explain.gradcam(model, image).layer
        print(f"{name:<24} predict + Grad-CAM: {ms:7.1f} ms per photo (target ≤ {target} ms; {layer})")


if __name__ == "__main__":
    main()
