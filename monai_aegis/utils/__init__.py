# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
from .batches import iter_batches, stack_batches, tensor_loader
from .io import (
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    error_line,
    json_safe,
    safe_torch_load,
)
from .state import RandomStates, state_fingerprint
from .validation import check_image_batch, check_labels, check_positive, check_value_range

__all__ = [
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "check_image_batch",
    "check_labels",
    "check_positive",
    "check_value_range",
    "error_line",
    "iter_batches",
    "json_safe",
    "RandomStates",
    "safe_torch_load",
    "stack_batches",
    "tensor_loader",
    "state_fingerprint",
]
