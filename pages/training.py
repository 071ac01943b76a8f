"""Training: a form for the training config, launched as a background process, with live curves."""

import pandas as pd
import streamlit as st

from app import widgets
from fashion_lib import augment, evaluate, figures, jobs, models, runs, train

SUBSETS = {"all 60,000": 0, "20,000 (balanced)": 20000, "10,000": 10000, "5,000": 5000, "1,000": 1000}
TEST_SUBSETS = {"all 10,000": 0, "2,000": 2000, "500": 500}

st.title("Train a model")
widgets.dataset_or_stop()

# ------------------------------------------------------------------------------------------ the form
with st.container(key="train_form", border=True):
    c1, c2, c3 = st.columns(3)
    model = c1.selectbox("Model", models.MODEL_NAMES, format_func=models.DISPLAY_NAMES.get, key="tr_model")
    transfer = model in models.TRANSFER_MODELS
    input_size = c1.select_slider(
        "Input size (px)",
        [32, 64, 96, 128, 160, 192, 224],
        value=96,
        key="tr_size",
        disabled=not transfer,
        help="Transfer models resize the 28×28 input inside the model (CPU default 96; ImageNet used 224).",
    )
    weights = c1.radio(
        "Backbone weights",
        ["imagenet", "none"],
        key="tr_weights",
        horizontal=True,
        disabled=not transfer,
        format_func=lambda w: {"imagenet": "ImageNet", "none": "none (random)"}[w],
    )
    if transfer:
        st.caption(widgets.weights_status(model, weights))
    subset_label = c2.selectbox("Training images", list(SUBSETS), index=1, key="tr_subset")
    test_label = c2.selectbox("Test images", list(TEST_SUBSETS), key="tr_test_subset")
    epochs = c2.number_input("Epochs", 1, 100, 5, key="tr_epochs")
    batch_size = c2.select_slider("Batch size", [16, 32, 64, 128, 256], value=128, key="tr_batch")
    learning_rate = c3.select_slider(
        "Learning rate",
        [1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 1e-2],
        value=1e-3,
        key="tr_lr",
        format_func=lambda v: f"{v:g}",
    )
    optimizer = c3.selectbox("Optimizer", train.OPTIMIZERS, key="tr_opt")
    schedule = c3.selectbox("Learning-rate schedule", ["plateau", "cosine", "constant"], key="tr_schedule")
    presets = augment.list_presets()
    preset = c3.selectbox(
        "Augmentation preset",
        ["none", *presets],
        key="tr_preset",
        help="Make presets on the Augmentation page.",
    )
    d1, d2, d3 = st.columns(3)
    fine_tune = d1.checkbox("Fine-tune (stage 2)", key="tr_ft", disabled=not transfer)
    ft_layers = d1.number_input("Layers to unfreeze", 1, 250, 30, key="tr_ft_layers", disabled=not fine_tune)
    ft_epochs = d2.number_input("Fine-tuning epochs", 1, 50, 2, key="tr_ft_epochs", disabled=not fine_tune)
    ft_lr = d2.select_slider(
        "Fine-tuning learning rate",
        [1e-5, 3e-5, 1e-4, 3e-4, 1e-3],
        value=1e-4,
        key="tr_ft_lr",
        disabled=not fine_tune,
        format_func=lambda v: f"{v:g}",
    )
    bfloat16 = d2.checkbox("bfloat16 compute", key="tr_bf16", help=train.FIELD_HELP["compute_dtype"])
    calibrate = d2.checkbox(
        "Calibrate confidences",
        value=True,
        key="tr_calibrate",
        help=train.FIELD_HELP["temperature_scaling"],
    )
    patience = d3.number_input("Early-stopping patience (0 = off)", 0, 20, 3, key="tr_patience")
    seed = d3.number_input("Seed", 0, 10**6, 42, key="tr_seed")
    smoothing = d3.select_slider(
        "Label smoothing",
        [0.0, 0.05, 0.1, 0.2],
        value=0.0,
        key="tr_smoothing",
        help=train.FIELD_HELP["label_smoothing"],
    )

    cfg, problem = None, None
    try:
        cfg = train.TrainConfig(
            model=model,
            input_size=int(input_size),
            weights=weights if transfer else "none",
            subset=SUBSETS[subset_label],
            test_subset=TEST_SUBSETS[test_label],
            epochs=int(epochs),
            batch_size=int(batch_size),
            learning_rate=float(learning_rate),
            optimizer=optimizer,
            lr_schedule=schedule,
            augment=augment.load_preset(preset) if preset != "none" else augment.AugmentConfig(),
            fine_tune=bool(fine_tune and transfer),
            fine_tune_layers=int(ft_layers),
            fine_tune_epochs=int(ft_epochs),
            fine_tune_learning_rate=float(ft_lr),
            label_smoothing=float(smoothing),
            compute_dtype="bfloat16" if bfloat16 else "float32",
            temperature_scaling=bool(calibrate),
            early_stopping_patience=int(patience),
            seed=int(seed),
        )
    except ValueError as exc:
        problem = str(exc)
    warning = train.memory_warning(cfg) if cfg is not None else None
    if warning:
        st.warning(warning)
    if cfg is not None:
        estimate = train.estimate_seconds(cfg)
        parts = ", ".join(f"{k} {widgets.duration(v)}" for k, v in estimate.items())
        st.markdown(
            f"**Estimated time on this machine:** {widgets.duration(sum(estimate.values()))} ({parts})"
        )
    else:
        st.error(problem)

    active = jobs.active_run()
    queue = False
    if active is not None:
        st.warning(
            f"Run **{active.name}** is training now; one job at a time keeps the CPU cores free for it."
        )
        queue = st.checkbox("Queue my run: start it when that one finishes", key="tr_queue")
    if st.button(
        "Launch training", type="primary", disabled=cfg is None, icon=":material/play_arrow:", key="tr_launch"
    ):
        try:
            folder = train.start_run(cfg)
            jobs.start(folder, queue=queue)
            st.session_state.tr_show = folder.name
            st.toast(f"Started {folder.name}")
        except jobs.JobBusyError as exc:
            runs.delete_run(folder)
            st.error(str(exc))
        except models.WeightsUnavailableError as exc:
            st.error(str(exc))

# ------------------------------------------------------------------------------------- the live view
user_runs = runs.list_runs(include_shipped=False)
if not user_runs:
    st.info("No runs yet: launch one above.")
    st.stop()
names = [r.run_id for r in user_runs]
active = jobs.active_run()
default = st.session_state.get("tr_show") or (active.name if active else names[0])
shown = st.selectbox("Run", names, index=names.index(default) if default in names else 0, key="tr_run_pick")
st.session_state.tr_show = shown
folder = runs.resolve_run(shown)


def show_run(folder) -> None:
    state = jobs.effective_state(folder)
    status = runs.read_status(folder)
    rows = runs.read_metrics(folder)
    with st.container(key="live"):
        cols = st.columns([2, 1, 1, 1])
        cols[0].markdown(f"**{folder.name}** — status: **{state}**")
        if rows:
            cols[1].metric("Learning rate", f"{rows[-1]['learning_rate']:.2g}")
            cols[2].metric("Val accuracy", f"{rows[-1]['val_accuracy']:.2%}")
        if state in ("running", "queued"):
            progress = runs.progress_summary(folder)
            eta = f" — about {widgets.duration(progress.eta_seconds)} left" if progress.eta_seconds else ""
            st.progress(progress.fraction, text=f"{progress.text}{eta}")
            if cols[3].button("Stop", icon=":material/stop:", key="tr_stop"):
                jobs.stop(folder)
                st.toast("Stop requested: the run saves its model and ends after the current batch.")
        st.plotly_chart(figures.learning_curves(rows), key="curves")
        if state == "failed":
            st.error(f"The run failed: {status.get('error') or 'no error text was recorded'}")
        elif state == "interrupted":
            st.warning(
                "The training process ended without finishing (machine restart or killed). "
                "Resume continues from the last finished epoch."
            )
            if st.button("Resume", key="tr_resume"):
                jobs.start(folder, queue=True)
                st.rerun()
        if state in ("completed", "stopped") and rows:
            diagnosis = evaluate.diagnose_curves(rows)
            st.info(f"**Diagnosis** — {diagnosis.explanation()}")
            summary = runs.read_json(folder / runs.SUMMARY_FILE) or {}
            if summary:
                st.markdown(widgets.summary_line(summary))
    seen = st.session_state.get("tr_live_state")
    st.session_state.tr_live_state = (folder.name, state)
    if seen and seen[0] == folder.name and seen[1] != state:
        st.rerun()  # the run started or ended: redraw the whole page (diagnosis, run list)


if jobs.effective_state(folder) in ("running", "queued"):
    st.fragment(show_run, run_every=1.0)(folder)
else:
    show_run(folder)

# ------------------------------------------------------------------------------------------ run list
st.subheader("Recent runs")
st.dataframe(
    pd.DataFrame(
        [
            {
                "run": r.run_id,
                "model": models.DISPLAY_NAMES.get(r.model, r.model),
                "status": jobs.effective_state(r.folder),
                "test accuracy": r.test_accuracy,
            }
            for r in user_runs
        ]
    ),
    hide_index=True,
    column_config={"test accuracy": st.column_config.NumberColumn(format="percent")},
)
with st.expander("Delete a run"):
    doomed = st.selectbox("Run to delete", names, key="tr_delete_pick")
    sure = st.checkbox(f"Yes, delete {doomed} and everything in its folder", key="tr_delete_sure")

    def delete_chosen() -> None:
        target = runs.resolve_run(st.session_state.tr_delete_pick)
        if jobs.effective_state(target) in ("running", "queued"):
            st.session_state.tr_delete_error = "Stop the run before deleting it."
            return
        runs.delete_run(target)
        st.session_state.pop("tr_show", None)
        st.session_state.tr_delete_sure = False

    st.button("Delete", disabled=not sure, key="tr_delete", on_click=delete_chosen)
    if st.session_state.get("tr_delete_error"):
        st.error(st.session_state.pop("tr_delete_error"))
