from .adversary import SHIELD_ADVERSARIES, ShieldAdversary
from .classifier_training import (
    ADVERSARIAL_TRAINING_METHODS,
    AdversarialClassifierUpdate,
    TradesKL,
    adversarially_finetune,
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
