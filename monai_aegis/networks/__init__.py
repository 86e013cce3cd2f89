# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
from .hooks import (
    INPUT_LAYER,
    LAYER_PRESETS,
    FeatureHooks,
    default_layer_names,
    hooked_batches,
    pool_features,
    resolve_layer_names,
)
from .layers import (
    CUSHION_METHODS,
    CUSHION_PRESETS,
    CushionLayer,
    bpda,
    cushion_from_config,
    cushion_from_name,
    jpeg_compress,
    reduce_bit_depth,
    resolve_cushion,
    tv_minimize,
)
from .nets import (
    SHIELD_INPUTS,
    AegisWrapper,
    Shield,
    build_aegis,
    calibrated_thresholds,
    feature_shapes,
    per_sample_threshold,
)

__all__ = [
    "CUSHION_METHODS",
    "CUSHION_PRESETS",
    "INPUT_LAYER",
    "LAYER_PRESETS",
    "SHIELD_INPUTS",
    "AegisWrapper",
    "CushionLayer",
    "FeatureHooks",
    "Shield",
    "bpda",
    "build_aegis",
    "calibrated_thresholds",
    "per_sample_threshold",
    "cushion_from_config",
    "cushion_from_name",
    "default_layer_names",
    "feature_shapes",
    "hooked_batches",
    "jpeg_compress",
    "pool_features",
    "reduce_bit_depth",
    "resolve_cushion",
    "resolve_layer_names",
    "tv_minimize",
]
