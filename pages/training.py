"""Training: a form for the training config, launched as a background process, with live curves."""

import pandas as pd
import streamlit as st

from app import widgets
from fashion_lib import augment, evaluate, figures, jobs, lifecycle, models, runs, wording
from fashion_lib.training import (
    FIELD_HELP,
    LR_SCHEDULES,
    OPTIMIZERS,
    TrainConfig,
    estimates,
    speed,
    start_run,
)

SUBSETS = {"all 60,000": 0, "20,000": 20000, "10,000": 10000, "5,000": 5000, "1,000": 1000}  # balanced
TEST_SUBSETS = {"all 10,000": 0, "2,000": 2000, "500": 500}


def form_config() -> tuple[TrainConfig | None, str | None]:
    """The form's training config from the widgets' current values (``st.session_state``), or why there is
    none. Launch reads it when pressed: arguments bound when the page was drawn would miss a value typed
    just before the click."""
    v = st.session_state
    transfer = v.tr_model in models.TRANSFER_MODELS
    try:
        return TrainConfig(
            model=v.tr_model,
            input_size=int(v.tr_size),
            weights=v.tr_weights if transfer else "none",
            subset=SUBSETS[v.tr_subset],
            test_subset=TEST_SUBSETS[v.tr_test_subset],
            epochs=int(v.tr_epochs),
            batch_size=int(v.tr_batch),
            learning_rate=float(v.tr_lr),
            optimizer=v.tr_opt,
            lr_schedule=v.tr_schedule,
            augment=augment.load_preset(v.tr_preset) if v.tr_preset != "none" else augment.AugmentConfig(),
            fine_tune=bool(v.tr_ft and transfer),
            fine_tune_layers=int(v.tr_ft_layers),
            fine_tune_epochs=int(v.tr_ft_epochs),
            fine_tune_learning_rate=float(v.tr_ft_lr),
            label_smoothing=float(v.tr_smoothing),
            compute_dtype="bfloat16" if v.tr_bf16 else "float32",
            temperature_scaling=bool(v.tr_calibrate),
            early_stopping_patience=int(v.tr_patience),
            photo_mix=int(v.tr_photos),
            seed=int(v.tr_seed),
        ), None
    except ValueError as exc:
        return None, str(exc)


st.title("Train a model")
widgets.dataset_or_stop()

# ------------------------------------------------------------------------------------------ the form
with st.container(key="train_form", border=True):
    c1, c2, c3 = st.columns(3)
    model = c1.selectbox("Model", models.MODEL_NAMES, format_func=models.DISPLAY_NAMES.get, key="tr_model")
    transfer = model in models.TRANSFER_MODELS
    c1.select_slider(
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
    c2.selectbox("Training images", list(SUBSETS), index=1, key="tr_subset", help=wording.BALANCED_SUBSET)
    c2.selectbox("Test images", list(TEST_SUBSETS), key="tr_test_subset", help=wording.BALANCED_SUBSET)
    c2.number_input("Epochs", 1, 100, 5, key="tr_epochs")
    c2.select_slider("Batch size", [16, 32, 64, 128, 256], value=128, key="tr_batch")
    c3.select_slider(
        "Learning rate",
        [1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 1e-2],
        value=1e-3,
        key="tr_lr",
        format_func=lambda v: f"{v:g}",
    )
    c3.selectbox("Optimizer", OPTIMIZERS, key="tr_opt")
    c3.selectbox("Learning-rate schedule", LR_SCHEDULES, key="tr_schedule")
    presets = augment.list_presets()
    if st.session_state.get("tr_preset", "none") not in ["none", *presets]:  # a kept choice since deleted
        st.session_state.tr_preset = "none"
    c3.selectbox(
        "Augmentation preset",
        ["none", *presets],
        key="tr_preset",
        help="Make presets on the Augmentation page.",
    )
    d1, d2, d3 = st.columns(3)
    fine_tune = d1.checkbox("Fine-tune (stage 2)", key="tr_ft", disabled=not transfer)
    d1.number_input("Layers to unfreeze", 1, 250, 30, key="tr_ft_layers", disabled=not fine_tune)
    d2.number_input("Fine-tuning epochs", 1, 50, 2, key="tr_ft_epochs", disabled=not fine_tune)
    d2.select_slider(
        "Fine-tuning learning rate",
        [1e-5, 3e-5, 1e-4, 3e-4, 1e-3],
        value=1e-4,
        key="tr_ft_lr",
        disabled=not fine_tune,
        format_func=lambda v: f"{v:g}",
    )
    d1.select_slider(
        "Product photos mixed in",
        [0, 1000, 2000, 5000, 10000],
        value=0,
        key="tr_photos",
        help=FIELD_HELP["photo_mix"],
        format_func=lambda n: f"{n:,}",
    )
    d2.checkbox("bfloat16 compute", key="tr_bf16", help=FIELD_HELP["compute_dtype"])
    d2.checkbox(
        "Calibrate confidences",
        value=True,
        key="tr_calibrate",
        help=FIELD_HELP["temperature_scaling"],
    )
    d3.number_input("Early-stopping patience (0 = off)", 0, 20, 3, key="tr_patience")
    d3.number_input("Seed", 0, 10**6, 42, key="tr_seed")
    d3.select_slider(
        "Label smoothing",
        [0.0, 0.05, 0.1, 0.2],
        value=0.0,
        key="tr_smoothing",
        help=FIELD_HELP["label_smoothing"],
    )

    cfg, problem = form_config()
    warning = estimates.memory_warning(cfg) if cfg is not None else None
    if warning:
        st.warning(warning)
    if cfg is not None:
        estimate = estimates.estimate_seconds(cfg)
        parts = ", ".join(f"{k} {widgets.duration(v)}" for k, v in estimate.phases.items())
        e1, e2 = st.columns([5, 1])
        total = widgets.duration(estimate.written_total)
        e1.markdown(f"**Estimated time on this machine:** {total} ({parts})")
        e1.caption(f"Basis: {estimate.basis}.")
        if not estimate.measured and e2.button(
            "Measure",
            key="tr_measure",
            help="Times a few real training steps of this configuration here (a few seconds).",
        ):
            with st.spinner("Timing a few training steps…"):
                speed.measure(cfg)
            st.rerun()
    else:
        st.error(problem)

    active = jobs.active_job()
    if active is not None:
        st.warning(f"**{active.name}** is running now; one job at a time keeps the CPU cores free for it.")
        st.checkbox("Queue my run: start it when that one finishes", key="tr_queue")

    def launch() -> None:
        """Create the run from the form as it is now and start it; show it in the live view at once (a
        button callback, so it runs before the page redraws)."""
        cfg, problem = form_config()
        if cfg is None:
            st.session_state.tr_message = ("error", problem, None)
            return
        queue = bool(st.session_state.get("tr_queue"))
        try:
            folder = start_run(cfg)
            jobs.launch(folder, queue=queue)
        except jobs.START_ERRORS as exc:
            st.session_state.tr_message = ("error", str(exc), None)
            return
        st.session_state.tr_run_pick = folder.name
        st.session_state.tr_queue = False
        st.session_state.tr_message = (
            "success",
            f"Started {folder.name}" + (" (queued)" if queue else ""),
            folder.name,
        )

    st.button(
        "Launch training",
        type="primary",
        disabled=cfg is None,
        icon=":material/play_arrow:",
        key="tr_launch",
        on_click=launch,
    )
    if "tr_message" in st.session_state:
        # An error shows once; "Started …" stays while that run is the one shown (the page redraws often).
        level, text, run_id = st.session_state.tr_message
        if level == "error" or st.session_state.get("tr_run_pick") != run_id:
            del st.session_state.tr_message
        if level == "error" or st.session_state.get("tr_run_pick") == run_id:
            (st.error if level == "error" else st.success)(text)

# ------------------------------------------------------------------------------------- the live view
user_runs = runs.list_runs(include_shipped=False)
if not user_runs:
    st.info("No runs of your own yet (the shipped models are listed on Home): launch one above.")
    st.stop()
by_id = {r.run_id: r for r in user_runs}
if st.session_state.get("tr_run_pick") not in by_id:
    active = jobs.active_job()
    st.session_state.tr_run_pick = active.name if active and active.name in by_id else user_runs[0].run_id
# The run watched lives in a key of its own, not in the selectbox's: Streamlit can drop a widget's state
# when a fragment's rerun (a run ending) redraws the page, and the page would jump to another run.
st.session_state.tr_run_select = st.session_state.tr_run_pick
shown = st.selectbox(
    "Run",
    list(by_id),
    key="tr_run_select",
    format_func=lambda rid: f"{runs.picker_name(by_id[rid])} — {rid}",  # no state in it: see picker_name
    on_change=lambda: st.session_state.update(tr_run_pick=st.session_state.tr_run_select),
)
folder = by_id[shown].folder


def act(action: str, folder) -> None:
    """Stop, resume, train again or delete (a button callback: the page redraws with the result)."""
    try:
        if action == jobs.STOP:
            jobs.stop(folder)
            st.session_state.tr_action_message = (
                "success",
                "Stop requested: the run saves its model after the current batch.",
            )
        elif action == jobs.RESUME:
            jobs.start(folder, queue=True)
            st.session_state.tr_action_message = ("success", f"Resuming {folder.name}.")
        elif action == jobs.AGAIN:
            again = start_run(TrainConfig.from_run(folder))
            jobs.launch(again, queue=True)
            st.session_state.tr_run_pick = again.name
            st.session_state.tr_action_message = ("success", f"Started {again.name} with the same settings.")
        elif action == jobs.DELETE:
            runs.delete_run(folder)
            st.session_state.pop("tr_run_pick", None)
    except jobs.START_ERRORS as exc:  # deleting refuses with some of these too
        st.session_state.tr_action_message = ("error", str(exc))


def show_run(folder) -> None:
    info = runs.read_run(folder)
    if info is None:
        st.warning(f"{folder.name} is gone (deleted).")
        return
    state = lifecycle.state_of(folder)
    rows = runs.read_metrics(folder)
    with st.container(key="live"):
        cols = st.columns([2, 1, 1, 1])
        cols[0].markdown(f"**{folder.name}** — status: **{state.state}**")
        if rows and rows[-1]["learning_rate"] is not None:
            cols[1].metric("Learning rate", f"{rows[-1]['learning_rate']:.2g}")
        if rows and rows[-1]["val_accuracy"] is not None:
            cols[2].metric("Val accuracy", wording.percent(rows[-1]["val_accuracy"], 1))
        if state.state in (lifecycle.RUNNING, lifecycle.STOPPING, lifecycle.QUEUED):
            progress = runs.progress_summary(folder)
            eta = f" — about {widgets.duration(progress.eta_seconds)} left" if progress.eta_seconds else ""
            st.progress(progress.fraction, text=f"{progress.text}{eta}")
        message = jobs.state_message(folder, state)
        if message:
            getattr(st, message[0])(message[1])
        if "tr_action_message" in st.session_state:
            level, text = st.session_state.pop("tr_action_message")
            (st.error if level == "error" else st.success)(text)
        if info.problems:
            st.error("**This run folder is damaged:** " + "; ".join(info.problems))
        buttons = st.columns(4)
        for column, action in zip(buttons, jobs.actions(state), strict=False):
            if action == jobs.DELETE:
                continue  # deleting has its own confirmation below
            column.button(
                action.capitalize(),
                key=f"tr_{action.replace(' ', '_')}",
                on_click=act,
                args=(action, folder),
                help={
                    jobs.STOP: "Ends after the current batch with the model saved.",
                    jobs.RESUME: "Continues from the last finished epoch.",
                    jobs.AGAIN: "A new run with the same settings.",
                }.get(action),
            )
        if rows:
            st.plotly_chart(figures.learning_curves(rows), key="curves")
        else:
            st.caption("No epoch has finished yet: the learning curves appear after the first one.")
        if state.state in (lifecycle.FAILED, lifecycle.INTERRUPTED):
            tail = jobs.read_log_tail(folder, 30)
            with st.expander("The end of the training log", expanded=state.state == lifecycle.FAILED):
                st.code(tail or "(the log is empty)", language=None)
        ended = state.state in (lifecycle.COMPLETED, lifecycle.STOPPED)
        collapse = runs.collapse_of(info) if state.state == lifecycle.COMPLETED else None
        if collapse is not None and collapse.collapsed:  # it read "Not enough epochs" for a one-class model
            st.error(f"**{collapse.sentence()}** {evaluate.COLLAPSE_CAUSES} (Error analysis shows it.)")
        elif ended and rows:
            st.info(f"**Diagnosis** — {evaluate.diagnose_curves(rows).explanation()}")
        if ended and info.summary is not None:
            st.markdown(wording.summary_line(info.summary))
    seen = st.session_state.get("tr_live_state")
    st.session_state.tr_live_state = (folder.name, state.state)
    if seen and seen[0] == folder.name and seen[1] != state.state:
        st.rerun()  # the run started or ended: redraw the whole page (diagnosis, run list)


if lifecycle.state_of(folder).active:
    st.fragment(show_run, run_every=1.0)(folder)
else:
    show_run(folder)

# ------------------------------------------------------------------------------------------ run list
st.subheader("Recent runs")
st.dataframe(
    pd.DataFrame(runs.run_rows(user_runs)),
    hide_index=True,
)
with st.expander("Delete a run"):
    doomed = st.selectbox("Run to delete", list(by_id), key="tr_delete_pick")
    sure = st.checkbox(f"Yes, delete {doomed} and everything in its folder", key="tr_delete_sure")

    def delete_chosen() -> None:
        try:
            runs.delete_run(by_id[st.session_state.tr_delete_pick].folder)
        except (lifecycle.RunStateError, ValueError, OSError) as exc:
            st.session_state.tr_delete_error = str(exc)
            return
        st.session_state.pop("tr_run_pick", None)
        st.session_state.tr_delete_sure = False

    st.button("Delete", disabled=not sure, key="tr_delete", on_click=delete_chosen)
    if st.session_state.get("tr_delete_error"):
        st.error(st.session_state.pop("tr_delete_error"))
