"""Command line: ``python -m fashion_lib <command>``; each command is a thin layer over a library function."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from fashion_lib import config, data, runs


def cmd_data(args: argparse.Namespace) -> int:
    """Print where the data came from, the counts per class and whether the checks passed."""
    try:
        ds = data.load(allow_download=not args.no_download)
    except data.FashionDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    src = ds.source
    print(f"Source:   {src.description}")
    print(f"Folder:   {src.folder}")
    print(f"Loaded in {src.load_seconds:.2f} s")
    for check in src.files:
        original = "original bytes (MD5 matches Zalando's)" if check.original_bytes else "repacked bytes"
        print(f"  {check.name:<28} content {'OK' if check.content_ok else 'BAD'}; {original}")
    print(f"\n{'class':<14}{'train':>8}{'test':>8}")
    for name, n_train, n_test in zip(
        config.CLASS_NAMES, ds.class_counts("train"), ds.class_counts("test"), strict=True
    ):
        print(f"{name:<14}{n_train:>8}{n_test:>8}")
    print(f"{'total':<14}{len(ds.y_train):>8}{len(ds.y_test):>8}")
    verdict = "PASSED" if src.verified else "FAILED"
    print(
        f"\nChecks {verdict}: IDX headers, shapes and decoded checksums"
        f"{'; bytes identical to the originals' if src.byte_identical else ''}. Fingerprint {src.fingerprint}"
    )
    return 0 if src.verified else 1


def _augment_arg(value: str):
    """An augmentation preset name, or a JSON object of AugmentConfig fields."""
    from fashion_lib import augment

    if value.strip().startswith("{"):
        return augment.AugmentConfig.from_json(value)
    return augment.load_preset(value)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (``--input-size`` for ``input_size``), defaults from the dataclass."""
    from fashion_lib import models, train

    choices = {
        "model": models.MODEL_NAMES,
        "optimizer": train.OPTIMIZERS,
        "interpolation": models.INTERPOLATIONS,
        "lr_schedule": ("plateau", "cosine", "constant"),
        "input_scaling": train.INPUT_SCALINGS,
    }
    for f in dataclasses.fields(train.TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.name == "augment":
            parser.add_argument(
                flag,
                type=_augment_arg,
                default=None,
                help="augmentation preset name or JSON, e.g. '{\"rotation\": 0.05}'",
            )
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(
                flag,
                type=type(default),
                default=default,
                choices=choices.get(f.name),
                help=train.FIELD_HELP.get(f.name),
            )


def config_from_args(args: argparse.Namespace):
    from fashion_lib import train

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(train.TrainConfig)}
    if values["augment"] is None:
        del values["augment"]
    return train.TrainConfig(**values)


def _say_waiting(active) -> None:
    name = active.name if active else "another run"
    print(f"{name} is training on this machine; waiting for it to finish (status: queued)…", flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model; print the run folder at the end."""
    from fashion_lib import export, jobs, models, train

    try:
        if args.resume:
            folder = runs.resolve_run(args.resume)
            with jobs.training_lock(folder, wait=not args.no_wait, on_wait=_say_waiting):
                folder = train.train(run_dir=folder)
        else:
            cfg = config_from_args(args)
            folder = args.run_dir or train.start_run(cfg)
            if not args.run_dir:  # the exact command, for the model card of a shipped model
                command = "python -m fashion_lib " + shlex.join(sys.argv[1:])
                (folder / export.COMMAND_FILE).write_text(command + "\n")
            with jobs.training_lock(folder, wait=not args.no_wait, on_wait=_say_waiting):
                folder = train.train(run_dir=folder)
    except (
        ValueError,
        FileNotFoundError,
        models.WeightsUnavailableError,
        data.FashionDataError,
        jobs.JobBusyError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = runs.read_json(folder / runs.SUMMARY_FILE) or {}
    status = runs.read_status(folder)
    print(f"\nstatus: {status['state']}")
    if "test_accuracy" in summary:
        print(
            f"test accuracy {summary['test_accuracy']:.4f}, macro-F1 {summary['macro_f1']:.4f}, "
            f"wall time {summary['wall_seconds']:.1f} s, weights: {summary['weights']}"
        )
    for stage, counts in summary.get("parameters", {}).items():
        print(
            f"{stage} parameters: total {counts['total']:,}, trainable {counts['trainable']:,} "
            f"(backbone trainable {counts['backbone_trainable']:,})"
        )
    print(f"run folder: {folder}")
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    """Copy a completed run into cached_models/NAME with its model card."""
    from fashion_lib import export

    try:
        target = export.ship_run(runs.resolve_run(args.run), args.name)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"shipped to {target}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a run or shipped model (.keras, SavedModel, card) into a folder, each format checked."""
    from fashion_lib import export

    try:
        folder = export.resolve_model(args.run)
        result = export.export_model(folder, args.to, args.format, version=args.savedmodel_version)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for check in result.checks:
        print(
            f"{export.FORMAT_LABELS[check.format]:<36} {check.path}  "
            f"(reloaded: largest difference {check.max_difference:.1e} on {check.images} images)"
        )
    print(f"{'model card':<36} {result.folder / runs.CARD_FILE}, {result.folder / export.CARD_MARKDOWN}")
    print(f"checked on {result.checked_on}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a model over HTTP until interrupted (Ctrl+C)."""
    from fashion_lib import serve

    try:
        serve.run(args.model, args.host, args.port, args.batch_window_ms, args.access_log)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """List runs (newest first) and shipped models."""
    found = runs.list_runs()
    if not found:
        print(f"no runs yet under {config.runs_dir()}")
    for info in found:
        acc = f"{info.test_accuracy:.4f}" if info.test_accuracy is not None else "-"
        state = "shipped" if info.shipped else info.state
        print(f"{info.run_id:<48} {info.model:<16} {state:<10} {acc:>7}  {info.folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fashion_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="find, verify and summarise the dataset")
    p.add_argument("--no-download", action="store_true", help="never download; fail if no local copy")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser(
        "train",
        help="train a model into a new run folder",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_flags(p)
    p.add_argument("--run-dir", type=Path, help="train into this prepared run folder (config read from it)")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run (id or folder)")
    p.add_argument("--no-wait", action="store_true", help="fail instead of waiting while another run trains")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("ship", help="copy a completed run into cached_models/ with its model card")
    p.add_argument("run", help="run id or folder")
    p.add_argument("--name", default="baseline", help="folder name under cached_models/")
    p.set_defaults(func=cmd_ship)

    from fashion_lib import export, inference, models, serve

    p = sub.add_parser(
        "export",
        help="export a run or shipped model: .keras, TensorFlow SavedModel (TF Serving), model card",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run", metavar="RUN_OR_MODEL", help="run id or folder, or a shipped model's name")
    p.add_argument("--to", type=Path, required=True, metavar="DIR", help="folder to write the export into")
    p.add_argument("--format", default=",".join(export.EXPORT_FORMATS), help="comma-separated formats")
    p.add_argument(
        "--savedmodel-version",
        type=int,
        default=export.SAVEDMODEL_VERSION,
        help="version folder under DIR/savedmodel/ (TF Serving serves the highest)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "serve",
        help="HTTP inference service (FastAPI + uvicorn) for one model",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default=models.BASELINE, help="run id or folder, shipped model, export folder")
    p.add_argument("--host", default=serve.DEFAULT_HOST, help="interface to listen on (loopback: only here)")
    p.add_argument("--port", type=int, default=serve.DEFAULT_PORT)
    p.add_argument(
        "--batch-window-ms",
        type=float,
        default=inference.BATCH_WINDOW_MS,
        help="how long a request waits for others to share one forward pass",
    )
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("runs", help="list runs and shipped models")
    p.set_defaults(func=cmd_runs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
