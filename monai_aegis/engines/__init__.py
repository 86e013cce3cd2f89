from .adversary import SHIELD_ADVERSARIES, ShieldAdversary
from .classifier_training import (
    ADVERSARIAL_TRAINING_METHODS,
    AdversarialClassifierUpdate,
    TradesKL,
    accuracy,
    adversarially_finetune,
    balanced_class_weights,
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

__all__ = [
    "train_classifier",
    "prepare_image_label",
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
]
