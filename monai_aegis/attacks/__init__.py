# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Attack engine of monai_aegis: one composable iterative loop and the attacks of the Medical Aegis paper.

Quick start::

    from ..attacks import PGD, make_attack
    result = PGD(model, eps=16 / 256)(x, y, target=1 - y)     # targeted; omit target for untargeted
    result.x_adv, result.success, result.linf
    attack = make_attack("WB_d", model, detector=shield, preprocess=cushion)

Parts: threat models (:class:`LinfBall`, :class:`L2Ball`), objectives (:class:`CrossEntropy`, :class:`CWMargin`,
:class:`FeatureMatch`, :class:`DetectorLogit`, :class:`FeatureLikelihood`, :class:`DetectorEvasion`, sums),
step rules (:class:`SignStep`, :class:`L2Step`, :class:`MomentumStep`), schedules (:class:`ConstantStep`,
:class:`StepDecay`, :class:`LambdaStep`, :class:`AutoStepSize`), :class:`InputDiversity`,
:class:`GradientSmoothing`, :class:`BPDAWrapper`; the loop :class:`IterativeAttack`; presets and
:func:`make_attack`; the gradient-free :class:`SquareAttack` (the check against gradient masking).
"""

from .bpda import BPDAWrapper, bpda
from .cw import CarliniWagnerL2
from .diversity import GradientSmoothing, InputDiversity, gaussian_kernel1d
from .engine import Attack, AttackResult, IterativeAttack
from .feature_model import GaussianFeatureModel, extract_pooled_features
from .objectives import (
    CrossEntropy,
    CWMargin,
    DetectorEvasion,
    DetectorGate,
    DetectorLogit,
    FeatureLikelihood,
    FeatureMatch,
    JointMargin,
    MultiGradientObjective,
    Objective,
    WeightedSum,
    attack_classes,
    classifier_margin,
    is_success,
)
from .presets import (
    APGD,
    ATTACK_NAMES,
    BIM,
    CWL2,
    DEFAULT_EPS_L2,
    DEFAULT_EPS_LINF,
    DIM,
    FGSM,
    HFC,
    MIM,
    PGD,
    PGDL2,
    TIM,
    WB,
    CWLinf,
    Fea,
    FeatureSpaceAttack,
    JointAPGD,
    OrthogonalPGD,
    SelectivePGD,
    TransferAttack,
    WB_d,
    WhiteBox,
    WhiteBoxDecay,
    make_aegis_attack,
    make_attack,
)
from .square import SquareAttack, square_window_fraction
from .steps import (
    AutoStepSize,
    ConstantStep,
    L2Step,
    LambdaStep,
    MomentumStep,
    NormalizedStep,
    SignStep,
    StepDecay,
    StepRule,
    StepSchedule,
)
from .targets import other_class_targets, sample_other_classes
from .threat import L2Ball, LinfBall, ThreatModel, l2_norm, linf_norm, make_threat

__all__ = [
    "APGD",
    "ATTACK_NAMES",
    "Attack",
    "AttackResult",
    "AutoStepSize",
    "BIM",
    "BPDAWrapper",
    "CWL2",
    "CWLinf",
    "CWMargin",
    "CarliniWagnerL2",
    "ConstantStep",
    "CrossEntropy",
    "DEFAULT_EPS_L2",
    "DEFAULT_EPS_LINF",
    "DIM",
    "DetectorEvasion",
    "DetectorGate",
    "DetectorLogit",
    "FGSM",
    "Fea",
    "FeatureLikelihood",
    "FeatureMatch",
    "FeatureSpaceAttack",
    "GaussianFeatureModel",
    "GradientSmoothing",
    "HFC",
    "InputDiversity",
    "IterativeAttack",
    "JointAPGD",
    "JointMargin",
    "L2Ball",
    "L2Step",
    "LambdaStep",
    "LinfBall",
    "MIM",
    "MomentumStep",
    "MultiGradientObjective",
    "NormalizedStep",
    "Objective",
    "OrthogonalPGD",
    "PGD",
    "PGDL2",
    "SelectivePGD",
    "SignStep",
    "StepDecay",
    "StepRule",
    "SquareAttack",
    "StepSchedule",
    "TIM",
    "ThreatModel",
    "TransferAttack",
    "WB",
    "WB_d",
    "WeightedSum",
    "WhiteBox",
    "WhiteBoxDecay",
    "attack_classes",
    "bpda",
    "classifier_margin",
    "extract_pooled_features",
    "gaussian_kernel1d",
    "is_success",
    "l2_norm",
    "linf_norm",
    "make_aegis_attack",
    "make_attack",
    "other_class_targets",
    "sample_other_classes",
    "make_threat",
    "square_window_fraction",
]
