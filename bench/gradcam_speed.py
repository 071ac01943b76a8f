"""Grad-CAM speed per photo, warm (models loaded once per process, as the page does).

Targets: predict + Grad-CAM ≤ 150 ms per photo for the baseline and ≤ 400 ms for EfficientNetB0 at the CPU
default input size (96 px). Also prints the photo-conversion time. Run: python -m bench.gradcam_speed
"""

from __future__ import annotations

import statistics
import time

from fashion_lib import config, explain, models, photos
from tests.unit.test_photos import encode, silhouette

REPEATS = 15


def per_call_ms(fn) -> float:
    fn()  # warm-up: graph tracing, first allocation
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    upload = encode(silhouette(h=1200, w=1600, box=(900, 200, 1300, 1000)), "JPEG")
    conversion_ms = per_call_ms(lambda: photos.convert_upload(upload))
    image = photos.convert_upload(upload)[1].image[None, ..., None]
    baseline = models.load_model(config.CACHED_MODELS_DIR / "baseline" / "model.keras")
    effnet = models.build_model(models.EFFICIENTNET_B0, models.DEFAULT_INPUT_SIZE, "none")
    print(f"photo validation + conversion (1600×1200 JPEG, GrabCut): {conversion_ms:7.1f} ms")
    for name, model, target in (("baseline CNN", baseline, 150), ("EfficientNetB0 @ 96 px", effnet, 400)):
        ms = per_call_ms(lambda m=model: explain.gradcam(m, image))
        print(f"{name:<24} predict + Grad-CAM: {ms:7.1f} ms per photo (target ≤ {target} ms)")


if __name__ == "__main__":
    main()
