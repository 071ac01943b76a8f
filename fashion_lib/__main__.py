"""Command line: ``python -m fashion_lib <command>``; each command is a thin layer over a library function."""

from __future__ import annotations

import argparse
import sys

from fashion_lib import config, data


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fashion_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="find, verify and summarise the dataset")
    p.add_argument("--no-download", action="store_true", help="never download; fail if no local copy")
    p.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
