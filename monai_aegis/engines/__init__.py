# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
from .adversary import SHIELD_ADVERSARIES, ShieldAdversary
from .classifier_training import (
    ADVERSARIAL_TRAINING_METHODS,
    AdversarialClassifierUpdate,
    TradesKL,
    accuracy,
    adversarially_finetune,
    balanced_class_weights,
    labelled_batch,
    prepare_image_label,
    train_classifier,
)
from .shield_training import (
    AdversarialShieldUpdate,
    ShieldLoss,
    ShieldScorer,
    ShieldTrainer,
    freeze,
    sample_other_classes,
)
from .site_adaptation import adapt_shield_to_site, pseudo_labels

__all__ = [
    "train_classifier",
    "prepare_image_label",
    "labelled_batch",
    "balanced_class_weights",
    "accuracy",
    "ADVERSARIAL_TRAINING_METHODS",
    "SHIELD_ADVERSARIES",
    "AdversarialClassifierUpdate",
    "AdversarialShieldUpdate",
    "ShieldAdversary",
    "ShieldLoss",
    "ShieldScorer",
    "ShieldTrainer",
    "TradesKL",
    "adversarially_finetune",
    "freeze",
    "sample_other_classes",
    "adapt_shield_to_site",
    "pseudo_labels",
]
