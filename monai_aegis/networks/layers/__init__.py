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
