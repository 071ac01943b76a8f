"""Tuning: start a hyperparameter search (Optuna) as a background job, explore what a study found while it
runs, and train the winner on all the data."""

import pandas as pd
import streamlit as st

from app import widgets
from fashion_lib import figures, jobs, models, runs, wording
from fashion_lib.training import start_run
from fashion_lib.tuning import results, search, storage
from fashion_lib.tuning import space as spaces
from fashion_lib.tuning.config import FINAL_EPOCHS, FINAL_VAL_FRACTION, PRUNERS, TuneConfig

SUBSETS = {"all 60,000": 0, "20,000": 20000, "10,000": 10000, "5,000": 5000, "2,000": 2000}  # balanced

st.title("Hyperparameter tuning")
st.markdown(
    "A search trains many small runs (a balanced subset, a validation split — never the test set), lets "
    "Optuna's sampler pick the next settings from what the earlier ones scored, and stops poor trials early "
    "(pruning). Studies are kept in a database, so a search can be continued later or shared by several "
    "machines; each trial keeps its run folder with its learning curves."
)
try:
    store = storage.open_store(wait_s=storage.READ_WAIT_S)
    summaries = storage.study_summaries(store)
except storage.TuningStoreError as exc:
    st.error(str(exc))
    st.stop()
st.caption(f"Study database: `{storage.redacted(store.url)}` (setting FASHION_TUNING_DB)")

# --------------------------------------------------------------------------------------- start a search
with st.expander("Start a search", expanded=not summaries), st.container(key="tune_form"):
    c1, c2, c3 = st.columns(3)
    study_name = c1.text_input("Study name", value="baseline-search", key="tu_study")
    model = c1.selectbox("Model", models.MODEL_NAMES, format_func=models.DISPLAY_NAMES.get, key="tu_model")
    trials = c2.number_input("Trials to add", 1, 500, 20, key="tu_trials")
    subset_label = c2.selectbox(
        "Training images per trial",
        list(SUBSETS),
        index=2,
        key="tu_subset",
        help=wording.BALANCED_SUBSET,
    )
    epochs = c2.number_input("Epochs per trial", 1, 50, 5, key="tu_epochs")
    pruner = c3.selectbox(
        "Pruner",
        PRUNERS,
        key="tu_pruner",
        help="median: stop a trial below the median of earlier trials at the same epoch, judged from a "
        "third of its epochs on (after epoch 2 at the earliest); halving: successive halving; none: never "
        "prune",
    )
    workers = c3.number_input(
        "Worker processes",
        1,
        8,
        1,
        key="tu_workers",
        help="This machine has few cores: more workers share them.",
    )
    minutes = c3.number_input("Time limit (minutes, 0 = none)", 0, 24 * 60, 0, key="tu_minutes")
    defaults_first = c1.checkbox(
        "Try the default settings first",
        value=True,
        key="tu_defaults_first",
        help="A new study's trial 0 trains the default configuration on the same images and budget: the "
        "reference the searched trials are measured against.",
    )
    st.markdown(
        "**Search space** — leave a row as it is to search it as declared; write a narrower range "
        "(`0.001:0.005`) or fewer choices (`64,128`), or a value to fix it."
    )
    edited = st.data_editor(
        pd.DataFrame(spaces.editable_rows(spaces.default_space(model))),
        hide_index=True,
        disabled=["parameter", "declared", "what it is"],
        key=f"tu_space_{model}",
    )
    fixed, ranges = spaces.narrowing_from_rows(edited.to_dict("records"))
    tc, problem = None, None
    try:
        tc = TuneConfig(
            study=study_name.strip(),
            model=model,
            trials=int(trials),
            timeout=float(minutes) * 60,
            subset=SUBSETS[subset_label],
            epochs=int(epochs),
            pruner=pruner,
            workers=int(workers),
            defaults_first=defaults_first,
            fixed=fixed,
            ranges=ranges,
        )
    except ValueError as exc:
        problem = str(exc)
    if tc is not None and any(s.name == tc.study for s in summaries):
        tc, problem = search.continuing(store, tc)
    if problem:
        st.error(problem)
    if any(s.name == study_name.strip() for s in summaries):
        st.caption(f"Study '{study_name.strip()}' exists: the new trials are added to it.")
    busy = jobs.active_job()

    def launch(tc: TuneConfig, queue: bool) -> None:
        try:
            job = search.create_job(tc)
            jobs.launch(job, queue=queue, kind="tune")
        except jobs.START_ERRORS as exc:
            st.session_state.tu_message = ("error", str(exc))
            return
        st.session_state.tu_wanted = tc.study  # shown once it is in the database
        st.session_state.tu_message = (
            "success",
            f"Search started: {job.name}" + (" (queued)" if queue else ""),
        )

    # Launched from the page body, with the settings this very run read: a callback's arguments are bound
    # when the page was drawn and would miss a value typed just before the click.
    if st.button(
        "Start the search" + (" (queued: another job is running)" if busy else ""),
        type="primary",
        disabled=tc is None,
        icon=":material/play_arrow:",
        key="tu_launch",
    ):
        launch(tc, busy is not None)
    if "tu_message" in st.session_state:
        level, text = st.session_state.pop("tu_message")
        (st.error if level == "error" else st.success)(text)


# --------------------------------------------------------------------------------------- searches running
def active_searches() -> list[tuple]:
    return [(job, state) for job, state in search.list_jobs()[:5] if state.active]


def show_searches(drawn: list[str], known: set[str]) -> None:
    """The running searches, refreshed; the whole page redraws when one starts or ends, or when a running
    search's study first appears in the database (the explorer then shows it)."""
    now = active_searches()
    unknown = {search.study_of(job) for job, _ in now} - known
    if [job.name for job, _ in now] != drawn or (unknown and unknown & _names()):
        st.rerun()
    for job, state in now:
        with st.container(border=True, key=f"tu_job_{job.name}"):
            cols = st.columns([4, 1])
            cols[0].markdown(f"**Search {job.name}** — {state.state}")
            cols[1].button(
                "Stop", key=f"tu_stop_{job.name}", on_click=jobs.stop, args=(job,), icon=":material/stop:"
            )
            log = jobs.LOG_FILES["tune"]
            tail = jobs.read_log_tail(job, 6, log)
            if not tail and not (job / log).exists():
                tail = "(started from a command line: its progress lines print there)"
            st.code(tail or "(starting)", language=None)


def _names() -> set[str]:
    try:
        return set(storage.study_names(store))
    except storage.TuningStoreError:
        return set()


searching = active_searches()
if searching:
    st.fragment(show_searches, run_every=2.0)([job.name for job, _ in searching], {s.name for s in summaries})

# -------------------------------------------------------------------------------------------- explorer
if not summaries:
    st.info("No study yet: start a search above, or run `python -m fashion_lib tune --study NAME`.")
    st.stop()
by_name = {s.name: s for s in summaries}
running_studies = [name for name in (search.study_of(job) for job, _ in searching) if name in by_name]
if st.session_state.get("tu_wanted") in by_name:  # a search just started from this page
    st.session_state.tu_pick = st.session_state.pop("tu_wanted")
elif st.session_state.get("tu_pick") not in by_name:
    st.session_state.tu_pick = (running_studies or [summaries[0].name])[0]


def study_label(name: str) -> str:
    """What the study is; its counts change while it runs, so they are in the table, not in the label (a
    picker's choice is matched by its label: a changing label would drop it)."""
    model = by_name[name].model
    return f"{name} — {models.DISPLAY_NAMES.get(model, model or '?')}"


chosen = st.selectbox("Study", list(by_name), key="tu_pick", format_func=study_label)
with st.expander(f"All studies in the database ({len(summaries)})"):
    st.dataframe(
        pd.DataFrame(results.study_rows(summaries)),
        hide_index=True,
        column_config={"best validation accuracy": st.column_config.NumberColumn(format="percent")},
    )


def show_study(name: str) -> None:
    try:
        study = storage.load_study(store, name)
        search.fail_stale(study)  # a trial whose worker died is not shown running for ever
        table = storage.guarded(store, results.trial_table, study)
    except storage.TuningStoreError as exc:
        st.error(str(exc))
        return
    counts = results.state_counts(table)
    best = results.best_trial(study)
    cols = st.columns(5)
    cols[0].metric("Trials", len(table))
    cols[1].metric("Complete", counts["complete"])
    cols[2].metric("Pruned", counts["pruned"])
    cols[3].metric("Failed / stopped / running", counts["failed, stopped or running"])
    cols[4].metric("Best validation accuracy", wording.percent(best.value if best else None))
    verdict = results.against_defaults_text(study)
    if verdict:
        st.caption(verdict)

    st.subheader("Trials")
    states = st.multiselect(
        "Show",
        sorted(table["state"].unique()) if len(table) else [],
        key=f"tu_states_{name}",
        placeholder="all states",
    )
    shown = table[table["state"].isin(states)] if states else table
    with st.container(key="tu_trial_table"):
        event = st.dataframe(
            shown,
            hide_index=True,
            on_select="rerun",
            selection_mode="single-row",
            key=f"tu_table_{name}",
            column_config={
                "validation accuracy": st.column_config.NumberColumn(format="percent"),
                "seconds": st.column_config.NumberColumn(format="%.0f"),
            },
        )
    picked = event.selection.rows if event is not None else []
    number = int(shown.iloc[picked[0]]["trial"]) if picked else (best.number if best else None)
    if number is not None:
        row = table[table["trial"] == number].iloc[0]
        info = results.run_of(row["run"])
        st.markdown(
            f"**Trial {number}** ({row['state']}) — learning curves of its run `{row['run']}`"
            + ("" if picked else " (the best trial; select a row to open another)")
        )
        if info is None:
            st.caption("Its run folder is gone.")
        else:
            rows, problems = runs.read_metrics_checked(info.folder)
            problems = [*info.problems, *(p for p in problems if p not in info.problems)]
            if problems:
                st.warning("**This trial's run folder is damaged:** " + "; ".join(problems[:3]))
            if rows:
                with st.container(key="tu_trial_curves"):
                    st.plotly_chart(figures.learning_curves(rows), key="tu_curves")
            else:
                st.caption(
                    "Its run has no finished epoch to draw (none yet, or its metrics file is missing)."
                )

    st.subheader("What the search found")
    searched = sorted({c for c in table.columns if c in {p.name for p in results.space_of(study)}})
    contour = st.multiselect(
        "Contour plot parameters", searched, default=searched[:2], max_selections=2, key=f"tu_contour_{name}"
    )
    charts = results.study_figures(study, contour)
    tabs = st.tabs(list(charts))
    for tab, (title, figure) in zip(tabs, charts.items(), strict=True):
        with tab:
            if isinstance(figure, str):
                st.caption(f"{title}: {figure}.")
            else:
                st.plotly_chart(figure, key=f"tu_fig_{title}")

    st.subheader("Search space")
    space = results.space_of(study)
    if space:
        st.dataframe(results.space_table(space), hide_index=True)
    for change in results.space_changes(study):
        st.caption(change)
    settings = results.settings_of(study)
    if settings is not None:
        st.caption(
            f"Last search: {settings.subset or 60000:,} images per trial, {settings.epochs} epochs, pruner "
            f"{settings.pruner}, seed {settings.seed}; fixed: "
            + (", ".join(f"{k} = {v}" for k, v in settings.fixed.items()) or "nothing")
            + "."
        )

    st.subheader("Train the final model")
    finished = table[table["state"] == "complete"]
    if settings is None or finished.empty:
        st.caption("Needs a completed trial of a study made by this app.")
        return
    c1, c2 = st.columns(2)
    ranked = finished.sort_values("validation accuracy", ascending=False)
    labels = {
        int(r["trial"]): f"trial {int(r['trial'])} — validation {wording.percent(r['validation accuracy'])}"
        for _, r in ranked.iterrows()
    }
    trial_number = c1.selectbox("Trial", list(labels), key=f"tu_final_trial_{name}", format_func=labels.get)
    final_epochs = c2.number_input(
        "Epochs on the full training set",
        1,
        100,
        max(FINAL_EPOCHS, settings.epochs),
        key=f"tu_final_epochs_{name}",
    )
    final = settings.final_config(results.final_params(study, int(trial_number)), int(final_epochs))
    st.caption(
        f"Trains on the full training set ({wording.percent(1 - FINAL_VAL_FRACTION, 0)} of the 60,000 "
        f"images; {wording.percent(FINAL_VAL_FRACTION, 0)} held out for its validation curve and "
        "calibration, as the shipped models) and evaluates on the test set; the comparison page then "
        "shows it beside the other models."
    )

    def train_final() -> None:
        try:
            folder = start_run(final)
            jobs.launch(folder, queue=True)
        except jobs.START_ERRORS as exc:
            st.session_state.tu_final_message = ("error", str(exc))
            return
        st.session_state.tr_run_pick = folder.name  # the Train page opens on it
        st.session_state.tu_final_message = (
            "success",
            f"Training {folder.name}: follow it on the Train page.",
        )

    st.button(
        "Train the final model with these parameters",
        key="tu_final",
        on_click=train_final,
        icon=":material/model_training:",
    )
    if "tu_final_message" in st.session_state:
        level, text = st.session_state.pop("tu_final_message")
        (st.error if level == "error" else st.success)(text)
        if level == "success":
            st.markdown("[Open the Train page](/training) to watch it.")


running = any(search.study_of(job) == chosen for job, _ in searching)
if running:
    st.fragment(show_study, run_every=2.0)(chosen)
else:
    show_study(chosen)
widgets.data_source_banner(widgets.dataset_or_stop())
