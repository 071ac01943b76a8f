"""Grad-CAM: upload product photos (or take one, or open a test image) and see what the model predicts
and where it looked — on the 28×28 input, on the model's upscaled input and back on the photo."""

import numpy as np
import streamlit as st

from app import widgets
from fashion_lib import confidence, config, evaluate, explain, photos, runs, wording

NAMES = list(config.CLASS_NAMES)
ZOOM = 6  # 28 px shown at 168 px
AUTOMATIC = "automatic"
SIDE = f"{explain.MIN_AUTOMATIC_SIDE}×{explain.MIN_AUTOMATIC_SIDE}"

st.title("Where does the model look?")
st.markdown(
    "Grad-CAM colours the parts of the image that raised the score of a class (red: most). Photos are "
    "converted the way Fashion-MNIST itself was made — background removed, trimmed, resized, sharpened, "
    "centred, negated — and each step is shown."
)
ds = widgets.dataset_or_stop()

left, right = st.columns(2)
linked = st.query_params.get("run")  # a link from the error analysis names its model
if linked and st.session_state.get("cam_linked") != linked:  # once per link, then the user's choice
    st.session_state[widgets.LAST_CHOICE] = linked
    st.session_state.pop("cam_run", None)
    st.session_state.cam_linked = linked
with left:
    first = widgets.run_picker("Model", key="cam_run", need_model=True)
with right:
    second = None
    if first is not None and st.checkbox("Compare with a second model", key="cam_compare"):
        second = widgets.run_picker("Second model", key="cam_run_b", exclude=first.run_id, need_model=True)
if first is None:
    st.info("No trained model yet: train one on the Train page.")
    st.stop()
chosen_models = [m for m in (first, second) if m is not None]

c1, c2, c3 = st.columns(3)
target = c1.selectbox("Explain the class", ["predicted class", *NAMES], key="cam_class")
opacity = c2.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="cam_opacity")
if runs.is_collapsed(first):
    st.warning(
        f"**{first.label}** predicts one class for almost everything (a collapsed model): its heatmaps "
        "explain that class whatever the image shows. Pick another model to see what a working one looks at."
    )
try:
    first_model = widgets.loaded_model(first.folder)
except ValueError as exc:
    st.error(f"{exc}. Pick another model.")
    st.stop()
layers = explain.conv_layers(first_model)
layer_choice = c3.selectbox(
    "Layer (first model)",
    [AUTOMATIC, *layers],
    key="cam_layer",
    help="Earlier layers give finer maps, later ones more class-specific. Automatic: the last convolution, "
    f"or where its map is smaller than {SIDE}, the last activation whose map is at least {SIDE}.",
)
segment = st.toggle(
    "Remove busy backgrounds (GrabCut)",
    value=True,
    key="cam_segment",
    help="Off: only the corner-colour trim of the original procedure.",
)

SOURCES = ["Upload photos", "Take a photo", "Test image by index"]
# A link from the error analysis (?test_index=N) opens that test image directly.
source = st.radio(
    "Image", SOURCES, horizontal=True, key="cam_source", index=2 if "test_index" in st.query_params else 0
)
inputs = []  # (name, bytes or None, 28×28 image or None)
if source == "Upload photos":
    files = st.file_uploader(
        "Product photos: JPEG, PNG, WebP or BMP, up to 10 MB each (checked by content, not by name)",
        accept_multiple_files=True,
        key="cam_files",
    )
    inputs = [(f.name, f.getvalue(), None, None) for f in files or []]
elif source == "Take a photo":
    shot = st.camera_input("Photo of a product", key="cam_camera")
    if shot is not None:
        inputs = [("camera", shot.getvalue(), None, None)]
else:
    requested = str(st.query_params.get("test_index", "0"))
    default = min(int(requested), len(ds.y_test) - 1) if requested.isdigit() else 0
    index = st.number_input("Test-set index", 0, len(ds.y_test) - 1, default, key="cam_index")
    truth = NAMES[ds.y_test[index]]
    inputs = [(f"test image #{index} (true class {truth})", None, ds.x_test[index], truth)]

if not inputs:
    st.info("Upload one or several photos to start.")


def explain_with(model_info, image28: np.ndarray, conversion, truth: str | None) -> None:
    try:
        model = widgets.loaded_model(model_info.folder)
    except ValueError as exc:
        st.error(str(exc))
        return
    class_index = None if target == "predicted class" else NAMES.index(target)
    layer = None if (layer_choice == AUTOMATIC or model_info is not first) else layer_choice
    stats, features_of = widgets.familiar(model_info.folder)
    # a photo: the way round this model is surer of; the same pass gives the familiarity features
    conversion, image28, features = confidence.orient(features_of, image28, conversion, stats)
    cam = explain.gradcam(model, image28[None, ..., None], class_index, layer)
    probs, heat = cam.probabilities[0], cam.heatmaps[0]
    distance = float(stats.distances(features[None])[0])
    verdict = confidence.decide(probs, conversion, distance, stats)
    tone, text = verdict.against(truth)
    getattr(st, tone)(f"**{text}**")
    classes, shares = evaluate.top_k(probs[None], 3)
    st.markdown(
        f"**{model_info.label}** — "
        + ", ".join(
            f"{NAMES[c]} **{wording.confidence(v)}**" for c, v in zip(classes[0], shares[0], strict=True)
        )
    )
    if note := confidence.mirror_note(conversion, verdict):
        st.caption(note)
    st.caption(
        f"Explaining '{NAMES[cam.class_index[0]]}' at layer `{cam.layer}` ({explain.map_size(heat.shape)})"
    )
    views = [explain.overlay(widgets.upscale(image28, ZOOM), heat, opacity)]
    captions = ["on the 28×28 input"]
    model_view = explain.model_input_view(model, image28)
    if model_view.shape != image28.shape:
        views.append(explain.overlay(model_view, heat, opacity))
        captions.append(f"on the model's {model_view.shape[0]}×{model_view.shape[1]} input")
    if conversion is not None:
        photo_heat = photos.map_to_photo(heat, conversion)
        views.append(explain.overlay(conversion.steps["photo"], photo_heat, opacity, conversion.crop_box))
        captions.append("back on the photo")
    st.image([widgets.thumbnail(view, 220) for view in views], caption=captions, width=220)


for n, (name, payload, image28, truth) in enumerate(inputs):
    with st.container(border=True, key=f"cam_item_{n}"):
        st.markdown(f"**{name}**")
        conversion = None
        if payload is not None:
            try:
                conversion = widgets.converted(payload, segment)
            except photos.PhotoError as exc:
                st.error(f"{name}: {exc}")
                continue
            image28 = conversion.image
            st.image(
                [widgets.thumbnail(step) for step in conversion.steps.values()],
                caption=list(conversion.steps),
                width=130,
            )
        columns = st.columns(len(chosen_models))
        for column, model_info in zip(columns, chosen_models, strict=True):
            with column:
                explain_with(model_info, image28, conversion, truth)
