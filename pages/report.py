"""Report: the final technical report, generated from the saved runs (and a tuning study) — shown here and
downloadable as one self-contained HTML file or as Markdown with its pictures."""

import streamlit as st

from app import widgets
from fashion_lib import report, runs
from fashion_lib.tuning import storage

st.title("Technical report")
st.markdown(
    "Every number below is read from what the chosen runs saved (summaries, metrics, test predictions, "
    "models); nothing is retrained. Where the original design's claims differ from the measurements, both "
    "are shown; what was not run says so."
)
ds = widgets.dataset_or_stop()

candidates = runs.comparable_runs()
by_id = {r.run_id: r for r in candidates}
chosen = st.multiselect(
    "Models in the report",
    list(by_id),
    default=[r.run_id for r in report.default_runs()],
    format_func=lambda rid: by_id[rid].label,
    key="rep_runs",
)
try:
    studies = storage.study_names(storage.open_store(wait_s=storage.READ_WAIT_S))
except storage.TuningStoreError as exc:
    studies = []
    st.caption(f"Tuning studies cannot be listed: {exc}")
study = st.selectbox("Tuning study", ["", *studies], format_func=lambda s: s or "none", key="rep_study")

request = (tuple(chosen), study or None)
if st.button("Build the report", type="primary", icon=":material/description:", key="rep_build"):
    with st.spinner("Reading the runs' artifacts…"):
        try:
            built = report.build([by_id[rid] for rid in chosen], study or None, ds)
            html_text = report.to_html(built)
            st.session_state.rep_built = (request, built, html_text, report.markdown_zip(built, html_text))
        except (ValueError, OSError, storage.TuningStoreError) as exc:  # a run's files damaged meanwhile
            st.error(f"The report could not be built: {exc}")
            st.stop()

saved = st.session_state.get("rep_built")
if saved is None or saved[0] != request:
    st.info("Choose the models (and a study), then build the report.")
    st.stop()
_, built, html_text, zipped = saved
c1, c2, c3 = st.columns([1, 1, 2])
c1.download_button(
    "Download HTML",
    html_text,
    file_name="fashion-mnist-report.html",
    mime="text/html",
    key="rep_html",
    icon=":material/download:",
)
c2.download_button(
    "Download Markdown (zip)",
    zipped,
    file_name="fashion-mnist-report.zip",
    mime="application/zip",
    key="rep_zip",
    icon=":material/download:",
)
c3.caption(f"Built in {built.seconds:.1f} s at {built.generated}.")

for number, section in enumerate(built.sections):
    st.header(section.title)
    for index, block in enumerate(section.blocks):
        if isinstance(block, report.Text):
            st.markdown(block.markdown)
        elif isinstance(block, report.Table):
            if block.caption:
                st.caption(block.caption)
            frame = report.table_for_markdown_cells(block.frame)  # st.table wraps: no column cut off
            st.table(frame.set_index(frame.columns[0]) if len(frame.columns) > 1 else frame)
        elif isinstance(block, report.Chart):
            st.plotly_chart(block.figure, key=f"rep_chart_{number}_{index}")
            if block.caption:
                st.caption(block.caption)
        elif isinstance(block, report.Picture):
            st.image(block.png, caption=None)
            st.markdown(block.caption)
        elif isinstance(block, report.Missing):
            st.warning(f"**Not run:** {block.text}")
