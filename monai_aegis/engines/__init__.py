from .adversary import SHIELD_ADVERSARIES, ShieldAdversary
from .shield_training import (
    AdversarialShieldUpdate,
    ShieldLoss,
    ShieldScorer,
    ShieldTrainer,
    freeze,
    sample_other_classes,
)

__all__ = [
    "SHIELD_ADVERSARIES",
    "AdversarialShieldUpdate",
    "ShieldAdversary",
    "ShieldLoss",
    "ShieldScorer",
    "ShieldTrainer",
    "freeze",
    "sample_other_classes",
]
