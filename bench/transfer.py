"""EfficientNetB0 and MobileNetV2 transfer at the CPU default input size: feature-extraction time,
head-training time and test accuracy, with and without the frozen-feature cache; peak memory at 224 px.

Uses the weights folder (FASHION_WEIGHTS_DIR) when it holds ImageNet weights, else random initialisation,
and labels every line with what was used. Run: python -m bench.transfer [--subset N] [--input-size S]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys

from bench.common import peak_memory_mb, train_and_report
from fashion_lib import config, models, train
from fashion_lib.training.feature_cache import feature_cache_key

MEMORY_BATCHES = (32, 128)  # peak memory does not grow with the number of images, only with the batch

PEAK_MEMORY_SNIPPET = """
from bench.common import peak_memory_mb
from fashion_lib import train
cfg = train.TrainConfig(model={model!r}, input_size=224, weights={weights!r}, subset=600, test_subset=200,
                        epochs=1, batch_size={batch}, feature_cache=False, fine_tune=True,
                        fine_tune_layers={layers}, fine_tune_epochs=1)
train.train(cfg)
print(peak_memory_mb())
"""


def weights_for(model: str) -> str:
    try:
        resolved = models.resolve_weights(model, "imagenet")
    except models.WeightsUnavailableError:
        return "none"
    return "imagenet" if resolved.path is not None else "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subset", type=int, default=10000)
    parser.add_argument("--input-size", type=int, default=models.DEFAULT_INPUT_SIZE)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=list(models.TRANSFER_MODELS))
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory runs at 224 px")
    parser.add_argument("--memory-batches", type=int, nargs="+", default=list(MEMORY_BATCHES))
    parser.add_argument(
        "--fine-tune-layers", type=int, default=30, help="memory runs: top layers unfrozen (300 = all)"
    )
    args = parser.parse_args()

    for model in [] if args.memory_only else args.models:
        weights = weights_for(model)
        base = train.TrainConfig(
            model=model,
            weights=weights,
            input_size=args.input_size,
            subset=args.subset,
            epochs=args.epochs,
            early_stopping_patience=0,
        )
        key = feature_cache_key(base, models.resolve_weights(model, weights))
        shutil.rmtree(config.cache_dir() / "features" / key, ignore_errors=True)
        cold = train_and_report(base, f"{model}: feature cache, cold (extract + head)")
        warm = train_and_report(base, f"{model}: feature cache, warm (head only)")
        plain = train_and_report(
            train.TrainConfig(**{**base.to_dict(), "feature_cache": False}),
            f"{model}: no feature cache (frozen backbone run every epoch)",
        )
        print(
            f"\n-- {model} ({cold['weights']}), {args.input_size} px, {cold['training_images']} images, "
            f"{args.epochs} epochs"
        )
        extraction, head = cold["feature_extraction_seconds"], cold["head_training_seconds"]
        print(f"   stage 1 with cache, cold: {cold['stage1_seconds']:.1f} s", end=" ")
        print(f"(extraction {extraction:.1f} s + head {head:.1f} s)")
        print(f"   stage 1 with cache, warm: {warm['stage1_seconds']:.1f} s")
        print(f"   stage 1 without cache:    {plain['stage1_seconds']:.1f} s")
        print(
            f"   test accuracy: cache {cold['test_accuracy']:.4f} / {warm['test_accuracy']:.4f}, "
            f"no cache {plain['test_accuracy']:.4f}"
        )

    if not args.skip_memory:
        for model, batch in itertools.product(args.models, args.memory_batches):
            snippet = PEAK_MEMORY_SNIPPET.format(
                model=model, weights=weights_for(model), batch=batch, layers=args.fine_tune_layers
            )
            out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True)
            what = f"{model} at 224 px (fine-tuning the top {args.fine_tune_layers} layers, batch {batch})"
            if out.returncode != 0:
                print(f"\n-- {what}: the process died (exit {out.returncode}; -9 is an out-of-memory kill)")
                continue
            peak_mb = float(out.stdout.strip().splitlines()[-1])
            print(f"\n-- {what}: peak memory {peak_mb:.0f} MB", flush=True)
    print(f"\n(this process: peak {peak_memory_mb():.0f} MB)")


if __name__ == "__main__":
    main()
