"""Command line: ``python -m fashion_lib <command>``; each command is a thin layer over a library function."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import signal
import sys
import time
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

    try:
        if value.strip().startswith("{"):
            return augment.AugmentConfig.from_json(value)
        return augment.load_preset(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not a JSON object of augmentation settings ({exc})") from exc
    except (ValueError, TypeError, OSError) as exc:  # argparse would replace a ValueError's reason
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _number_in(kind, low: float, high: float):
    """An argparse type: a number of ``kind`` from ``low`` to ``high`` (NaN and infinity refused)."""

    def parse(value: str):
        number = kind(value)
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low:g} and {high:g}")
        return number

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid ... value" message
    return parse


def _optional_float(value: str) -> float | None:
    return None if value.strip().lower() in ("", "none", "default") else float(value)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (``--input-size`` for ``input_size``), defaults from the dataclass."""
    from fashion_lib import augment, models
    from fashion_lib.training import config as training_config

    choices = {
        "model": models.MODEL_NAMES,
        "optimizer": training_config.OPTIMIZERS,
        "interpolation": models.INTERPOLATIONS,
        "lr_schedule": training_config.LR_SCHEDULES,
        "input_scaling": training_config.INPUT_SCALINGS,
    }
    types = {
        "dropout": _optional_float,
        "conv_filters": training_config.parse_filters,
        "teachers": training_config.parse_names,
    }
    for f in dataclasses.fields(training_config.TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = types.get(f.name, type(default))
        if default == ():  # an empty list: shown as "(default: None)", left to the dataclass
            default = None
        help_text = training_config.FIELD_HELP.get(f.name)
        if f.name == "augment":
            parser.add_argument(
                flag,
                type=_augment_arg,
                default=None,
                help="augmentation preset name, or JSON of any of "
                + ", ".join(f.name for f in dataclasses.fields(augment.AugmentConfig))
                + ' (e.g. \'{"rotation": 0.05, "erasing": 0.5}\')',
            )
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(
                flag,
                type=kind,
                default=default,
                choices=choices.get(f.name),
                help=help_text,
            )


def config_from_args(args: argparse.Namespace):
    from fashion_lib.training import TrainConfig

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    for name in ("augment", "teachers"):  # not given: the dataclass's default
        if values[name] is None:
            del values[name]
    return TrainConfig(**values)


def _say_waiting(active) -> None:
    name = active.name if active else "another job"
    print(f"{name} is running on this machine; waiting for it to finish (status: queued)…", flush=True)


class _StoppedWhileQueued(Exception):
    """SIGTERM arrived while the run waited for the machine."""


def _stop_while_queued() -> None:
    """Until training starts, SIGTERM (the Stop button) ends the waiting process; the run ends 'stopped'."""

    def handler(signum, frame):
        raise _StoppedWhileQueued

    signal.signal(signal.SIGTERM, handler)


def _as_job(args: argparse.Namespace, kind: str, prepare, work, new: bool = False):
    """What every job command shares: the run (or tuning job) folder from ``prepare(me)``, the machine's
    lock — handed over by a launcher, or waited for — then ``work(folder, me)``. A stop while it waits for
    the machine ends the folder 'stopped'; a folder made ``new`` by this command and refused the machine
    (``--no-wait``) is removed: it never ran, and was listed as a stopped run to resume. Returns (folder,
    what ``work`` returned, or None when it was stopped before it began)."""
    from fashion_lib import jobs, lifecycle, processes

    me = processes.current()
    _stop_while_queued()  # first: a stop may come as soon as the launcher has started this process
    folder = None
    try:
        folder = prepare(me)
        with jobs.machine_lock(
            folder, kind=kind, wait=not args.no_wait, on_wait=_say_waiting, inherited_fd=args.lock_fd
        ):
            # From here a stop is a request the work honours (it installs its own handler when it can).
            signal.signal(signal.SIGTERM, lambda signum, frame: lifecycle.request_stop(folder))
            return folder, work(folder, me)
    except (_StoppedWhileQueued, jobs.JobBusyError) as exc:
        if folder is not None and new and isinstance(exc, jobs.JobBusyError):
            shutil.rmtree(folder, ignore_errors=True)
        elif folder is not None:
            lifecycle.transition(folder, lifecycle.STOPPED, by=me, finished=time.time())
            (folder / lifecycle.STOP_FILE).unlink(missing_ok=True)
        if isinstance(exc, jobs.JobBusyError):
            raise
        print(f"stopped before it started: {folder or args.run_dir}")
        return folder, None


def _prepare_run(args: argparse.Namespace, me) -> Path:
    """The run folder this command trains: handed over by a launcher, resumed, or new."""
    from fashion_lib import export, lifecycle
    from fashion_lib.training import TrainConfig, engine

    if args.run_dir and args.token:
        lifecycle.claim(args.run_dir, args.token, me)
        return args.run_dir
    if args.resume or args.run_dir:
        folder = args.run_dir or runs.resolve_run(args.resume)
        if lifecycle.effective_state(folder) == lifecycle.COMPLETED:
            raise lifecycle.RunStateError(
                f"run {folder.name} is completed and cannot be resumed; to train it again as a new run: "
                f"python -m fashion_lib train --again {folder.name}"
            )
        lifecycle.transition(folder, lifecycle.QUEUED, by=me)  # take over a stopped/failed/interrupted run
        return folder
    cfg = TrainConfig.from_run(runs.resolve_run(args.again)) if args.again else config_from_args(args)
    folder = engine.start_run(cfg)
    command = "python -m fashion_lib " + shlex.join(sys.argv[1:])  # for the model card of a shipped model
    (folder / export.COMMAND_FILE).write_text(command + "\n")
    return folder


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model; print the run folder at the end."""
    from fashion_lib import jobs, lifecycle, models
    from fashion_lib.training import engine

    try:
        folder, result = _as_job(
            args,
            "train",
            lambda me: _prepare_run(args, me),
            lambda f, me: engine.train(run_dir=f),
            new=not (args.run_dir or args.resume),
        )
    except (
        ValueError,
        FileNotFoundError,
        models.WeightsUnavailableError,
        data.FashionDataError,
        jobs.JobBusyError,
        lifecycle.RunStateError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # the run is 'failed' with this reason (e.g. a photo worker was killed)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result is None:
        return 0
    summary = runs.read_json(folder / runs.SUMMARY_FILE) or {}
    print(f"\nstatus: {lifecycle.effective_state(folder)}")
    if "test_accuracy" in summary:
        print(
            f"test accuracy {summary['test_accuracy']:.4f}, macro-F1 {summary['macro_f1']:.4f}, "
            f"run time {summary['wall_seconds']:.1f} s, weights: {summary['weights']}"
        )
    elif "validation_accuracy" in summary:
        print(f"validation accuracy {summary['validation_accuracy']:.4f} (no test-set evaluation)")
    for stage, counts in summary.get("parameters", {}).items():
        print(
            f"{stage} parameters: total {counts['total']:,}, trainable {counts['trainable']:,} "
            f"(backbone trainable {counts['backbone_trainable']:,})"
        )
    print(f"run folder: {folder}")
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    """Copy a completed run into cached_models/NAME with its model card."""
    from fashion_lib import confidence, export

    try:
        target = export.ship_run(runs.resolve_run(args.run), args.name)
    except (ValueError, OSError) as exc:  # OSError: a file in the way, a full disk
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"shipped to {target}")
    if not (target / confidence.FAMILIARITY_FILE).is_file():
        print(
            "note: shipped without its familiarity statistics (no Fashion-MNIST found here to make them "
            "from): ship it again where the dataset is, or its first photo will make them",
            file=sys.stderr,
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a run or shipped model (.keras, SavedModel, card) into a folder, each format checked."""
    from fashion_lib import export

    try:
        folder = export.resolve_model(args.run)
        result = export.export_model(folder, args.to, args.format, version=args.savedmodel_version)
    except (ValueError, OSError) as exc:  # OSError: a file in the way, a full disk
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for check in result.checks:
        print(
            f"{export.FORMAT_LABELS[check.format]:<36} {check.path}  "
            f"(reloaded: largest difference {check.max_difference:.1e} on {check.images} images)"
        )
    print(f"{'model card':<36} {result.folder / runs.CARD_FILE}, {result.folder / export.CARD_MARKDOWN}")
    kept = result.card["export"]["familiarity_statistics"]
    if kept:
        print(f"{'familiarity statistics':<36} {result.folder / kept}")
    elif export.KERAS in result.card["export"]["formats"]:
        print(
            "note: exported without its familiarity statistics (no Fashion-MNIST found here to make them "
            "from, and none kept for this model): the service's 'not sure' rule will use the confidence and "
            "the photo conversion only; export again where the dataset is",
            file=sys.stderr,
        )
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
    """List runs (newest first) and shipped models, with their effective state; damaged ones say why."""
    from fashion_lib import jobs

    found = runs.list_runs()
    if not found:
        print(f"no runs yet under {config.runs_dir()}")
    for info in found:
        acc = f"{info.test_accuracy:.4f}" if info.test_accuracy is not None else "-"
        state = "shipped" if info.shipped else info.state
        if info.damaged:
            state = "damaged"
        print(f"{info.run_id:<48} {info.model:<16} {state:<11} {acc:>7}  {info.folder}")
        for problem in info.problems:
            print(f"    ! {problem}")
        if info.state == "interrupted" and info.detail:
            print(f"    ({info.detail}; resume with: python -m fashion_lib train --resume {info.run_id})")
        if info.state == "failed":
            reason = info.error or "no reason recorded"
            print(f"    (failed: {reason}; its log: {info.folder / jobs.LOG_FILE})")
    return 0


def _setting(text: str) -> tuple[str, object]:
    """'name=value' → (name, value); numbers and true/false as such, anything else as text."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected name=value, got '{text}'")
    try:
        return name.strip(), json.loads(value)
    except ValueError:
        return name.strip(), value.strip()


def _tune_config(args: argparse.Namespace):
    from fashion_lib.tuning.config import TuneConfig

    return TuneConfig(
        study=args.study or "",
        model=args.model,
        trials=args.trials,
        timeout=args.timeout,
        subset=args.subset,
        epochs=args.epochs,
        val_fraction=args.val_fraction,
        pruner=args.pruner,
        workers=args.workers,
        seed=args.seed,
        defaults_first=not args.no_defaults_first,
        fixed=dict(args.fix or []),
        ranges={name: str(value) for name, value in args.range or []},
    )


def cmd_tune(args: argparse.Namespace) -> int:
    """Search hyperparameters into a study (new or resumed); one progress line per finished trial."""
    from fashion_lib import jobs, lifecycle
    from fashion_lib.tuning import search
    from fashion_lib.tuning.storage import TuningStoreError

    if args.worker is not None:
        return search.run_worker(args.run_dir, args.worker, args.heartbeat, args.coordinator)

    def prepare(me):
        if args.run_dir and args.token:
            lifecycle.claim(args.run_dir, args.token, me)
            return args.run_dir
        tc = _tune_config(args)
        try:
            return search.create_job(tc)
        except OSError as exc:  # FASHION_HOME's tuning folder cannot be written
            raise ValueError(f"cannot write the search's job folder: {exc}") from None

    def work(job, me):
        return search.run_job(job, me, lambda line: print(line, flush=True), args.heartbeat)

    try:
        job, state = _as_job(args, "tune", prepare, work, new=not args.run_dir)
    except (ValueError, TuningStoreError, lifecycle.RunStateError, jobs.JobBusyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a worker died; the job is 'failed' with this reason
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if state is None:
        return 0
    print(f"status: {state}\njob folder: {job}")
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    """List the studies in the tuning database, or one study's trials."""
    from fashion_lib.tuning import results, search, storage

    try:
        store = storage.open_store(wait_s=storage.READ_WAIT_S)
        if not args.study:
            found = storage.study_summaries(store)
            if not found:
                print(f"no studies yet in {storage.redacted(store.url)}")
            for s in found:
                best = f"{s.best_value:.4f} (trial {s.best_trial})" if s.best_value is not None else "-"
                trials = "?" if s.trials is None else s.trials  # its trials cannot be read
                print(f"{s.name:<32} {s.model or '?':<16} {trials:>4} trials  best {best}")
            return 0
        study = storage.load_study(store, args.study)
        search.fail_stale(study)  # a trial whose worker died reads failed here too, as on the page
        table = storage.guarded(store, results.trial_table, study)
    except (storage.TuningStoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table.to_string(index=False) if len(table) else f"study '{args.study}' has no trial yet")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the technical report (HTML and Markdown) from saved artifacts; nothing is retrained."""
    from fashion_lib import report
    from fashion_lib.tuning.storage import TuningStoreError

    try:
        if not args.out.strip():  # Path("") is the current folder: it wrote into the checkout
            raise ValueError("--out needs a folder to write the report into")
        names = list(dict.fromkeys(n.strip() for n in (args.runs or "").split(",") if n.strip()))  # once each
        infos = report.resolve_runs(names) if names else report.default_runs()
        if args.study:  # an unknown study was a "not run" box and exit status 0; an unknown run was refused
            from fashion_lib.tuning import storage

            storage.load_study(storage.open_store(wait_s=storage.READ_WAIT_S), args.study)
        built = report.build(infos, args.study)
        paths = report.write(built, Path(args.out))
    except (ValueError, FileNotFoundError, data.FashionDataError, TuningStoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report on {', '.join(built.runs) or 'no run'} built in {built.seconds:.1f} s")
    for kind, path in paths.items():
        print(f"{kind}: {path}")
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
    p.add_argument(
        "--resume", metavar="RUN", help="continue a stopped, failed or interrupted run (id or folder)"
    )
    p.add_argument("--again", metavar="RUN", help="train a new run with the same settings as RUN")
    p.add_argument("--no-wait", action="store_true", help="fail instead of waiting while another job runs")
    p.add_argument("--token", help=argparse.SUPPRESS)  # from the launcher (jobs.start): claims --run-dir
    p.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)  # the machine lock, taken by the launcher
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
    p.add_argument("--port", type=_number_in(int, 0, 65535), default=serve.DEFAULT_PORT)
    p.add_argument(
        "--batch-window-ms",
        type=_number_in(float, 0, 1000),  # a window of 1e9 ms left every request waiting
        default=inference.BATCH_WINDOW_MS,
        help="how long a request waits for others to share one forward pass",
    )
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("runs", help="list runs and shipped models")
    p.set_defaults(func=cmd_runs)

    from fashion_lib import models
    from fashion_lib.tuning.config import PRUNERS, TuneConfig
    from fashion_lib.tuning.storage import HEARTBEAT_S

    defaults = TuneConfig(study="x")
    p = sub.add_parser(
        "tune",
        help="search hyperparameters with Optuna (a study in FASHION_TUNING_DB; the same name adds trials)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--study", help="study name (created when new, continued when it exists)")
    p.add_argument("--model", choices=models.MODEL_NAMES, default=defaults.model)
    p.add_argument("--trials", type=int, default=defaults.trials, help="trials to add")
    p.add_argument("--timeout", type=float, default=defaults.timeout, help="seconds; 0 = no limit")
    p.add_argument("--subset", type=int, default=defaults.subset, help="balanced training images per trial")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    p.add_argument("--pruner", choices=PRUNERS, default=defaults.pruner)
    p.add_argument("--workers", type=int, default=defaults.workers, help="worker processes on this machine")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument(
        "--no-defaults-first",
        action="store_true",
        help="a new study's trial 0 is not the default configuration (by default it is: the reference)",
    )
    p.add_argument(
        "--fix",
        type=_setting,
        action="append",
        metavar="NAME=VALUE",
        help="fix a search parameter or any training setting, e.g. dropout=0.2 or optimizer=adamw",
    )
    p.add_argument(
        "--range",
        type=_setting,
        action="append",
        metavar="NAME=LOW:HIGH",
        help="narrow a range (learning_rate=0.001:0.005) or the choices (batch_size=64,128)",
    )
    p.add_argument("--heartbeat", type=int, default=HEARTBEAT_S, help=argparse.SUPPRESS)
    p.add_argument("--no-wait", action="store_true", help="fail instead of waiting while another job runs")
    p.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)  # a job folder from the launcher
    p.add_argument("--token", help=argparse.SUPPRESS)
    p.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # internal: one worker of --run-dir
    p.add_argument("--coordinator", type=int, help=argparse.SUPPRESS)  # internal: the worker's search's pid
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("report", help="write the technical report from the saved runs (and a tuning study)")
    p.add_argument(
        "--runs", help="run ids or shipped names, comma-separated (default: shipped + best of each)"
    )
    p.add_argument("--study", help="a tuning study to include")
    p.add_argument("--out", default="report", help="folder for report.html and the zip")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("studies", help="list the studies in the tuning database, or one study's trials")
    p.add_argument("--study", help="show this study's trials")
    p.set_defaults(func=cmd_studies)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def _run() -> int:
    """``main`` for the shell: output piped into a reader that stops early (``runs | head``) ends quietly,
    as other command-line tools do, instead of with a BrokenPipeError traceback."""
    try:
        code = main()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit must not fail
        return 1


if __name__ == "__main__":
    sys.exit(_run())
