from .hooks import LAYER_PRESETS, FeatureHooks, default_layer_names, pool_features, resolve_layer_names

__all__ = ["LAYER_PRESETS", "FeatureHooks", "default_layer_names", "pool_features", "resolve_layer_names"]
