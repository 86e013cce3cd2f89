from .aegis import AegisWrapper, iterate_images
from .shield import Shield, feature_shapes

__all__ = ["AegisWrapper", "Shield", "feature_shapes", "iterate_images"]
