from .hooks import LAYER_PRESETS, FeatureHooks, default_layer_names, pool_features, resolve_layer_names
from .nets import AegisWrapper, Shield, feature_shapes, iterate_images

__all__ = [
    "LAYER_PRESETS",
    "AegisWrapper",
    "FeatureHooks",
    "Shield",
    "default_layer_names",
    "feature_shapes",
    "iterate_images",
    "pool_features",
    "resolve_layer_names",
]
