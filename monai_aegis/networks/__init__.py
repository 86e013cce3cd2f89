from .hooks import INPUT_LAYER, LAYER_PRESETS, FeatureHooks, default_layer_names, pool_features, resolve_layer_names
from .layers import (
    CUSHION_METHODS,
    CUSHION_PRESETS,
    CushionLayer,
    bpda,
    cushion_from_config,
    cushion_from_name,
    jpeg_compress,
    reduce_bit_depth,
    tv_minimize,
)
from .nets import AegisWrapper, Shield, calibrated_thresholds, feature_shapes, iterate_images, per_sample_threshold

__all__ = [
    "CUSHION_METHODS",
    "CUSHION_PRESETS",
    "INPUT_LAYER",
    "LAYER_PRESETS",
    "AegisWrapper",
    "CushionLayer",
    "FeatureHooks",
    "Shield",
    "bpda",
    "calibrated_thresholds",
    "per_sample_threshold",
    "cushion_from_config",
    "cushion_from_name",
    "default_layer_names",
    "feature_shapes",
    "iterate_images",
    "jpeg_compress",
    "pool_features",
    "reduce_bit_depth",
    "resolve_layer_names",
    "tv_minimize",
]
