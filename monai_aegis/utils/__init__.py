# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
from .batches import batch_ids, iter_batches, stack_batches, stack_images, tensor_loader
from .io import (
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    error_line,
    json_safe,
    safe_torch_load,
)
from .precision import AutocastInferer, autocast, cpu_supports_bf16, full_precision, resolve_amp, run_in_precision
from .state import RandomStates, state_fingerprint
from .threads import THREADS_ENV, set_num_threads
from .validation import check_image_batch, check_labels, check_positive, check_value_range

__all__ = [
    "AutocastInferer",
    "atomic_torch_save",
    "batch_ids",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "autocast",
    "check_image_batch",
    "check_labels",
    "check_positive",
    "check_value_range",
    "cpu_supports_bf16",
    "error_line",
    "full_precision",
    "iter_batches",
    "json_safe",
    "RandomStates",
    "THREADS_ENV",
    "resolve_amp",
    "run_in_precision",
    "safe_torch_load",
    "set_num_threads",
    "stack_batches",
    "stack_images",
    "tensor_loader",
    "state_fingerprint",
]
