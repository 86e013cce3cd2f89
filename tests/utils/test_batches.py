"""iter_batches / stack_batches: the one reader of images and labels from tensors, pairs, loaders and dicts."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor

from monai_aegis.utils import iter_batches, stack_batches


def _data(n=10):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 4, 4, generator=g), torch.arange(n) % 2


def test_every_accepted_form_gives_the_same_images_and_labels():
    x, y = _data()
    forms = {
        "pair": (x, y),
        "list pair": [x, y],
        "tuples": [(x[:6], y[:6]), (x[6:], y[6:])],
        "dicts": [{"image": x[:3], "label": y[:3]}, {"image": x[3:], "label": y[3:]}],
        "loader": DataLoader(Dataset([{"image": x[i], "label": y[i]} for i in range(10)]), batch_size=4),
        "meta": [{"image": MetaTensor(x), "label": y.view(-1, 1)}],
    }
    for name, data in forms.items():
        xs, ys = stack_batches(data, name=name)
        assert type(xs) is torch.Tensor and xs.dtype == torch.float32 and ys.dtype == torch.int64, name
        assert torch.equal(xs, x) and torch.equal(ys, y), name
        assert torch.equal(torch.cat(list(iter_batches(data, 3))), x), name
    assert [b.shape[0] for b in iter_batches(x, 4)] == [4, 4, 2]
    assert [b.shape[0] for b in iter_batches(x, None)] == [10]
    assert [b[0].shape[0] for b in iter_batches((x, y), 4, labels=True)] == [4, 4, 2]


def test_max_items_and_errors():
    x, y = _data()
    xs, ys = stack_batches([(x[:4], y[:4]), (x[4:], y[4:])], max_items=5)
    assert xs.shape[0] == 5 and torch.equal(ys, y[:5])
    with pytest.raises(ValueError, match="val_data is empty"):
        stack_batches([], name="val_data")
    with pytest.raises(ValueError, match=r"\(N, C, \*spatial\)"):
        stack_batches((torch.rand(4, 4), torch.zeros(4)))
    with pytest.raises(TypeError, match="labels are needed"):
        stack_batches(x)
    with pytest.raises(TypeError, match="images only"):
        list(iter_batches([x], labels=True))
    with pytest.raises(KeyError, match="'label'"):
        list(iter_batches([{"image": x}], labels=True))
    with pytest.raises(KeyError, match="'img'"):
        list(iter_batches([{"image": x}], image_key="img"))
    with pytest.raises(TypeError, match="got str"):
        list(iter_batches(["a"]))


def test_tensor_loader_yields_seeded_dict_batches():
    from monai_aegis.utils import tensor_loader

    x, y = torch.rand(10, 1, 4, 4), torch.arange(10) % 2
    batches = list(tensor_loader(x, y, 4))
    assert [b["image"].shape[0] for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b["image"] for b in batches]), x)
    assert torch.cat([b["label"] for b in batches]).tolist() == y.tolist()

    def order(seed):
        return torch.cat([b["label"] for b in tensor_loader(x, torch.arange(10), 3, shuffle=True, seed=seed)])

    assert torch.equal(order(1), order(1)) and not torch.equal(order(1), order(2))
    assert sorted(order(1).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="3 labels for 10 images"):
        tensor_loader(x, y[:3])
    with pytest.raises(ValueError, match="non-empty"):
        tensor_loader(torch.rand(0, 1, 4, 4), y[:0])


def test_batch_ids_from_id_entries_then_source_files():
    from monai_aegis.utils import batch_ids, tensor_loader

    x = torch.zeros(3, 1, 4, 4)
    assert batch_ids({"image": x, "id": torch.tensor([4, 0, 7])}, 3) == ["4", "0", "7"]
    assert batch_ids({"image": x, "id": ["a.png", "b.png", "c.png"]}, 3) == ["a.png", "b.png", "c.png"]
    files = MetaTensor(x, meta={"filename_or_obj": ["p.png", "q.png", "r.png"]})
    assert batch_ids({"image": files}, 3) == ["p.png", "q.png", "r.png"]  # images loaded from files
    assert batch_ids({"image": files, "id": [1, 2]}, 3) == ["p.png", "q.png", "r.png"]  # wrong length: not ids
    assert batch_ids({"image": x}, 3) is None and batch_ids((x, torch.zeros(3)), 3) is None
    loader = tensor_loader(x, torch.tensor([0, 1, 0]), batch_size=3)
    assert batch_ids(next(iter(loader)), 3) == ["0", "1", "2"]
