import pytest
import torch

from monai_aegis.attacks import L2Ball, LinfBall, l2_norm, linf_norm, make_threat


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [16 / 256, 0.1, 1 / 3])
def test_linf_projection_is_exact(dtype, eps):
    x0 = torch.rand(8, 3, 9, 9, dtype=dtype)
    ball = LinfBall(eps)
    x = x0 + 5 * torch.randn_like(x0)
    p = ball.project(x0, x, None)
    assert float((p - x0).abs().max()) <= eps  # exactly, in the input dtype
    assert float(p.min()) >= 0 and float(p.max()) <= 1
    # points already inside are untouched
    inside = x0 + (torch.rand_like(x0) * 2 - 1) * eps * 0.5
    inside = inside.clamp(0, 1)
    assert torch.equal(ball.project(x0, inside, None), inside)


def test_linf_random_init_and_custom_clip():
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1  # data in [-1, 1]
    ball = LinfBall(0.2, clip=(-1.0, 1.0))
    for surface in (False, True):
        x = ball.random_init(x0, None, surface=surface)
        assert float((x - x0).abs().max()) <= 0.2
        assert float(x.min()) >= -1 and float(x.max()) <= 1
        assert float((x - x0).abs().max()) > 0.1  # it did move
    # surface: before clipping each sample has a coordinate at +-eps
    unclipped = LinfBall(0.2, clip=None).random_init(torch.zeros(4, 1, 8, 8), None, surface=True)
    assert torch.allclose(linf_norm(unclipped), torch.full((4,), 0.2))


def test_l2_projection_within_tolerance():
    x0 = torch.rand(6, 2, 4, 5, 5, dtype=torch.float32)  # 3-D
    ball = L2Ball(0.5)
    p = ball.project(x0, x0 + torch.randn_like(x0), None)
    assert float(l2_norm(p - x0).max()) <= 0.5 + 1e-5
    assert float(p.min()) >= 0 and float(p.max()) <= 1
    x = ball.random_init(x0, None)
    assert float(l2_norm(x - x0).max()) <= 0.5 + 1e-5
    small = x0 + 1e-3 * torch.randn_like(x0)
    small = small.clamp(0, 1)
    assert torch.allclose(ball.project(x0, small, None), small, atol=1e-7)


@pytest.mark.parametrize("ball", [LinfBall(0.3), L2Ball(2.0)])
def test_mask_respected(ball):
    x0 = torch.rand(3, 2, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 3:7] = 1
    m = ball.resolve_mask(x0, mask)
    assert m.shape == x0.shape and m.dtype == torch.bool
    x = ball.project(x0, x0 + torch.randn_like(x0), m, ball.bounds(x0, m))
    assert torch.equal(x[~m], x0[~m])
    assert float((x - x0)[m].abs().max()) > 0
    r = ball.random_init(x0, m, ball.bounds(x0, m))
    assert torch.equal(r[~m], x0[~m])
    # an (H, W) mask broadcasts too
    assert torch.equal(ball.resolve_mask(x0, mask[0, 0]), m)


def test_bad_arguments():
    with pytest.raises(ValueError, match="eps"):
        LinfBall(0.0)
    with pytest.raises(ValueError, match="eps"):
        L2Ball(-1.0)
    with pytest.raises(ValueError, match="unknown norm"):
        make_threat("L1", 0.1)
    with pytest.raises(ValueError, match="clip"):
        LinfBall(0.1, clip=(1.0, 0.0))
    with pytest.raises(ValueError, match="binary"):
        LinfBall(0.1, mask=torch.full((4, 4), 0.5))
    with pytest.raises(ValueError, match="broadcast"):
        LinfBall(0.1).resolve_mask(torch.rand(2, 1, 8, 8), torch.ones(5, 5))
    assert isinstance(make_threat("linf", 0.1), LinfBall) and isinstance(make_threat("L2", 0.1), L2Ball)
