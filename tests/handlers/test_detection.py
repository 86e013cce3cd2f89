"""DetectionMetricsHandler: validation AUROC / TPR of the Shield against an attack, attached to a ShieldTrainer."""

import pytest
from toys import shield_trainer as _trainer
from toys import shield_wrapper as _wrapper

from monai_aegis.handlers import DetectionMetricsHandler


def test_detection_metrics_handler(trained_classifier, sample_arrays):
    wrapper = _wrapper(trained_classifier)
    x, y = sample_arrays["train"]
    xv, yv = sample_arrays["val"]
    handler = DetectionMetricsHandler(wrapper, (xv, yv), "PGD", {"steps": 10})
    trainer = _trainer(wrapper, x[:32], y[:32], epochs=1, steps=1, handlers=[handler])
    trainer.run()
    m = trainer.state.metrics
    assert m["val_attack_success"] > 0.3 and m["val_n"] == 64
    assert 0.0 <= m["val_auroc"] <= 1.0 and 0.0 <= m["val_tpr@90tnr"] <= 1.0
    assert wrapper.threshold.numel() == 2
    with pytest.raises(ValueError, match="interval"):
        DetectionMetricsHandler(wrapper, (xv, yv), interval=0)
