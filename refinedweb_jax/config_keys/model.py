"""The model's keys: a preset, then every ModelConfig field (model/config.py), unset by default.

The fields mirror the dataclasses: a new ModelConfig or AttentionConfig field is a key
(model.FIELD, model.attention.SIZE) that ModelConfig itself validates; one whose metadata is
model.config.RESUMABLE may change when a run resumes.
"""

from refinedweb_jax.config_keys.key import Key, Section
from refinedweb_jax.model.config import PRESETS, ModelConfig

MODEL = Section("model", (
    Key("preset", "mini", f"the model's sizes: {', '.join(PRESETS)} (model/config.py PRESETS); "
        "every field set in model.* changes it", example="tiny"),
), mirror=ModelConfig,
    # The compute dtype: bfloat16 on GPU and TPU, float32 on CPU (backend.py); parameters,
    # optimizer state, logits and the loss stay float32 whatever it is.
    mirror_defaults={"dtype": "auto"})
