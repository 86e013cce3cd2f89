"""The one CPU-threads knob: torch's intra-op threads, followed by the Cushion's JPEG workers."""

from __future__ import annotations

import pytest
import torch

from monai_aegis.networks.layers import jpeg as jpeg_module
from monai_aegis.utils import THREADS_ENV, set_num_threads


@pytest.fixture()
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_number_env_and_default(restore_threads, monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    before = torch.get_num_threads()
    assert set_num_threads(None) == before  # nothing asked: torch's setting stays
    assert set_num_threads(1) == 1 == torch.get_num_threads()
    monkeypatch.setenv(THREADS_ENV, "2")
    assert set_num_threads(None) == 2 and set_num_threads(0) == 2
    assert set_num_threads("1") == 1  # a bundle override may arrive as text


@pytest.mark.parametrize("bad", [-1, 1.5, "two"])
def test_bad_values_name_their_source(restore_threads, monkeypatch, bad):
    with pytest.raises(ValueError, match="num_threads must be a positive integer"):
        set_num_threads(bad)
    monkeypatch.setenv(THREADS_ENV, str(bad))
    with pytest.raises(ValueError, match=f"{THREADS_ENV} must be a positive integer"):
        set_num_threads(None)


def test_jpeg_workers_follow_the_knob(restore_threads, monkeypatch):
    pools = []
    real = jpeg_module.ThreadPoolExecutor

    def counting(max_workers=None, **kw):
        pools.append(max_workers)
        return real(max_workers=max_workers, **kw)

    monkeypatch.setattr(jpeg_module, "ThreadPoolExecutor", counting)
    x = torch.rand(8, 1, 32, 32)
    set_num_threads(1)
    one = jpeg_module.jpeg_compress(x, 80)
    assert pools == []  # a single thread: no worker pool at all
    set_num_threads(2)
    two = jpeg_module.jpeg_compress(x, 80)
    assert pools == [2] and torch.equal(one, two)
