"""Error analysis: a clickable confusion matrix that drills into the misclassified test images, the
Shirt / Pullover focus, per-class metrics, calibration, collapse detection and possible label errors."""

import numpy as np
import pandas as pd
import streamlit as st

from app import widgets
from fashion_lib import config, evaluate, figures, report, wording

NAMES = list(config.CLASS_NAMES)
SHIRT, PULLOVER = NAMES.index("Shirt"), NAMES.index("Pullover")
GALLERY_MAX = 60
SEED_CLAIMED_SHARE = report.DESIGN_CLAIMS["shirt_pullover_share"]  # shown next to the real share

st.title("Error analysis")
ds = widgets.dataset_or_stop()
info = widgets.run_picker("Run", key="err_run")
if info is None:
    st.info("No finished run and no shipped model: train one on the Train page.")
    st.stop()
summary = info.summary
st.markdown(wording.summary_line(summary))
try:
    p = widgets.predictions_of(info.folder)
except (OSError, ValueError) as exc:
    st.error(f"The saved predictions of this run cannot be used: {exc}. Pick another run.")
    st.stop()
cm = evaluate.confusion_counts(p.labels, p.predicted)
collapse = evaluate.collapse_report(p.labels, p.probabilities)
# confident learning judges labels by a model that learnt the classes: a collapsed one flags noise
issues = None if collapse.collapsed else widgets.label_issues_of(info.folder)
suspect_positions = set() if issues is None else set(issues.loc[issues["flagged"], "position"].tolist())
if collapse.collapsed:
    st.error(f"**{collapse.sentence()}** {evaluate.COLLAPSE_CAUSES}")


def gallery(positions: np.ndarray, key: str, order: str = evaluate.GALLERY_ORDERS[0]) -> None:
    """Test images at ``positions`` with their true class, top-2 probabilities and a label-error mark."""
    if len(positions) == 0:
        st.caption("No images.")
        return
    shown, captions = evaluate.gallery(p, positions, order, GALLERY_MAX, suspect_positions)
    notes = [f"Showing {len(shown)} of {len(positions)}."] if len(positions) > len(shown) else []
    if suspect_positions.intersection(shown.tolist()):
        notes.append(f"{evaluate.SUSPECT_MARK}: possibly a label error (see *Model error or label error?*).")
    if notes:
        st.caption(" ".join(notes))
    widgets.image_grid(ds.x_test[p.test_index[shown]], captions, columns=6, key=key)


# ------------------------------------------------------------------------------------ confusion matrix
st.subheader("Confusion matrix")
left, right = st.columns([3, 2])
normalized = left.toggle("Normalise by true class", key="err_norm")
left.caption("Click a cell to see its test images.")
selected = st.session_state.get("err_cell")
with left.container(key="confusion"):
    event = st.plotly_chart(
        figures.confusion_matrix_figure(cm, normalized, selected),
        on_select="rerun",
        selection_mode=("points",),
        key=f"cm_{info.run_id}_{normalized}",
    )
points = [pt for pt in event.selection.points if "customdata" in pt]
if points:
    cell = points[0]["customdata"]
    cell = tuple(int(cell[k]) for k in (sorted(cell) if isinstance(cell, dict) else range(2)))
    if cell != selected:
        st.session_state.err_cell = cell
        st.rerun()
with right:
    st.markdown("**Most frequent confusions** (true → predicted)")
    pairs = evaluate.most_confused_pairs(cm, 8)
    pairs["share of all errors"] *= 100  # one decimal for every row ("percent" gave 11.6 % beside 11.21 %)
    st.dataframe(
        pairs,
        hide_index=True,
        column_config={"share of all errors": st.column_config.NumberColumn(format="%.1f %%")},
    )
    st.download_button(
        "Download the misclassified list (CSV)",
        evaluate.misclassified_table(p).to_csv(index=False),
        file_name=f"misclassified-{info.run_id}.csv",
        mime="text/csv",
        icon=":material/download:",
    )

with st.container(key="cell_gallery"):
    if selected is None:
        st.info("Click a cell of the matrix: its test images appear here.")
    else:
        t, q = selected
        positions = evaluate.cell_positions(p, t, q)
        st.markdown(f"**{len(positions)} test images: true {NAMES[t]} → predicted {NAMES[q]}**")
        order = st.radio("Order", evaluate.GALLERY_ORDERS, horizontal=True, key="err_order")
        gallery(positions, "cell_images", order)
        if len(positions):
            worst = int(p.test_index[positions[np.argmax(p.confidence[positions])]])
            st.markdown(
                f"Open any of them on the [Grad-CAM page](/gradcam?test_index={worst}&run={info.run_id}) "
                f"by its index (this link opens #{worst}, the most confident mistake, with this model)."
            )
        other = widgets.run_picker(
            "Compare this cell with another run", key="err_other", exclude=info.run_id, none="none"
        )
        if other is not None:
            try:
                cmp = evaluate.compare_cell(p, widgets.predictions_of(other.folder), t, q)
            except ValueError as exc:
                st.warning(str(exc))
            else:
                st.markdown(
                    f"In this cell for **{info.run_id}** only: {len(cmp.only_a)} · for **{other.run_id}** "
                    f"only: {len(cmp.only_b)} · for both: {len(cmp.both)}"
                )
                where = {int(i): k for k, i in enumerate(p.test_index)}
                c1, c2 = st.columns(2)
                with c1:
                    st.caption(f"Wrong this way for {info.run_id} only")
                    gallery(np.array([where[i] for i in cmp.only_a], dtype=int), "only_a")
                with c2:
                    st.caption(f"Wrong this way for {other.run_id} only")
                    st.caption(", ".join(f"#{i}" for i in cmp.only_b[:60]) or "none")

# ------------------------------------------------------------------------------- Shirt / Pullover focus
with st.expander("Shirt / Pullover focus", expanded=True):
    pair = evaluate.pair_errors(cm, SHIRT, PULLOVER)
    cols = st.columns(4)
    cols[0].metric("Shirt → Pullover", pair.a_as_b)
    cols[1].metric("Pullover → Shirt", pair.b_as_a)
    cols[2].metric("All errors", pair.all_errors)
    cols[3].metric("Share of all errors", wording.percent(pair.share, 1))
    st.markdown(
        f"The original design claimed **{wording.percent(SEED_CLAIMED_SHARE, 0)}** of errors were "
        f"Shirt/Pullover; for this run it is **{wording.percent(pair.share, 1)}**. "
        + evaluate.pair_standing(cm, SHIRT, PULLOVER)
    )
    groups = {
        "Shirt → Pullover (wrong)": p.confidence[evaluate.cell_positions(p, SHIRT, PULLOVER)],
        "Pullover → Shirt (wrong)": p.confidence[evaluate.cell_positions(p, PULLOVER, SHIRT)],
        "Shirt (right)": p.confidence[evaluate.cell_positions(p, SHIRT, SHIRT)],
        "Pullover (right)": p.confidence[evaluate.cell_positions(p, PULLOVER, PULLOVER)],
    }
    st.plotly_chart(figures.confidence_histogram(groups), key="sp_confidence")
    st.markdown("**Most confidently wrong** (both directions)")
    both = np.concatenate(
        [evaluate.cell_positions(p, SHIRT, PULLOVER), evaluate.cell_positions(p, PULLOVER, SHIRT)]
    )
    gallery(both[np.argsort(-p.confidence[both], kind="stable")][:12], "sp_wrong")

# ------------------------------------------------------------------------------------- per-class metrics
with st.expander("Per-class precision, recall and F1", expanded=False):
    st.dataframe(
        evaluate.per_class_report(p.labels, p.predicted),
        hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(format="%.4f") for c in ("precision", "recall", "F1")
        },
    )

# ------------------------------------------------------------------------------------------- calibration
with st.expander("Calibration", expanded=False):
    correct = ~p.wrong
    bins = evaluate.reliability_bins(p.confidence, correct, 10)
    ece = evaluate.expected_calibration_error(p.confidence, correct, 10)
    st.plotly_chart(figures.reliability_diagram(bins, ece, len(correct)), key="reliability")
    st.caption(
        f"On the {len(correct):,} test images: mean confidence {wording.percent(p.confidence.mean())} "
        f"against accuracy {wording.percent(correct.mean())}. " + evaluate.temperature_sentence(summary)
    )

# ------------------------------------------------------------------------------------ collapse detector
with st.expander("Predicted-class distribution (collapse detector)", expanded=collapse.collapsed):
    (st.error if collapse.collapsed else st.success)(collapse.sentence())
    st.plotly_chart(
        figures.prediction_histogram(collapse.predicted_counts, "test images predicted as each class"),
        key="pred_hist",
    )

# ----------------------------------------------------------------------------------------- label errors
with st.expander("Model error or label error?", expanded=False):
    if issues is None:
        st.info(
            "Not judged for this model: confident learning needs a model that has learnt the classes, and "
            "this one has collapsed. Pick a sound model to look for label errors."
        )
    else:
        flagged = issues[issues["flagged"]]
        st.markdown(
            f"Confident learning (cleanlab) flags **{len(flagged)}** of {len(issues):,} test images whose "
            "given label is probably wrong, judged from this model's out-of-sample probabilities. They are "
            "marked ⚠ in the galleries. It estimates, for each pair of classes, how many images of one are "
            "labelled as the other (from the model's average confidence on each class), then flags that "
            "many, those the model most prefers the other class for: the mark is a count per pair of "
            "classes, not a cut-off on confidence, so a less confident mistake can be flagged and a surer "
            "one not. The top suspects:"
        )
        top = flagged.head(24)
        widgets.image_grid(
            ds.x_test[top["test index"].to_numpy()],
            [
                f"#{r['test index']} given {r['given label']}, model says {r['model says']} "
                f"({wording.confidence(r['model confidence'])})"
                for _, r in top.iterrows()
            ],
            columns=6,
            key="label_suspects",
        )
        shown = pd.DataFrame(top).drop(columns=["position"])
        shown["model confidence"] = shown["model confidence"].map(wording.confidence)  # as the captions
        st.dataframe(
            shown,
            hide_index=True,
            column_config={"label quality": st.column_config.NumberColumn(format="%.4f")},
        )
