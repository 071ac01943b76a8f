"""Augmentation preview: the settings as one AugmentConfig, originals next to augmented versions,
warnings when a setting would break the label's meaning, and named presets for training."""

import numpy as np
import pandas as pd
import streamlit as st

from app import widgets
from fashion_lib import augment, config, stats

NAMES = list(config.CLASS_NAMES)

ds = widgets.dataset_or_stop()
st.title("Augmentation preview")
st.markdown(
    "Choose the random transforms used while training. What you see here comes from the same Keras layers "
    "the training pipeline applies; save the settings as a preset to train with them."
)

for key, value in (("aug_draw", 0), ("aug_sample_seed", 0)):
    st.session_state.setdefault(key, value)

with st.container(key="aug_controls", border=True):
    c1, c2, c3 = st.columns(3)
    flip_h = c1.checkbox("Horizontal flip", value=True, key="aug_flip_h")
    flip_v = c1.checkbox("Vertical flip", key="aug_flip_v")
    rotation_deg = c2.slider("Rotation (± degrees)", 0, 180, 10, step=5, key="aug_rotation")
    zoom = c2.slider("Zoom (± share of size)", 0.0, 0.5, 0.1, step=0.05, key="aug_zoom")
    translation = c3.slider("Translation (± share of size)", 0.0, 0.4, 0.1, step=0.05, key="aug_translation")
    contrast = c3.slider("Contrast (± factor)", 0.0, 0.9, 0.0, step=0.1, key="aug_contrast")
    erasing = c3.slider(
        "Random erasing (share of images)",
        0.0,
        1.0,
        0.0,
        step=0.1,
        key="aug_erasing",
        help="In this share of images one rectangle (2–33 % of the image) is replaced by noise (about half "
        "of its pixels black, the rest random greys).",
    )
    seed = c1.number_input("Seed", min_value=0, value=0, step=1, key="aug_seed")

cfg = augment.AugmentConfig(
    flip_horizontal=flip_h,
    flip_vertical=flip_v,
    rotation=rotation_deg / 360,
    zoom=zoom,
    translation=translation,
    contrast=contrast,
    erasing=erasing,
    seed=int(seed),
)
st.caption(f"Settings: {cfg.describe()}" + (" — the identity." if cfg.is_identity else "."))

st.subheader("Originals and augmented versions")
left, middle, right, far = st.columns([2, 2, 1, 1])
pick_class = left.selectbox("Class", ["any", *NAMES], key="aug_class")
index_text = middle.text_input("Or training-image indices (comma-separated)", key="aug_indices")
versions = right.slider("Versions", 1, 9, 6, key="aug_versions")


def resample() -> None:
    st.session_state.aug_draw += 1
    st.session_state.aug_sample_seed += 1


far.button("Re-sample", on_click=resample, icon=":material/casino:", key="aug_resample")

indices = []
if index_text.strip():
    try:
        indices = stats.parse_indices(index_text, len(ds.y_train))
    except ValueError as exc:
        st.error(f"{str(exc)[0].upper()}{str(exc)[1:]}.")
if not indices:
    class_index = None if pick_class == "any" else NAMES.index(pick_class)
    indices = stats.preview_sample(ds.y_train, class_index, 3, st.session_state.aug_sample_seed)

draw_cfg = augment.AugmentConfig(**{**cfg.to_dict(), "seed": cfg.seed + st.session_state.aug_draw})
with st.container(key="aug_preview"):
    for i in indices[:6]:
        originals = np.repeat(ds.x_train[i][None], versions, axis=0)
        augmented = augment.augment_batch(originals, draw_cfg)
        row = np.concatenate([ds.x_train[i][None], augmented])
        captions = [f"#{i} {NAMES[ds.y_train[i]]} (original)"] + [f"version {k + 1}" for k in range(versions)]
        widgets.image_grid(row, captions, columns=versions + 1)

risks = augment.label_risks(cfg)
st.subheader("Does it keep the label's meaning?")
if not risks:
    st.success("No setting is strong enough to change what an image shows.")
for risk in risks:
    st.warning(f"**{risk.setting.capitalize()}** — {risk.message}")
    examples = [int(np.flatnonzero(ds.y_train == NAMES.index(name))[0]) for name in risk.example_classes]
    worst = augment.apply_extreme(ds.x_train[examples], risk.worst_case)
    images = np.concatenate([ds.x_train[examples], worst])
    captions = [f"#{i} {NAMES[ds.y_train[i]]}" for i in examples] + [
        f"{risk.setting} at full strength" for _ in examples
    ]
    widgets.image_grid(images, captions, columns=len(examples), key=f"risk_{risk.setting.replace(' ', '_')}")

st.subheader("Save as a preset")
name_col, save_col = st.columns([3, 1])
preset_name = name_col.text_input("Preset name", placeholder="e.g. gentle", key="aug_preset_name")
if save_col.button("Save preset", icon=":material/save:", key="aug_save"):
    try:
        path = augment.save_preset(preset_name, cfg)
        st.success(
            f"Saved preset '{path.stem}': train with it on the training page or with "
            f"`python -m fashion_lib train --augment {path.stem}`."
        )
    except ValueError as exc:
        st.error(str(exc))
saved = augment.list_presets()
if saved:
    st.dataframe(
        pd.DataFrame([{"preset": name, "settings": augment.load_preset(name).describe()} for name in saved]),
        hide_index=True,
    )
