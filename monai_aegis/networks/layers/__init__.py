# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
from .cushion import (
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

__all__ = [
    "CUSHION_METHODS",
    "CUSHION_PRESETS",
    "CushionLayer",
    "bpda",
    "cushion_from_config",
    "cushion_from_name",
    "jpeg_compress",
    "reduce_bit_depth",
    "resolve_cushion",
    "tv_minimize",
]
