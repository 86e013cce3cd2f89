from .array import Cushion, resolve_cushion
from .benign import RandBenignShift, RandBenignShiftD, RandBenignShiftd, RandBenignShiftDict
from .dictionary import CushionD, Cushiond, CushionDict

__all__ = [
    "Cushion",
    "CushionD",
    "CushionDict",
    "Cushiond",
    "RandBenignShift",
    "RandBenignShiftD",
    "RandBenignShiftDict",
    "RandBenignShiftd",
    "resolve_cushion",
]
