# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Building blocks the MONAI bundles (``bundles/aegis_cxr``, ``bundles/aegis_fundus``) call from their configs:
datalists, the classifier (load pretrained or train), the defended model, summaries, distributed helpers and the
screening of files."""

from .classifier import accuracy, is_torchscript, load_network, prepare_classifier, train_classifier
from .data import BUNDLE_DATASETS, bundle_datalists
from .distributed import distributed_device, init_distributed, is_main_process, shard_indices, sharded_detection
from .screening import (
    SCREENING_COLUMNS,
    ScreeningInferer,
    ScreeningWriter,
    TolerantTransformD,
    TolerantTransformd,
    TolerantTransformDict,
    exit_on_failures,
    screening_datalist,
)
from .workflow import (
    SHIELD_INPUTS,
    SUMMARY_WORST_CASE,
    build_aegis,
    evaluate_bundle,
    finalize_training,
    format_summary,
    seeded_subset,
    load_aegis,
    recalibrate_site,
    adapt_site,
    site_datalist,
    stack_loader,
)

__all__ = [
    "BUNDLE_DATASETS",
    "SCREENING_COLUMNS",
    "ScreeningInferer",
    "ScreeningWriter",
    "TolerantTransformD",
    "TolerantTransformDict",
    "TolerantTransformd",
    "exit_on_failures",
    "screening_datalist",
    "accuracy",
    "build_aegis",
    "bundle_datalists",
    "distributed_device",
    "evaluate_bundle",
    "SHIELD_INPUTS",
    "SUMMARY_WORST_CASE",
    "finalize_training",
    "format_summary",
    "seeded_subset",
    "init_distributed",
    "is_main_process",
    "is_torchscript",
    "load_aegis",
    "load_network",
    "prepare_classifier",
    "recalibrate_site",
    "adapt_site",
    "site_datalist",
    "shard_indices",
    "sharded_detection",
    "stack_loader",
    "train_classifier",
]
