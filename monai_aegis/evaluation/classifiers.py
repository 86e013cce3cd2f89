"""Classifier architectures by name (moved to :mod:`monai_aegis.networks.nets.classifiers`; re-exported here so
``monai_aegis.evaluation.classifiers`` keeps working, including in ``"package.module:callable"`` names)."""

from ..networks.nets.classifiers import *  # noqa: F401,F403
from ..networks.nets.classifiers import __all__  # noqa: F401
