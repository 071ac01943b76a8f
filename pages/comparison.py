"""Baseline versus EfficientNetB0 versus MobileNetV2: the measured comparison, and the pitfall lab."""

import functools

import pandas as pd
import streamlit as st

from app import widgets
from fashion_lib import evaluate, export, figures, lifecycle, pitfall, runs, wording

st.title("Compare models")
st.markdown(
    "Every number comes from the runs' own summaries: test accuracy and macro-F1 on the saved test "
    "predictions, parameters counted from the models, times measured while training."
)

candidates = runs.comparable_runs()
damaged = [r for r in runs.list_runs() if r.damaged]
if damaged:
    st.caption(
        f"Not compared: {len(damaged)} damaged run folder(s) — "
        + "; ".join(f"{r.run_id}: {r.problems[0]}" for r in damaged[:3])
    )
if not candidates:
    st.info("No finished runs and no shipped model yet: train one on the Train page.")
else:
    labels = {r.run_id: r for r in candidates}
    defaults = [r.run_id for r in runs.default_comparison(candidates)]
    chosen_ids = st.multiselect(
        "Runs to compare",
        list(labels),
        default=defaults,
        key="cmp_runs",
        format_func=lambda rid: labels[rid].label,
    )
    chosen = [labels[rid] for rid in chosen_ids]
    if not chosen:
        st.info("Pick at least one run.")
    else:
        table = pd.DataFrame(runs.comparison_table(chosen))
        colours = figures.run_colours(chosen_ids)
        names = {r.run_id: r.label for r in chosen}
        formats = {
            # a fixed width: the long names would push the size and parameters off a 1280-px screen
            "model": st.column_config.TextColumn(width=250),
            "test accuracy": st.column_config.NumberColumn(format="%.2f %%"),
            "macro-F1": st.column_config.NumberColumn(format="%.4f"),
            "run time s": st.column_config.NumberColumn(format="localized", help=wording.RUN_TIME),
            "latency ms/image (batched)": st.column_config.NumberColumn(format="%.3f", help=wording.LATENCY),
            "size MB": st.column_config.NumberColumn(format="%.1f", help=wording.MODEL_FILE_SIZE),
            "parameters": st.column_config.NumberColumn(format="localized"),
        }
        seconds = [c for c in table.columns if c.endswith(" s")]  # whole seconds, "7,316", in both tables
        table[seconds] = table[seconds].apply(pd.to_numeric, errors="coerce").round(0)
        main = table[list(runs.COMPARISON_COLUMNS)].copy()
        main["test accuracy"] *= 100  # "93.01 %", as on every other page (the "percent" format: "93.01%")
        with st.container(key="cmp_table"):
            st.dataframe(main, hide_index=True, column_config=formats)
        with st.expander("Details: weights, input size, images, epochs, stage times, trainable parameters"):
            # the run names each row: the long model names pushed the details off the screen
            details = table.drop(columns=list(runs.COMPARISON_COLUMNS))
            for c in details.columns:
                if c.endswith(" s") or c.startswith(("trainable", "training images", "latency")):
                    details[c] = details[c].map(
                        lambda v, c=c: wording.number_cell(v, int(c.startswith("latency")))
                    )
            st.dataframe(details, hide_index=True)
        metric = st.radio(
            "Curves", ["val_accuracy", "val_loss", "accuracy", "loss"], horizontal=True, key="cmp_metric"
        )
        curves = {r.run_id: runs.read_metrics(r.folder) for r in chosen}
        st.plotly_chart(figures.overlaid_curves(curves, metric, names, colours), key="cmp_curves")
        st.markdown("**Per-class F1**")
        f1 = pd.DataFrame(runs.per_class_f1(chosen))
        st.plotly_chart(figures.per_class_f1_bars(f1, names, colours), key="cmp_f1")
        st.markdown("**Accuracy against cost**")
        left, right = st.columns(2)
        left.plotly_chart(figures.accuracy_vs_cost(table, "run time s", colours), key="cmp_time")
        right.plotly_chart(figures.accuracy_vs_cost(table, "parameters", colours), key="cmp_params")

        with st.expander("Export a model", icon=":material/download:"):
            exportable = export.exportable(chosen)
            if not exportable:
                st.info("Only completed runs and shipped models can be exported.")
            else:
                st.caption(
                    "A zip of the chosen formats and the model card; each format is loaded back and "
                    "checked against the original first (as `python -m fashion_lib export RUN --to DIR`). "
                    "With the Keras file go the model's familiarity statistics, for the service's "
                    '"not sure" rule: made first if no photo has been '
                    "classified with this model yet (a while, for a transfer model on a CPU)."
                )
                to_export = st.selectbox("Model", exportable, format_func=lambda r: r.label, key="export_run")
                formats = st.multiselect(
                    "Formats",
                    export.EXPORT_FORMATS,
                    default=export.EXPORT_FORMATS,
                    format_func=export.FORMAT_LABELS.get,
                    key="export_formats",
                )
                st.download_button(
                    "Download the export (zip)",
                    data=functools.partial(export.export_zip, to_export.folder, tuple(formats)),
                    file_name=export.zip_name(to_export.folder),
                    mime="application/zip",
                    disabled=not formats,
                    on_click="ignore",
                    icon=":material/download:",
                    key="export_download",
                )

st.divider()
st.header("Pitfall lab")
st.markdown(
    "The original prototype reported **10.5 %** accuracy. It trained on 1,000 images and divided the pixels "
    "by 255 *before* an EfficientNet — which already rescales 0–255 inside its own graph, so every image "
    "arrived nearly black. One click trains that preset and the fixed one side by side, in the background, "
    "one after the other (about two minutes here). The numbers below are whatever those two runs measure: "
    "how much the squeeze hurts depends on the backbone, and a BatchNormalization head can recover part of "
    "a squeezed signal."
)
lab = pitfall.plan()
(st.caption if lab.shows_the_failure else st.warning)(lab.note)
if st.button(lab.button_label, icon=":material/science:", key="lab_start"):
    pitfall.start()
    st.toast("Both lab runs are queued.")


def show_lab(folders: dict[str, object]) -> None:
    cols = st.columns(len(folders))
    for col, (label, folder) in zip(cols, folders.items(), strict=True):
        state = lifecycle.state_of(folder) if folder.exists() else None
        col.markdown(f"**{label}**  \n`{folder.name}` — {state.state if state else 'deleted'}")
        if state is None:
            continue
        if state.active:
            col.progress(runs.progress_summary(folder).fraction)
        elif state.state == lifecycle.COMPLETED:
            try:
                saved = widgets.predictions_of(folder)
            except (OSError, ValueError) as exc:
                col.error(str(exc))
                continue
            report = evaluate.collapse_report(saved.labels, saved.probabilities)
            col.metric("Test accuracy", f"{report.accuracy:.1%}")
            (col.error if report.collapsed else col.success)(report.sentence())
            col.plotly_chart(
                figures.prediction_histogram(report.predicted_counts, "predicted classes"),
                key=f"lab_hist_{folder.name}",
            )
        elif state.state in (lifecycle.FAILED, lifecycle.INTERRUPTED, lifecycle.DAMAGED):
            col.error(state.error or state.detail or state.state)


lab_folders = pitfall.current_folders()
if lab_folders:
    if any(f.exists() and lifecycle.state_of(f).active for f in lab_folders.values()):
        st.fragment(show_lab, run_every=1.0)(lab_folders)
    else:
        show_lab(lab_folders)
widgets.data_source_banner(widgets.dataset_or_stop())
