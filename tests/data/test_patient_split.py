import random
from collections import Counter

import pytest

from monai_aegis.data import kermany_datalist, patient_grouped_partition, patient_grouped_split


def _datalist(seed=0, n_patients=60):
    """Patients with 1-4 images each; label mostly per patient, some patients with mixed labels."""
    rng = random.Random(seed)
    items = []
    for p in range(n_patients):
        label = int(p % 3 == 0)
        for k in range(rng.randint(1, 4)):
            lab = label if k < 3 else 1 - label
            items.append({"image": f"/x/p{p}_{k}.png", "label": lab, "patient_id": f"p{p}"})
    return items


def _patients(part):
    return {it["patient_id"] for it in part}


def test_no_patient_in_two_splits_and_all_items_kept():
    items = _datalist()
    train, val = patient_grouped_split(items, 0.25, seed=3)
    assert not _patients(train) & _patients(val)
    assert sorted(it["image"] for it in train + val) == sorted(it["image"] for it in items)
    assert abs(len(val) - 0.25 * len(items)) <= 4  # off by at most about one group (<= 4 images)


def test_stratified():
    items = _datalist(n_patients=120)  # mixed-label patients included
    frac = lambda part: sum(it["label"] for it in part) / len(part)  # noqa: E731
    for seed in range(5):
        train, val = patient_grouped_split(items, 0.3, seed=seed)
        assert abs(frac(train) - frac(val)) < 0.02


def test_deterministic_and_order_independent():
    items = _datalist()
    a = patient_grouped_split(items, 0.2, seed=7)
    b = patient_grouped_split(list(items), 0.2, seed=7)
    shuffled = list(items)
    random.Random(1).shuffle(shuffled)
    c = patient_grouped_split(shuffled, 0.2, seed=7)
    assert a == b
    assert _patients(c[1]) == _patients(a[1])
    assert _patients(patient_grouped_split(items, 0.2, seed=8)[1]) != _patients(a[1])


def test_partition_exact_with_one_image_per_patient():
    items = [{"image": f"{i}", "label": i % 2, "patient_id": f"p{i}"} for i in range(100)]
    parts = patient_grouped_partition(items, (0.6, 0.2, 0.2), seed=0)
    assert [Counter(it["label"] for it in p) for p in parts] == [{0: 30, 1: 30}, {0: 10, 1: 10}, {0: 10, 1: 10}]


def test_items_without_patient_are_singletons_and_label_none():
    items = [{"image": f"{i}", "label": 0, "patient_id": "same" if i < 5 else None} for i in range(10)]
    train, val = patient_grouped_split(items, 0.5, seed=0, label_key=None)
    same = [sum(it["patient_id"] == "same" for it in part) for part in (train, val)]
    assert sorted(same) == [0, 5] and len(train) + len(val) == 10 and len(val) == 5


def test_errors():
    items = _datalist(n_patients=4)
    with pytest.raises(ValueError, match="val_fraction must lie in"):
        patient_grouped_split(items, 1.0)
    with pytest.raises(ValueError, match="no item has a 'subject' value"):
        patient_grouped_split(items, group_key="subject")
    with pytest.raises(ValueError, match="summing to 1"):
        patient_grouped_partition(items, (0.5, 0.3))
    with pytest.raises(ValueError, match="too few to split"):
        patient_grouped_partition([{"image": "a", "label": 0, "patient_id": "p"}] * 3, (0.5, 0.5))
    with pytest.raises(ValueError, match="empty"):
        patient_grouped_split([])
    with pytest.raises(ValueError, match="has no 'label' key"):
        patient_grouped_split([{"image": "a", "patient_id": "p"}, {"image": "b", "patient_id": "q"}])


@pytest.mark.shared_data
def test_real_kermany_train(shared_data):
    items = kermany_datalist(shared_data / "chest_xray", "train")
    train, val = patient_grouped_split(items, 0.2, seed=0)
    assert not _patients(train) & _patients(val)
    assert abs(len(val) / len(items) - 0.2) < 0.01
    assert abs(sum(it["label"] for it in val) / len(val) - 1163 / 1566) < 0.02
