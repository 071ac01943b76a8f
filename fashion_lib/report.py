"""The final technical report, generated from the artifacts the runs and studies saved — never typed in,
never retrained. Where the original design's claim differs from the measurement, both stand side by side;
where something was not run, its section says so.

``build`` returns a ``Report``: sections of blocks (text, tables, plotly charts, pictures, and "not run"
notes). ``to_html`` writes it as one self-contained HTML file (plotly.js and the pictures embedded, charts
interactive, opens offline); ``markdown_zip`` as Markdown with its pictures. The Report page renders the
same blocks.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fashion_lib import (
    config,
    data,
    evaluate,
    export,
    figures,
    files,
    lifecycle,
    models,
    runs,
    stats,
    wording,
)

SHIRT, PULLOVER = config.CLASS_NAMES.index("Shirt"), config.CLASS_NAMES.index("Pullover")
# What the original, hand-written design report claimed (typed, not measured).
DESIGN_CLAIMS = {
    "test_accuracy": 0.94,
    "shirt_pullover_share": 0.70,
    "shirt_pullover_correlation": 0.85,
}
GRADCAM_EXAMPLES = 3  # correct and wrong test images per model
STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    ".missing{background:#fff4e5;border-left:4px solid #f0a020;padding:8px 12px;margin:1em 0}"
    "img{max-width:100%}figcaption{color:#555;font-size:14px}"
    # a long command wraps instead of widening the whole page (a one-line command made it 3,977 px wide)
    "pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f6f6;padding:8px 12px}"
    "code{overflow-wrap:anywhere}"
)


# ------------------------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Text:
    markdown: str


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass(frozen=True)
class Chart:
    figure: Any  # a plotly figure
    name: str
    caption: str = ""

    def __post_init__(self) -> None:
        # a template of its own: in the app's process plotly's default is Streamlit's, whose placeholder
        # colours and margins only a Streamlit page fills in (the downloaded report drew black bars)
        self.figure.update_layout(template=REPORT_TEMPLATE)


@dataclass(frozen=True)
class Picture:
    png: bytes
    name: str
    caption: str = ""


@dataclass(frozen=True)
class Missing:
    """A section part that was not run: what is missing and how to get it."""

    text: str


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)


@dataclass
class Report:
    title: str
    generated: str
    runs: list[str]
    study: str | None
    sections: list[Section]
    seconds: float = 0.0


# -------------------------------------------------------------------------------------- choosing runs


def default_runs() -> list[runs.RunInfo]:
    """The shipped models and the best completed run of each model family (never a collapsed one)."""
    return runs.default_comparison(runs.comparable_runs())


def resolve_runs(names: list[str]) -> list[runs.RunInfo]:
    """Runs by id, folder or shipped name; ValueError naming one that is missing, damaged or unfinished."""
    out = []
    for name in names:
        folder = runs.resolve_run(name)
        info = runs.read_folder(folder)
        if info is None or info.damaged or info.test_accuracy is None or not info.has_predictions:
            why = "; ".join(info.problems) if info and info.problems else "it has no test-set predictions"
            raise ValueError(f"run '{name}' cannot be reported: {why}")
        out.append(info)
    return out


# ------------------------------------------------------------------------------------------ building


REPORT_TEMPLATE = "plotly_white"


def build(infos: list[runs.RunInfo], study: str | None = None, ds: data.FashionMNIST | None = None) -> Report:
    """The report for ``infos`` (and the tuning study ``study``), read from their saved artifacts."""
    started = time.perf_counter()
    ds = ds or data.load()
    predictions = {r.run_id: evaluate.load_predictions(r.folder) for r in infos}
    shirt_pullover = _correlation(ds)  # the claims and the data section both show it: computed once
    sections = [
        _claims(infos, predictions, shirt_pullover[0]),
        _data_section(ds, shirt_pullover),
        _models_section(infos),
        _curves_section(infos, predictions),
        _errors_section(infos, predictions),
        _gradcam_section(infos, predictions, ds),
        _tuning_section(study),
        _limitations(infos, study),
        _reproduce(infos, study),
    ]
    return Report(
        "Fashion-MNIST classifiers — technical report",
        time.strftime("%Y-%m-%d %H:%M"),
        [r.run_id for r in infos],
        study,
        sections,
        time.perf_counter() - started,
    )


def _shirt_pullover_share(p: evaluate.Predictions) -> float:
    return evaluate.pair_errors(evaluate.confusion_counts(p.labels, p.predicted), SHIRT, PULLOVER).share


def _correlation(ds: data.FashionMNIST) -> tuple[float, str]:
    """Shirt and Pullover's mean-image correlation, and where it stands among the class pairs."""
    corr = stats.mean_image_correlation(stats.class_mean_images(ds.x_train, ds.y_train))
    return stats.pair_correlation(corr, "Shirt", "Pullover"), stats.correlation_rank(
        corr, "Shirt", "Pullover"
    )


def _claims(infos, predictions, correlation: float) -> Section:
    section = Section("The original design's claims against these measurements")
    rows = []
    if infos:
        best = max(infos, key=lambda r: r.test_accuracy)
        rows.append(
            {
                "claim": "test accuracy",
                "the design said": wording.percent(DESIGN_CLAIMS["test_accuracy"], 0),
                "measured": f"{wording.percent(best.test_accuracy)} ({best.label})",
            }
        )
        shares = ", ".join(
            f"{wording.percent(_shirt_pullover_share(predictions[r.run_id]), 1)} ({r.label})" for r in infos
        )
        rows.append(
            {
                "claim": "share of all errors that are Shirt ↔ Pullover",
                "the design said": wording.percent(DESIGN_CLAIMS["shirt_pullover_share"], 0),
                "measured": shares,
            }
        )
    rows.append(
        {
            "claim": "correlation of the Shirt and Pullover mean images",
            "the design said": f"> {DESIGN_CLAIMS['shirt_pullover_correlation']}",
            "measured": f"{correlation:.3f} (training set)",
        }
    )
    rows.append(
        {
            "claim": "Grad-CAM",
            "the design said": "verified",
            "measured": "heatmaps of correct and wrong test images are shown below for each model; they are "
            "pictures to look at, not a verification",
        }
    )
    section.blocks.append(Table(pd.DataFrame(rows)))
    if not infos:
        section.blocks.append(
            Missing("No model was chosen: the accuracy and error claims cannot be checked.")
        )
    return section


def _data_section(ds: data.FashionMNIST, shirt_pullover: tuple[float, str]) -> Section:
    src = ds.source
    section = Section("The data")
    origin = "bytes identical to Zalando's originals (MD5)" if src.byte_identical else "content verified"
    section.blocks.append(
        Text(
            f"{len(ds.y_train):,} training and {len(ds.y_test):,} test images from {src.description} "
            f"(`{src.folder}`), {origin}; fingerprint `{src.fingerprint}`."
        )
    )
    table = stats.class_distribution({"train": ds.y_train, "test": ds.y_test})
    section.blocks.append(Chart(figures.class_distribution_chart(table), "class_balance", "Images per class"))
    for split, labels in (("train", ds.y_train), ("test", ds.y_test)):
        section.blocks.append(Text(stats.balance_verdict(labels).sentence(split)))
    value, rank = shirt_pullover
    section.blocks.append(Text(f"Mean-image correlation of Shirt and Pullover: **{value:.3f}**, {rank}."))
    return section


def _models_section(infos) -> Section:
    section = Section("The models compared")
    if not infos:
        section.blocks.append(Missing("No run was chosen."))
        return section
    rows = []
    for info, row in zip(infos, runs.comparison_table(infos), strict=True):
        rows.append(
            {
                "model": info.label,
                "weights": row["weights"],
                "input px": row["input size"],
                "training images": _count(row["training images"]),
                "parameters": _count(row["parameters"]),
                "run time": wording.duration(row["run time s"]),
                "test accuracy": wording.percent(row["test accuracy"]),
                "macro-F1": f"{row['macro-F1']:.4f}" if row["macro-F1"] is not None else "—",
                "ms / image (batched)": f"{row['latency ms/image (batched)']:.3f}"
                if row["latency ms/image (batched)"] is not None
                else "—",
                "size MB": f"{row['size MB']:.1f}" if row["size MB"] is not None else "—",
                "test images": _count(info.summary.test_images if info.summary else None),
            }
        )
    section.blocks.append(Table(pd.DataFrame(rows), "Every number is read from the run's summary."))
    return section


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _curves_section(infos, predictions) -> Section:
    section = Section("Learning curves and diagnosis")
    for info in infos:
        rows = runs.read_metrics(info.folder)
        if not rows:
            section.blocks.append(Missing(f"{info.label}: no per-epoch metrics were saved."))
            continue
        section.blocks.append(Chart(figures.learning_curves(rows, info.label), f"curves_{info.run_id}"))
        p = predictions[info.run_id]  # "train longer" was the advice for a model that predicts one class
        if evaluate.collapse_report(p.labels, p.probabilities).collapsed:
            collapsed = "no diagnosis: the model has collapsed (see its error analysis)."
            judged = f"{collapsed} {evaluate.COLLAPSE_CAUSES}"
        else:
            judged = evaluate.diagnose_curves(rows).explanation()
        stopped = " It was stopped before its last epoch." if info.state == lifecycle.STOPPED else ""
        section.blocks.append(Text(f"**{info.label}** — {judged}{stopped}"))
    return section


def _errors_section(infos, predictions) -> Section:
    section = Section("Error analysis")
    for info in infos:
        p = predictions[info.run_id]
        cm = evaluate.confusion_counts(p.labels, p.predicted)
        pair = evaluate.pair_errors(cm, SHIRT, PULLOVER)
        correct = ~p.wrong
        ece = evaluate.expected_calibration_error(p.confidence, correct, 10)
        section.blocks.append(Text(f"### {info.label}"))
        section.blocks.append(
            Chart(figures.confusion_matrix_figure(cm, height=520), f"confusion_{info.run_id}")
        )
        section.blocks.append(
            Text(
                f"{pair.all_errors:,} errors on {len(p.labels):,} test images; Shirt → Pullover "
                f"{pair.a_as_b}, Pullover → Shirt {pair.b_as_a}: **{wording.percent(pair.share, 1)}** of all "
                f"errors (the design claimed {wording.percent(DESIGN_CLAIMS['shirt_pullover_share'], 0)}). "
                + evaluate.pair_standing(cm, SHIRT, PULLOVER)
            )
        )
        top = evaluate.most_confused_pairs(cm, 5)
        top["share of all errors"] = top["share of all errors"].map(lambda s: wording.percent(s, 1))
        section.blocks.append(Table(top, "The five most frequent confusions (true → predicted)"))
        section.blocks.append(
            Chart(
                figures.reliability_diagram(
                    evaluate.reliability_bins(p.confidence, correct, 10), ece, len(correct)
                ),
                f"reliability_{info.run_id}",
                f"Calibration: expected calibration error {wording.percent(ece)}. "
                + evaluate.temperature_sentence(info.summary),
            )
        )
        collapse = evaluate.collapse_report(p.labels, p.probabilities)
        if collapse.collapsed:  # its wrong answers say nothing about the labels (the page says the same)
            section.blocks.append(Text(f"**{collapse.sentence()}** Label errors are not judged for it."))
            continue
        issues = evaluate.label_issues(p)
        flagged = issues[issues["flagged"]]
        section.blocks.append(
            Text(
                f"Confident learning (cleanlab) flags **{len(flagged)}** test labels as probably wrong, "
                "judged from this model's probabilities. The five most suspect:"
            )
        )
        shown = flagged.head(5).drop(columns=["position", "flagged"])
        shown["model confidence"] = shown["model confidence"].map(wording.confidence)
        shown["label quality"] = shown["label quality"].map(lambda q: f"{q:.4f}")  # as the page shows it
        section.blocks.append(Table(shown.reset_index(drop=True)))
    if not infos:
        section.blocks.append(Missing("No run was chosen."))
    return section


def _png(image: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    return encoded.tobytes() if ok else b""


def gradcam_examples(model, p: evaluate.Predictions, ds: data.FashionMNIST, n: int = GRADCAM_EXAMPLES):
    """The ``n`` most confident correct and the ``n`` most confidently wrong test images of a model, with
    their Grad-CAM overlays: (one strip picture, a caption per image)."""
    from fashion_lib import explain

    order = np.argsort(-p.confidence, kind="stable")
    right = [i for i in order if not p.wrong[i]][:n]
    wrong = [i for i in order if p.wrong[i]][:n]
    positions = right + wrong
    if not positions:
        return None, []
    images = ds.x_test[p.test_index[positions]]
    cam = explain.gradcam(model, images[..., None])
    tiles = []
    for image, heat in zip(images, cam.heatmaps, strict=True):
        big = np.kron(image, np.ones((4, 4), dtype=np.uint8))
        tiles.append(np.pad(explain.overlay(big, heat), ((4, 4), (4, 4), (0, 0)), constant_values=255))
    names = config.CLASS_NAMES
    captions = [
        f"#{p.test_index[i]}: {'wrong' if p.wrong[i] else 'right'} — true {names[p.labels[i]]}, "
        f"predicted {names[p.predicted[i]]} ({wording.confidence(p.confidence[i])})"
        for i in positions
    ]
    return _png(np.concatenate(tiles, axis=1)), captions


def _gradcam_section(infos, predictions, ds) -> Section:
    from fashion_lib import explain

    side = explain.MIN_AUTOMATIC_SIDE
    section = Section("Grad-CAM examples")
    section.blocks.append(
        Text(
            f"For each model: its {GRADCAM_EXAMPLES} most confident correct and {GRADCAM_EXAMPLES} most "
            "confidently wrong test images, left to right, with Grad-CAM at the automatic layer (the last "
            f"convolution, or the last activation with a map of at least {side}×{side} where that one is "
            "coarser; red: the parts that raised the predicted class most)."
        )
    )
    for info in infos:
        if not info.has_model:
            section.blocks.append(Missing(f"{info.label}: its model file is missing."))
            continue
        try:
            model = models.load_model(info.folder / runs.MODEL_FILE)
            png, captions = gradcam_examples(model, predictions[info.run_id], ds)
        except Exception as exc:  # a model this version of the app cannot explain: say so, go on
            section.blocks.append(Missing(f"{info.label}: Grad-CAM could not be computed ({exc})."))
            continue
        if png is None:
            section.blocks.append(Missing(f"{info.label}: no test predictions to pick examples from."))
            continue
        section.blocks.append(
            Picture(png, f"gradcam_{info.run_id}", f"**{info.label}** — " + "; ".join(captions))
        )
    if not infos:
        section.blocks.append(Missing("No run was chosen."))
    return section


def _tuning_section(study_name: str | None) -> Section:
    section = Section("Hyperparameter tuning")
    if not study_name:
        section.blocks.append(
            Missing(
                "No tuning study was chosen for this report (choose one on the page, or pass --study; run a "
                "search with `python -m fashion_lib tune --study NAME`)."
            )
        )
        return section
    from fashion_lib.tuning import results, storage

    try:
        study = storage.load_study(storage.open_store(wait_s=storage.READ_WAIT_S), study_name)
    except storage.TuningStoreError as exc:
        section.blocks.append(Missing(str(exc)))
        return section
    table = results.trial_table(study)
    counts = table["state"].value_counts().to_dict() if len(table) else {}
    best = results.best_trial(study)
    section.blocks.append(
        Text(
            f"Study **{study_name}**: {len(table)} trials ("
            + ", ".join(f"{n} {state}" for state, n in counts.items())
            + ")."
            + (
                f" Best validation accuracy **{wording.percent(best.value)}** (trial {best.number})."
                if best
                else ""
            )
        )
    )
    if best is None:
        section.blocks.append(Missing("No trial has completed yet."))
        return section
    params = results.final_params(study, best.number)
    section.blocks.append(
        Table(
            pd.DataFrame(
                [{"parameter": k, "value": v} for k, v in params.items()], columns=["parameter", "value"]
            ),
            "Best parameters (searched and fixed)",
        )
        if params
        else Missing(f"Trial {best.number} has no parameters: the study was not made by this app.")
    )
    charts = results.study_figures(study)
    for name in ("Hyperparameter importances", "Optimization history", "Intermediate values"):
        figure = charts[name]
        if isinstance(figure, str):
            section.blocks.append(Missing(f"{name}: {figure}."))
        else:
            section.blocks.append(Chart(figure, name.lower().replace(" ", "_"), name))
    space = results.space_of(study)
    if space:
        section.blocks.append(Table(results.space_table(space), "The search space"))
    return section


def _limitations(infos, study) -> Section:
    notes = []
    families = {r.model for r in infos}
    for family in models.MODEL_NAMES:
        name = models.DISPLAY_NAMES[family]
        if family not in families:
            notes.append(f"{name}: no run of it is in this report.")
        if family in models.TRANSFER_MODELS:
            try:
                found = models.resolve_weights(family, "imagenet").path is not None
            except models.WeightsUnavailableError:
                found = False
            if not found:
                notes.append(
                    f"No local ImageNet weights for {name} on this machine: it can only be trained "
                    "from random initialisation here (results say 'no ImageNet weights')."
                )
    for info in infos:
        s = info.summary
        if s and s.test_images is not None and s.test_images < 10000:
            notes.append(f"{info.label} was evaluated on {s.test_images:,} test images, not all 10,000.")
        if s and s.weights == models.NO_WEIGHTS_LABEL:
            notes.append(f"{info.label} has no ImageNet weights (random initialisation).")
    if not study:
        notes.append("No tuning study is part of this report.")
    notes.append(
        "Accuracy on real product photos is not measured in this report: no labelled set of real photos is "
        "in the repository (one kept outside it for acceptance is quoted in the README, for the baseline "
        "only). "
        "`bench photo_realistic` measures rendered product photos instead."
    )
    return Section("Limitations — what was not run", [Text("\n".join(f"- {n}" for n in notes))])


def _command_of(info: runs.RunInfo) -> str:
    """The command the run was made with (saved by the command line, or a shipped model's card: the same
    words as its README), else the one its settings give."""
    command_file = info.folder / export.COMMAND_FILE
    if command_file.is_file():
        return command_file.read_text().strip()
    card = runs.read_json(info.folder / runs.CARD_FILE) if info.shipped else None
    if isinstance(card, dict) and isinstance(card.get("command"), str) and card["command"].strip():
        return card["command"].strip()
    from fashion_lib.training.config import TrainConfig

    try:
        return TrainConfig.from_dict(info.config or {}).command()
    except (ValueError, TypeError):
        return f"(the settings of {info.run_id} cannot be read)"


def _reproduce(infos, study) -> Section:
    lines = [f"# {info.label}\n{_command_of(info)}" for info in infos]
    if study:
        lines.append(f"# the tuning study\npython -m fashion_lib studies --study {study}")
    names = ",".join(r.run_id for r in infos)
    lines.append(
        "# this report\npython -m fashion_lib report"
        + (f" --runs {names}" if names else "")
        + (f" --study {study}" if study else "")
        + " --out report/"
    )
    return Section("Reproduce every number", [Text("```bash\n" + "\n\n".join(lines) + "\n```")])


# -------------------------------------------------------------------------------------------- output


def _figure_html(figure) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def _markdown_to_html(text: str) -> str:
    """The little Markdown the report writes: ### headings, **bold**, `code`, bullet lists, code blocks."""

    if text.startswith("```"):
        body = text.strip("`").split("\n", 1)[1] if "\n" in text else ""
        return f"<pre><code>{html.escape(body)}</code></pre>"
    out, in_list = [], False
    for line in text.split("\n"):
        escaped = _inline_html(line)
        if escaped.startswith("- ") != in_list:
            out.append("<ul>" if not in_list else "</ul>")
            in_list = not in_list
        if escaped.startswith("### "):
            out.append(f"<h3>{escaped[4:]}</h3>")
        elif in_list:
            out.append(f"<li>{escaped[2:]}</li>")
        elif escaped:
            out.append(f"<p>{escaped}</p>")
    return "\n".join(out + (["</ul>"] if in_list else []))


def _inline_html(line: str) -> str:
    """One line of the report's Markdown as HTML: escaped, with **bold** and `code`."""
    import re

    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(line))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table (missing values as —; pipes in cells escaped)."""

    def cell(value: Any) -> str:
        text = "—" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def to_html(report: Report) -> str:
    """One self-contained HTML file: plotly.js inline once, charts interactive, pictures embedded."""
    from plotly.offline import get_plotlyjs

    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(report.title)}</title>",
        f"<style>{STYLE}</style>",
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
        f"<p>Generated {report.generated} from the saved artifacts of: "
        f"{html.escape(', '.join(report.runs) or 'no run')}"
        + (f"; tuning study {html.escape(report.study)}" if report.study else "")
        + f". Built in {report.seconds:.1f} s, without retraining anything.</p>",
    ]
    for section in report.sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Text):
                parts.append(_markdown_to_html(block.markdown))
            elif isinstance(block, Table):
                if block.caption:
                    parts.append(f"<p><em>{html.escape(block.caption)}</em></p>")
                parts.append(block.frame.to_html(index=False, na_rep="—", escape=True))
            elif isinstance(block, Chart):
                parts.append(f"<figure class='chart'>{_figure_html(block.figure)}")
                if block.caption:
                    parts.append(f"<figcaption>{html.escape(block.caption)}</figcaption>")
                parts.append("</figure>")
            elif isinstance(block, Picture):
                encoded = base64.b64encode(block.png).decode()
                parts.append(
                    f"<figure><img alt='{html.escape(block.name)}' src='data:image/png;base64,{encoded}'>"
                    f"<figcaption>{_markdown_to_html(block.caption)}</figcaption></figure>"
                )
            elif isinstance(block, Missing):
                parts.append(f"<div class='missing'>Not run: {_inline_html(block.text)}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


@contextlib.contextmanager
def chart_pictures():
    """Keep one Kaleido browser (a local Chrome/Chromium) open while charts are turned into pictures:
    starting one per chart took about 2.8 s, one kept open about 0.13 s per chart."""
    started = False
    try:
        import kaleido

        kaleido.start_sync_server(silence_warnings=True)
        started = True
    except Exception:  # no Kaleido or no browser: chart_png answers None
        pass
    try:
        yield
    finally:
        if started:
            with contextlib.suppress(Exception):
                kaleido.stop_sync_server(silence_warnings=True)


def chart_png(figure) -> bytes | None:
    """A chart as PNG through Kaleido and a local Chrome/Chromium; None when there is none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return figure.to_image(format="png", width=1000, height=int(figure.layout.height or 450))
    except Exception:  # no browser for Kaleido here: the Markdown points to the HTML file instead
        return None


def to_markdown(report: Report) -> tuple[str, dict[str, bytes]]:
    """The report as Markdown and its pictures (``images/NAME.png``)."""
    with chart_pictures():
        return _markdown(report)


def _markdown(report: Report) -> tuple[str, dict[str, bytes]]:
    files: dict[str, bytes] = {}
    lines = [
        f"# {report.title}",
        "",
        f"Generated {report.generated} from the saved artifacts of: {', '.join(report.runs) or 'no run'}"
        + (f"; tuning study {report.study}" if report.study else "")
        + ". The interactive charts are in `report.html`.",
    ]
    for section in report.sections:
        lines += ["", f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                lines += [block.markdown, ""]
            elif isinstance(block, Table):
                if block.caption:
                    lines += [f"*{block.caption}*", ""]
                lines += [markdown_table(block.frame), ""]
            elif isinstance(block, Chart | Picture):
                png = block.png if isinstance(block, Picture) else chart_png(block.figure)
                caption = block.caption or block.name.replace("_", " ")
                if png is None:
                    lines += [f"*{caption}* — an interactive chart in `report.html`.", ""]
                    continue
                files[f"images/{block.name}.png"] = png
                lines += [f"![{block.name.replace('_', ' ')}](images/{block.name}.png)", ""]
                if block.caption:
                    lines += [block.caption, ""]
            elif isinstance(block, Missing):
                lines += [f"> **Not run:** {block.text}", ""]
    return "\n".join(lines), files


def markdown_zip(report: Report, html_text: str | None = None) -> bytes:
    """A zip of ``report.md``, its ``images/`` and ``report.html``."""
    text, files = to_markdown(report)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("report.md", text)
        archive.writestr("report.html", html_text or to_html(report))
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def table_for_markdown_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` for a table that renders each cell as Markdown (the Report page's): a text starting with
    '>' ("> 0.85", ">99.9 %") would be a quotation there, so its '>' is escaped."""
    return frame.map(lambda v: "\\" + v if isinstance(v, str) and v.startswith(">") else v)


def write(report: Report, out: Path) -> dict[str, Path]:
    """``report.html`` and ``report-markdown.zip`` in ``out``, both made before either is written, each
    written whole: a failure leaves the earlier report as it was, never half a file (only a kill between
    the two replacements could pair a new HTML with the earlier zip)."""
    out.mkdir(parents=True, exist_ok=True)
    html_text = to_html(report)
    archive = markdown_zip(report, html_text)
    paths = {"html": out / "report.html", "markdown": out / "report-markdown.zip"}
    files.write_text(paths["html"], html_text)
    with files.atomic(paths["markdown"], suffix=".zip") as tmp:
        tmp.write_bytes(archive)
    return paths
