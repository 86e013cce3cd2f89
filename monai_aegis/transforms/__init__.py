from .array import Cushion, resolve_cushion
from .dictionary import CushionD, Cushiond, CushionDict

__all__ = ["Cushion", "CushionD", "CushionDict", "Cushiond", "resolve_cushion"]
