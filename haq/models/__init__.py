"""Model zoo, user models (``package.module:callable``), checkpoints, and cached pretraining."""

from haq.models.cache import default_cache_dir, pretrained_model
from haq.models.loading import build_model, load_checkpoint_
from haq.models.zoo import ZOO, ModelSpec, model_names

__all__ = [
    "ZOO",
    "ModelSpec",
    "build_model",
    "default_cache_dir",
    "load_checkpoint_",
    "model_names",
    "pretrained_model",
]
