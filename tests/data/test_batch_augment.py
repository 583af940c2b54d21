"""The batched, per-sample augmentation: its distributions (measured on the images it makes) and
its determinism."""

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from germinate.data.augment import AugmentConfig, dihedral
from germinate.data.batch_augment import (
    BRIGHTNESS,
    CONTRAST,
    CROP_H,
    CROP_W,
    ERASE_W,
    ERASE_X,
    K,
    N_PARAMS,
    augment_batch,
    draw_params,
)
from tests.data.test_augment import marked_image, orientation

N = 2000


def ramps(size: int = 96) -> torch.Tensor:
    """Red rises left to right, green top to bottom: a pixel's colour says where it came from."""
    r = torch.linspace(0, 255, size)
    img = torch.zeros(3, size, size)
    img[0] = r.view(1, -1)
    img[1] = r.view(-1, 1)
    return img.round().to(torch.uint8)


def identity_params(n: int, k: int = 0) -> np.ndarray:
    p = np.zeros((n, N_PARAMS))
    p[:, K], p[:, CROP_W], p[:, CROP_H], p[:, BRIGHTNESS], p[:, CONTRAST] = k, 1, 1, 1, 1
    return p


@pytest.mark.parametrize("k", range(8))
def test_each_flip_is_exactly_the_dihedral_transform_used_at_test_time(k: int):
    x = torch.randint(0, 256, (2, 3, 20, 20), dtype=torch.uint8)
    out = augment_batch(x, identity_params(2, k), 20)
    assert torch.allclose(out, dihedral(x, k).float(), atol=1e-3)


@pytest.mark.parametrize("policy, views", [("top-down", 8), ("side-on", 2), ("none", 1)])
def test_flip_orientations_are_uniform_over_what_the_policy_allows(policy: str, views: int):
    cfg = AugmentConfig(size=32, flip=policy, min_scale=1.0, max_rotate=0)
    out = augment_batch(marked_image(32)[None].expand(N, -1, -1, -1), draw_params(range(N), cfg), 32)
    counts: dict = {}
    for img in out:
        counts[orientation(img)] = counts.get(orientation(img), 0) + 1
    assert len(counts) == views
    expected = N / views
    assert all(abs(c - expected) < 4 * math.sqrt(expected) for c in counts.values()), counts
    if policy == "side-on":  # the two views: as is, and mirrored left-right (never upside down)
        assert set(counts) == {orientation(marked_image(32)), orientation(marked_image(32).flip(-1))}


def _spans(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fraction of the source's width and height each output covers (from the colour ramps)."""
    red, green = out[:, 0], out[:, 1]
    w = (red[:, :, -1] - red[:, :, 0]).mean(1) / 255 * 96 / 95  # ramps run from pixel centre to centre
    h = (green[:, -1, :] - green[:, 0, :]).mean(1) / 255 * 96 / 95
    return w, h


def test_zoom_covers_the_area_range_as_torchvisions_random_resized_crop_does():
    cfg = AugmentConfig(size=64, flip="none", min_scale=0.5, max_rotate=0)
    w, h = _spans(augment_batch(ramps()[None].expand(N, -1, -1, -1), draw_params(range(N), cfg), 64))
    area = (w * h).numpy()
    assert area.min() > 0.5 - 0.03 and area.max() < 1.0 + 0.03
    assert area.min() < 0.53 and area.max() > 0.97  # the whole range is used
    ratio = (w / h).numpy()
    assert ratio.min() > 0.75 - 0.03 and ratio.max() < 4 / 3 + 0.03
    # the same distribution as the per-image path's crop: compare quantiles with torchvision's
    rrc = v2.RandomResizedCrop(64, scale=(0.5, 1.0))
    torch.manual_seed(0)
    ref = [rrc.make_params([torch.zeros(3, 96, 96)]) for _ in range(N)]
    ref_area = np.array([p["height"] * p["width"] / 96**2 for p in ref])
    q = [0.1, 0.25, 0.5, 0.75, 0.9]
    assert np.allclose(np.quantile(area, q), np.quantile(ref_area, q), atol=0.03)


def _angles(out: torch.Tensor) -> np.ndarray:
    """Rotation of each output (degrees), from the direction the red ramp rises in its middle."""
    mid = out[:, 0, 16:48, 16:48]
    dx = (mid[:, :, 1:] - mid[:, :, :-1]).mean((1, 2))
    dy = (mid[:, 1:, :] - mid[:, :-1, :]).mean((1, 2))
    return np.degrees(np.arctan2(dy.numpy(), dx.numpy()))


def test_rotation_stays_within_its_bound_and_uses_it():
    cfg = AugmentConfig(size=64, flip="none", min_scale=1.0, max_rotate=10)
    angles = _angles(augment_batch(ramps(64)[None].expand(N, -1, -1, -1), draw_params(range(N), cfg), 64))
    assert np.abs(angles).max() < 10.5
    assert angles.min() < -9 and angles.max() > 9
    assert abs(np.mean(angles)) < 0.5  # both ways alike
    still = AugmentConfig(size=64, flip="none", min_scale=1.0, max_rotate=0)
    assert np.abs(_angles(augment_batch(ramps(64)[None].expand(50, -1, -1, -1), draw_params(range(50), still), 64))).max() < 0.1


def test_rotated_corners_are_reflected_not_black():
    img = torch.full((3, 64, 64), 120, dtype=torch.uint8)
    cfg = AugmentConfig(size=64, flip="none", min_scale=1.0, max_rotate=30)
    out = augment_batch(img[None].expand(50, -1, -1, -1), draw_params(range(50), cfg), 64)
    assert out.min() > 119


def test_lighting_factors_stay_within_their_bound():
    img = torch.full((3, 16, 16), 100, dtype=torch.uint8)
    img[:, :8] = 140  # some contrast to change
    cfg = AugmentConfig(size=16, flip="none", min_scale=1.0, max_rotate=0, max_lighting=0.2)
    p = draw_params(range(N), cfg)
    assert p[:, BRIGHTNESS].min() >= 0.8 and p[:, BRIGHTNESS].max() <= 1.2
    assert p[:, BRIGHTNESS].min() < 0.81 and p[:, CONTRAST].max() > 1.19
    out = augment_batch(img[None].expand(N, -1, -1, -1), p, 16)
    brightness = out.mean((1, 2, 3)) / img.float().mean()
    assert torch.allclose(brightness, torch.as_tensor(p[:, BRIGHTNESS]).float(), atol=0.01)
    spread = (out[:, 0, :8] - out[:, 0, 8:]).mean((1, 2)) / 40
    assert torch.allclose(spread, torch.as_tensor(p[:, BRIGHTNESS] * p[:, CONTRAST]).float(), atol=0.02)


def test_a_sample_gets_the_same_view_whatever_batch_it_is_in():
    cfg = AugmentConfig(size=48, flip="top-down", max_rotate=10, max_lighting=0.1)
    x = torch.randint(0, 256, (6, 3, 60, 60), dtype=torch.uint8)
    seeds = [11, 12, 13, 14, 15, 16]
    batch = augment_batch(x, draw_params(seeds, cfg), 48)
    assert torch.equal(batch, augment_batch(x, draw_params(seeds, cfg), 48))  # repeatable, bit for bit
    alone = torch.cat([augment_batch(x[i : i + 1], draw_params([s], cfg), 48) for i, s in enumerate(seeds)])
    assert torch.allclose(batch, alone, atol=1e-3)
    reordered = augment_batch(x.flip(0), draw_params(seeds[::-1], cfg), 48).flip(0)
    assert torch.allclose(batch, reordered, atol=1e-3)
    other = augment_batch(x, draw_params([s + 100 for s in seeds], cfg), 48)
    assert (other - batch).abs().mean() > 10  # other seeds, other views


def test_shrinking_views_are_antialiased_like_the_evaluation_resize():
    """Fine stripes (1 px) shrunk by 1.25: plain bilinear sampling turns them into moire; the
    views must be as smooth as torchvision's antialiased resize, which evaluation uses."""
    import torch.nn.functional as F

    from germinate.data.augment import eval_transform
    from germinate.data.batch_augment import crop_matrices

    img = torch.zeros(1, 3, 160, 160, dtype=torch.uint8)
    img[..., ::2] = 255
    p = identity_params(1)
    view = augment_batch(img, p, 128)
    aliased = F.grid_sample(img.float(), F.affine_grid(crop_matrices(p), [1, 3, 128, 128], align_corners=False),
                            padding_mode="reflection", align_corners=False)
    reference = eval_transform(128)(img).float()
    assert view.std() < 1.2 * reference.std() and aliased.std() > 1.6 * reference.std()
    assert view.mean() == pytest.approx(127.5, abs=1)


def _laplacian_variance(t: torch.Tensor) -> float:
    import torch.nn.functional as F

    k = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    return float(F.conv2d(t.float(), k, groups=3).var())


def test_views_are_as_sharp_as_the_per_image_policys():
    """The per-image policy resampled twice (rotate, then crop and resize): views folded into one
    warp came out 1.8x as sharp on noise, and trained measurably worse. Same noise images, both
    paths, fine detail within 30%."""
    from germinate.data.augment import train_transform

    x = torch.randint(0, 256, (200, 3, 80, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cfg = AugmentConfig(size=64)
    batched = augment_batch(x, draw_params(range(200), cfg), 64)
    tf = train_transform(cfg)
    per_image = []
    for i in range(200):
        torch.manual_seed(i)
        per_image.append(tf(x[i]))
    ratio = _laplacian_variance(batched) / _laplacian_variance(torch.stack(per_image))
    assert 0.7 < ratio < 1.3, ratio


def erased_fraction(views: torch.Tensor) -> torch.Tensor:
    """Each view's fraction of pixels in the fill colour (the image itself has none)."""
    from germinate.data.augment import ERASE_FILL

    fill = torch.tensor(ERASE_FILL, dtype=views.dtype).view(1, 3, 1, 1)
    return (views == fill).all(1).float().mean((1, 2))


def test_erased_boxes_match_torchvisions_random_erasing():
    """The batch path's boxes: the chance asked for, each box within 2-33% of the view, filled
    with the constant colour; their areas distributed as the per-image path's (torchvision)."""
    from germinate.data.augment import train_transform

    img = torch.full((3, 80, 80), 200, dtype=torch.uint8)
    cfg = AugmentConfig(size=64, flip="top-down", min_scale=1.0, max_rotate=0, erase=0.5)
    batch = erased_fraction(augment_batch(img[None].expand(N, -1, -1, -1), draw_params(range(N), cfg), 64).round())
    tf = train_transform(cfg)
    torch.manual_seed(0)
    single = erased_fraction(torch.stack([tf(img) for _ in range(N)]))
    for areas in (batch, single):
        hit = areas[areas > 0]
        assert 0.45 < len(hit) / N < 0.55
        assert hit.min() > 0.015 and hit.max() < 0.35
        assert set(areas[areas == 0].tolist()) <= {0.0}
    assert abs(batch[batch > 0].mean() - single[single > 0].mean()) < 0.015  # about 0.17 either way


def test_erasing_leaves_the_other_parameters_of_a_seed_alone():
    seeds = range(200)
    plain = draw_params(seeds, AugmentConfig(size=64, max_lighting=0.1))
    erased = draw_params(seeds, AugmentConfig(size=64, max_lighting=0.1, erase=1.0))
    assert np.array_equal(plain[:, :ERASE_X], erased[:, :ERASE_X])
    assert (plain[:, ERASE_W] == 0).all() and (erased[:, ERASE_W] > 0).mean() > 0.9
    with pytest.raises(ValueError, match="erase must be in"):
        AugmentConfig(erase=1.5)
