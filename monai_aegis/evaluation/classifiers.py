# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Classifier architectures by name (moved to :mod:`monai_aegis.networks.nets.classifiers`; re-exported here so
``monai_aegis.evaluation.classifiers`` keeps working, including in ``"package.module:callable"`` names)."""

from ..networks.nets.classifiers import *  # noqa: F401,F403
from ..networks.nets.classifiers import __all__  # noqa: F401
