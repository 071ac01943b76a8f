"""Pure functions that build plotly figures from arrays and tables (no Streamlit, no computation of
statistics: those come from ``stats``, ``evaluate`` and the run folders)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fashion_lib import config, wording
from fashion_lib.evaluate import normalize_rows

if TYPE_CHECKING:
    from fashion_lib.stats import Embedding

# One colour per class, the same on every chart.
CLASS_COLORS = dict(zip(config.CLASS_NAMES, px.colors.qualitative.T10, strict=True))


def class_distribution_chart(table: pd.DataFrame) -> go.Figure:
    """Grouped bars of images per class for each split, each labelled with its share of its own split."""
    fig = px.bar(
        table,
        x="class",
        y="count",
        color="split",
        barmode="group",
        text=table["share"].map(lambda s: wording.percent(s, 1)),
        category_orders={"class": list(config.CLASS_NAMES)},
        labels={"count": "images (on each bar: its share of the split)", "class": ""},
        # its own colours: in the app's process the default template is Streamlit's, whose placeholder
        # colours ("#000001") only its own page replaces: the report's HTML drew the bars black
        color_discrete_map={"train": "#1f77b4", "test": "#9ecae1"},
    )
    fig.update_traces(textposition="outside", cliponaxis=False)
    fig.update_layout(height=380, legend_title_text="", margin=dict(t=30, b=10))
    return fig


def intensity_histogram(hist: pd.DataFrame, classes: list[str], log_y: bool = False) -> go.Figure:
    """Share of pixels at each intensity 0–255, one line per chosen class (or 'all classes')."""
    shown = hist[hist["class"].isin(classes)]
    fig = px.line(
        shown,
        x="intensity",
        y="share",
        color="class",
        log_y=log_y,
        color_discrete_map={**CLASS_COLORS, "all classes": "#444"},
        labels={"share": "share of pixels", "intensity": "pixel intensity (0 = black background)"},
    )
    if log_y:  # plotly labels a log axis's minor ticks "5", "2": only the powers of ten, in percent
        fig.update_yaxes(dtick=1, tickformat=".1~%")
    else:
        fig.update_yaxes(tickformat=".1~%")
    fig.update_layout(height=360, margin=dict(t=30, b=10))
    return fig


def image_facets(
    images: np.ndarray,
    titles: list[str],
    colorscale: str = "gray",
    zmid: float | None = None,
    columns: int = 5,
    height: int = 330,
) -> go.Figure:
    """Small images side by side, one facet each, sharing one colour scale."""
    kwargs = {"color_continuous_midpoint": zmid} if zmid is not None else {}
    fig = px.imshow(
        np.asarray(images), facet_col=0, facet_col_wrap=columns, color_continuous_scale=colorscale, **kwargs
    )
    for annotation in fig.layout.annotations:
        annotation.text = titles[int(annotation.text.split("=")[1])]
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(height=height, margin=dict(t=30, b=0, l=0, r=0))
    return fig


def correlation_heatmap(corr: np.ndarray) -> go.Figure:
    """Class × class correlation of the mean images, with the values written in the cells."""
    names = list(config.CLASS_NAMES)
    fig = px.imshow(
        corr,
        x=names,
        y=names,
        zmin=-1,
        zmax=1,
        color_continuous_scale="RdBu_r",
        text_auto=".2f",
        aspect="equal",
    )
    fig.update_layout(height=520, margin=dict(t=30, b=10), coloraxis_colorbar=dict(title="correlation"))
    return fig


def difference_image(mean_a: np.ndarray, mean_b: np.ndarray, name_a: str, name_b: str) -> go.Figure:
    """Mean of A, mean of B and A − B (red: brighter in A, blue: brighter in B)."""
    diff = mean_a - mean_b
    limit = float(np.abs(diff).max()) or 1.0

    fig = make_subplots(
        rows=1, cols=3, subplot_titles=(name_a, name_b, f"{name_a} − {name_b}"), horizontal_spacing=0.04
    )
    for col, image in ((1, mean_a), (2, mean_b)):
        fig.add_trace(go.Heatmap(z=image, colorscale="gray", zmin=0, zmax=255, showscale=False), 1, col)
    fig.add_trace(
        go.Heatmap(z=diff, colorscale="RdBu_r", zmin=-limit, zmax=limit, colorbar=dict(title="A − B")), 1, 3
    )
    fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x")
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=320, margin=dict(t=40, b=0, l=0, r=0))
    return fig


def embedding_scatter(embedding: Embedding, title: str) -> go.Figure:
    """2-D embedding coloured by class, its axes named; each point carries its training-set index as
    customdata.

    No drag mode is set: Streamlit then makes a click select a point (in box or lasso mode it does not)."""
    fig = go.Figure()
    for c, name in enumerate(config.CLASS_NAMES):
        mask = embedding.labels == c
        fig.add_trace(
            go.Scattergl(
                x=embedding.coords[mask, 0],
                y=embedding.coords[mask, 1],
                mode="markers",
                name=name,
                marker=dict(size=4, color=CLASS_COLORS[name], opacity=0.7),
                customdata=embedding.index[mask],
                hovertemplate=f"{name}<br>index %{{customdata}}<extra></extra>",
            )
        )
    x_title, y_title = embedding.axis_titles
    fig.update_layout(
        title=title,
        height=560,
        legend=dict(itemsizing="constant"),
        margin=dict(t=40, b=10),
        xaxis_title=x_title,
        yaxis_title=y_title,
    )
    return fig


def value_histograms(before: np.ndarray, after: np.ndarray, after_label: str, bins: int = 64) -> go.Figure:
    """Raw pixel values next to what the model's input pipeline makes of them, each as shares of its own
    values: a transfer model's input has more of them (resized, gray copied to three channels), so counts
    would not compare. Binned here (a few dozen bars), not in the browser: sending the 400,000 values of
    each sample made the page slow."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("raw pixels (uint8)", after_label))
    for col, values, colour in ((1, before, "#888"), (2, after, "#1f77b4")):
        counts, edges = np.histogram(np.asarray(values, dtype=np.float64).ravel(), bins=bins)
        fig.add_trace(
            go.Bar(
                x=(edges[:-1] + edges[1:]) / 2,
                y=counts / max(counts.sum(), 1),
                width=np.diff(edges),
                marker_color=colour,
                showlegend=False,
                hovertemplate="%{x:.3g}: %{y:.2%} of the values<extra></extra>",
            ),
            1,
            col,
        )
    fig.update_yaxes(type="log", title_text="share of the values (log)", tickformat=".1~%")
    fig.update_layout(height=280, margin=dict(t=40, b=10), bargap=0)
    return fig


def learning_curves(rows: list[dict], title: str = "") -> go.Figure:
    """Loss and accuracy per epoch, train (solid) and validation (dashed); the fine-tuning stage shaded."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"), horizontal_spacing=0.08)
    if rows:
        epochs = [r["epoch"] for r in rows]
        for col, metric in ((1, "loss"), (2, "accuracy")):
            for prefix, dash, name in (("", "solid", "train"), ("val_", "dash", "validation")):
                values = [r.get(prefix + metric) for r in rows]
                fig.add_trace(
                    go.Scatter(
                        x=epochs,
                        y=values,
                        mode="lines+markers",
                        name=name,
                        legendgroup=name,
                        showlegend=col == 1,
                        line=dict(dash=dash, color="#1f77b4" if not prefix else "#ff7f0e"),
                    ),
                    1,
                    col,
                )
        stage2 = [r["epoch"] for r in rows if r.get("stage") == 2]
        if stage2:
            for col in (1, 2):
                fig.add_vrect(
                    x0=stage2[0] - 0.5,
                    x1=stage2[-1] + 0.5,
                    fillcolor="#2ca02c",
                    opacity=0.08,
                    line_width=0,
                    row=1,
                    col=col,
                )
            fig.add_annotation(
                x=stage2[0] - 0.5,
                y=1.0,
                yref="paper",
                text="fine-tuning →",
                showarrow=False,
                xanchor="left",
                font=dict(color="#2ca02c"),
            )
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_layout(title=title, height=360, margin=dict(t=60, b=10))
    return fig


RUN_PALETTE = (*px.colors.qualitative.D3, *px.colors.qualitative.Dark2)


def run_colours(run_ids: list[str]) -> dict[str, str]:
    """One colour per run, the same in every chart of a page."""
    return {rid: RUN_PALETTE[i % len(RUN_PALETTE)] for i, rid in enumerate(run_ids)}


def _legend_below(fig: go.Figure) -> None:
    # Run names are long: a legend under the chart keeps them whole and leaves the plot its width.
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0))


def overlaid_curves(
    curves: dict[str, list[dict]], metric: str, labels: dict[str, str], colours: dict[str, str]
) -> go.Figure:
    """One line per run (keyed by run id) of ``metric`` against the epoch."""
    fig = go.Figure()
    for rid, rows in curves.items():
        fig.add_trace(
            go.Scatter(
                x=[r["epoch"] for r in rows],
                y=[r.get(metric) for r in rows],
                mode="lines+markers",
                name=labels.get(rid, rid),
                line=dict(color=colours.get(rid)),
            )
        )
    if "accuracy" in metric:
        fig.update_yaxes(tickformat=".0%")
    fig.update_layout(
        height=420, xaxis_title="epoch", yaxis_title=metric.replace("_", " "), margin=dict(t=30, b=10)
    )
    fig.update_xaxes(dtick=1)
    _legend_below(fig)
    return fig


def per_class_f1_bars(f1: pd.DataFrame, labels: dict[str, str], colours: dict[str, str]) -> go.Figure:
    """Grouped bars: per-class F1 (long table with columns run, class, F1), a colour per run."""
    fig = go.Figure()
    for rid, part in f1.groupby("run", sort=False):
        fig.add_trace(
            go.Bar(x=part["class"], y=part["F1"], name=labels.get(rid, rid), marker_color=colours.get(rid))
        )
    fig.update_layout(
        barmode="group",
        height=440,
        yaxis_range=[0, 1],
        yaxis_title="F1",
        xaxis=dict(categoryorder="array", categoryarray=list(config.CLASS_NAMES)),
        margin=dict(t=30, b=10),
    )
    _legend_below(fig)
    return fig


# Round durations for a log time axis: seconds, minutes, hours as people count them.
NICE_SECONDS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 18000, 36000, 86400)


def log_ticks(low: float, high: float, text, nice: tuple[float, ...] | None = None) -> tuple[list, list[str]]:
    """Tick values spanning [low, high] on a log axis — 1-2-5 steps, or the ``nice`` ones — each written by
    ``text``: an axis reads '10 s, 1 min, 5 min' or '500k, 1M, 2M', not plotly's '5 10 2 5 100 2'."""
    low, high = max(low, 1e-9), max(high, low)
    if nice is None:
        exponents = range(int(np.floor(np.log10(low))) - 1, int(np.ceil(np.log10(high))) + 2)
        nice = tuple(step * 10.0**e for e in exponents for step in (1, 2, 5))
    values = [v for v in nice if low / 2.5 <= v <= high * 2.5]
    while len(values) > 6:  # thin out, keeping the ends
        values = values[::2]
    return values, [text(v) for v in values]


def si_number(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def accuracy_range(accuracies, pad: float = 0.02) -> list[float] | None:
    """A y range around the accuracies, padded, that never leaves [0, 1] (plotly pads a single point to
    ±50 %, and an accuracy of 150 % reads as a bug)."""
    values = pd.to_numeric(pd.Series(accuracies), errors="coerce").dropna()
    if values.empty:
        return None
    low, high = float(values.min()) - pad, float(values.max()) + pad
    return [max(0.0, low), min(1.0, high)]


def accuracy_vs_cost(table: pd.DataFrame, cost: str, colours: dict[str, str]) -> go.Figure:
    """Test accuracy against a cost column ('run time s' or 'parameters'), one coloured point per run."""
    from fashion_lib import wording

    fig = go.Figure()
    for _, row in table.iterrows():
        if row.get(cost) is None or pd.isna(row.get(cost)) or pd.isna(row.get("test accuracy")):
            continue
        fig.add_trace(
            go.Scatter(
                x=[row[cost]],
                y=[row["test accuracy"]],
                mode="markers",
                name=row["model"],
                marker=dict(size=14, color=colours.get(row["run"])),
            )
        )
    values = pd.to_numeric(table[cost], errors="coerce").dropna()
    title = "run time" if cost == "run time s" else cost
    if len(values):
        timed = cost == "run time s"
        ticks, texts = log_ticks(
            float(values.min()),
            float(values.max()),
            wording.duration if timed else si_number,
            NICE_SECONDS if timed else None,
        )
        fig.update_xaxes(type="log", tickvals=ticks, ticktext=texts, title_text=f"{title} (log scale)")
    fig.update_yaxes(
        tickformat=".1%", title_text="test accuracy", range=accuracy_range(table["test accuracy"])
    )
    fig.update_layout(height=420, margin=dict(t=30, b=10), showlegend=True)
    _legend_below(fig)
    return fig


def prediction_histogram(counts: np.ndarray, title: str) -> go.Figure:
    """How many test images were predicted as each class."""
    fig = px.bar(
        x=list(config.CLASS_NAMES),
        y=counts,
        labels={"x": "predicted class", "y": "test images"},
        color_discrete_sequence=["#1f77b4"],  # not the template's: see class_distribution_chart
    )
    fig.update_layout(title=title, height=300, margin=dict(t=40, b=10))
    return fig


def confusion_matrix_figure(
    cm: np.ndarray, normalized: bool = False, selected: tuple[int, int] | None = None, height: int = 620
) -> go.Figure:
    """A clickable confusion matrix: coloured cell rectangles (layout shapes) under one square scatter
    marker per cell, whose customdata is [true, predicted] so a click selects that cell in Streamlit.

    (Streamlit returns no selection for clicks on a plotly Heatmap, so the matrix is not one.)"""
    from plotly.colors import sample_colorscale

    values = normalize_rows(cm) if normalized else cm.astype(float)
    names = list(config.CLASS_NAMES)
    n = len(names)
    # Colour by share of the row so the diagonal does not wash out the errors.
    shade = normalize_rows(cm)
    off = shade.copy()
    np.fill_diagonal(off, 0)
    top_error = off.max() or 1.0
    shapes, xs, ys, texts, custom, text_colors = [], [], [], [], [], []
    for t in range(n):
        for p in range(n):
            level = 1.0 if t == p else min(1.0, shade[t, p] / top_error)
            scale = "Blues" if t == p else "Reds"
            color = sample_colorscale(scale, [0.05 + 0.9 * level])[0] if cm[t, p] else "#ffffff"
            shapes.append(
                dict(
                    type="rect",
                    x0=p - 0.5,
                    x1=p + 0.5,
                    y0=t - 0.5,
                    y1=t + 0.5,
                    fillcolor=color,
                    line=dict(color="#dddddd", width=1),
                    layer="below",
                )
            )
            xs.append(p)
            ys.append(t)
            texts.append(wording.share_of_row(values[t, p], int(cm[t, p])) if normalized else f"{cm[t, p]:d}")
            custom.append([t, p])
            text_colors.append("white" if level > 0.6 and cm[t, p] else "black")
    if selected is not None:
        t, p = selected
        shapes.append(
            dict(
                type="rect",
                x0=p - 0.5,
                x1=p + 0.5,
                y0=t - 0.5,
                y1=t + 0.5,
                line=dict(color="#111111", width=3),
                fillcolor="rgba(0,0,0,0)",
            )
        )
    fig = go.Figure(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers+text",
            text=texts,
            textfont=dict(color=text_colors, size=12),
            marker=dict(symbol="square", size=44, color="rgba(0,0,0,0.01)"),
            customdata=custom,
            showlegend=False,
        )
    )
    fig.update_traces(
        hovertemplate=[
            f"true {names[t]} → predicted {names[p]}: {txt}<extra></extra>"
            for (t, p), txt in zip(custom, texts, strict=True)
        ]
    )
    fig.update_layout(
        shapes=shapes,
        height=height,
        margin=dict(t=30, l=10, r=10, b=10),
        xaxis=dict(
            range=[-0.5, n - 0.5],
            tickvals=list(range(n)),
            ticktext=names,
            title="predicted",
            side="top",
            showgrid=False,
            zeroline=False,
            fixedrange=True,
        ),
        yaxis=dict(
            range=[n - 0.5, -0.5],
            tickvals=list(range(n)),
            ticktext=names,
            title="true",
            showgrid=False,
            zeroline=False,
            fixedrange=True,
        ),
        plot_bgcolor="white",
    )
    return fig


def reliability_diagram(bins: pd.DataFrame, ece: float, images: int) -> go.Figure:
    """Accuracy against mean confidence per bin (bar widths are the bins), each bar with its number of
    images (most are in the top bin, which is why a model over-confident in every lower bin can have a
    small calibration error), with the diagonal of perfect calibration. ``ece`` on ``images`` test images."""
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=(bins["low"] + bins["high"]) / 2,
            y=bins["accuracy"],
            width=bins["high"] - bins["low"],
            name="accuracy (on each bar: its images)",
            marker_color="#1f77b4",
            customdata=bins["count"],
            text=[f"{n:,}" for n in bins["count"]],
            textposition="inside",  # at the foot of the bar, clear of the confidence markers near its top
            insidetextanchor="start",
            textangle=0,
            textfont=dict(color="white"),
            hovertemplate="accuracy %{y:.1%} over %{customdata:,} images<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=bins["confidence"],
            y=bins["confidence"],
            mode="markers",
            name="mean confidence",
            marker=dict(color="#d62728", size=8),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration", line=dict(dash="dash", color="#777")
        )
    )
    fig.update_layout(
        title=f"Reliability diagram — expected calibration error on the {images:,} test images: "
        f"{wording.percent(ece, 2)}",
        height=380,
        xaxis=dict(title="confidence", range=[0, 1]),
        yaxis=dict(title="accuracy", range=[0, 1]),
        margin=dict(t=50, b=10),
    )
    return fig


def confidence_histogram(groups: dict[str, np.ndarray]) -> go.Figure:
    """Overlaid histograms of the model's confidence, one per named group of predictions, each as shares of
    its own group (the legend gives the counts): 35 wrong answers stay visible beside 900 right ones."""
    fig = go.Figure()
    for name, values in groups.items():
        fig.add_trace(
            go.Histogram(
                x=values,
                name=f"{name} ({len(values)})",
                opacity=0.6,
                xbins=dict(start=0, end=1.0001, size=0.05),
                histnorm="percent",
            )
        )
    fig.update_layout(
        barmode="overlay",
        height=320,
        xaxis_title="confidence (top probability)",
        yaxis_title="% of the group's test images",
        margin=dict(t=30, b=10),
    )
    return fig


def intermediate_values(curves: list[dict]) -> go.Figure:
    """The pruning picture: validation accuracy after each epoch, one line per trial; pruned trials grey,
    completed ones coloured, the best one thick. ``curves``: dicts with number, state, steps, values."""
    fig = go.Figure()
    best = max(
        (c for c in curves if c["state"] == "COMPLETE" and c.get("value") is not None),
        key=lambda c: c["value"],
        default=None,
    )
    for curve in sorted(curves, key=lambda c: c["state"] != "PRUNED"):  # grey lines underneath
        pruned = curve["state"] != "COMPLETE"
        is_best = best is not None and curve["number"] == best["number"]
        fig.add_trace(
            go.Scatter(
                x=curve["steps"],
                y=curve["values"],
                mode="lines+markers",
                name=f"trial {curve['number']}" + (" (pruned)" if curve["state"] == "PRUNED" else ""),
                line=dict(
                    color="#b0b0b0" if pruned else None,
                    width=4 if is_best else 1.5,
                ),
                marker=dict(size=4),
                opacity=0.7 if pruned else 1.0,
            )
        )
    fig.update_layout(
        height=380,
        margin=dict(t=40, b=10),
        xaxis_title="epoch",
        yaxis_title="validation accuracy",
        yaxis_tickformat=".0%",
        title="Validation accuracy after each epoch (pruned trials in grey)",
    )
    fig.update_xaxes(dtick=1)
    return fig
