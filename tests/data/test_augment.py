import pytest
import torch

from germinate.data.augment import (
    AugmentConfig,
    RandomDihedral,
    deterministic_views,
    dihedral,
    eval_transform,
    train_transform,
)


def marked_image(size: int = 64) -> torch.Tensor:
    """Four coloured quadrants: red top-left, green top-right, blue bottom-left, white bottom-right."""
    img = torch.zeros(3, size, size, dtype=torch.uint8)
    h = size // 2
    img[0, :h, :h] = 255
    img[1, :h, h:] = 255
    img[2, h:, :h] = 255
    img[:, h:, h:] = 255
    return img


def orientation(img: torch.Tensor) -> tuple:
    """The dominant colour of each quadrant, as a hashable signature."""
    h = img.shape[-1] // 2
    quads = [img[:, :h, :h], img[:, :h, h:], img[:, h:, :h], img[:, h:, h:]]
    return tuple(tuple((q.float().mean((1, 2)) > 127).tolist()) for q in quads)


def test_dihedral_gives_8_distinct_orientations():
    img = marked_image()
    assert len({orientation(dihedral(img, k)) for k in range(8)}) == 8
    assert torch.equal(dihedral(img, 0), img)


def test_top_down_produces_all_8_orientations():
    img = marked_image()
    seen = set()
    t = RandomDihedral()
    for _ in range(200):
        seen.add(orientation(t(img)))
    assert len(seen) == 8


def test_top_down_policy_flips_vertically_sometimes():
    img = marked_image(96)
    tf = train_transform(AugmentConfig(size=64, flip="top-down", min_scale=0.9, max_rotate=0, max_lighting=0))
    torch.manual_seed(0)
    tops = {(tf(img)[:, :8].float().mean((1, 2)) > 127).tolist().__str__() for _ in range(100)}
    assert len(tops) > 2


def test_side_on_never_turns_an_image_upside_down():
    # Top half red, bottom half blue: upside down means more blue than red in the top rows.
    img = torch.zeros(3, 96, 96, dtype=torch.uint8)
    img[0, :48] = 255
    img[2, 48:] = 255
    tf = train_transform(AugmentConfig(size=64, flip="side-on"))
    torch.manual_seed(0)
    mirrored = 0
    for _ in range(1000):
        out = tf(img).float()
        top, bottom = out[:, :16], out[:, -16:]
        assert not (top[2].mean() > top[0].mean() + 30 and bottom[0].mean() > bottom[2].mean() + 30)
    # and left-right flips do happen: check on an image marked left/right
    lr = torch.zeros(3, 96, 96, dtype=torch.uint8)
    lr[0, :, :48] = 255
    for _ in range(200):
        out = tf(lr).float()
        mirrored += out[0, :, -16:].mean() > out[0, :, :16].mean()
    assert 50 < mirrored < 150


def test_eval_transform_is_deterministic_and_sized():
    img = torch.randint(0, 255, (3, 80, 80), dtype=torch.uint8)
    tf = eval_transform(40)
    a, b = tf(img), tf(img)
    assert a.shape == (3, 40, 40) and a.dtype == torch.uint8 and torch.equal(a, b)


def test_policy_views():
    assert deterministic_views("top-down") == list(range(8))
    assert deterministic_views("side-on") == [0, 4]
    assert deterministic_views("none") == [0]
    with pytest.raises(ValueError, match="valid: top-down, side-on, none"):
        deterministic_views("upside-down")


def test_side_on_view_4_is_a_left_right_mirror():
    img = marked_image()
    assert torch.equal(dihedral(img, 4), img.flip(-1))


def test_rotation_fills_corners_by_reflection_not_black():
    from germinate.data.augment import RandomRotateReflect

    img = torch.full((3, 64, 64), 120, dtype=torch.uint8)
    img[:, 28:36, 28:36] = 250  # a bright centre that must survive, turned
    t = RandomRotateReflect(10)
    torch.manual_seed(0)
    for _ in range(20):
        out = t(img)
        assert out.dtype == torch.uint8 and out.shape == img.shape
        assert out[:, :4, :4].min() >= 110 and out[:, -4:, -4:].min() >= 110  # corners: soil, not black
        assert out[:, 30:34, 30:34].float().mean() > 200


def test_the_none_policy_rotates_and_lights_but_never_flips():
    """'none' drops the flips only: the per-image path rotates, zooms and changes the lighting as
    the batch path does (it once returned a bare crop, ignoring --max-rotate and --max-lighting)."""
    img = marked_image(96)
    tf = train_transform(AugmentConfig(size=64, flip="none", min_scale=1.0, max_rotate=30, max_lighting=0.3))
    plain = eval_transform(64)(img).float()
    torch.manual_seed(0)
    views = [tf(img) for _ in range(50)]
    assert all(orientation(v) == orientation(img) for v in views)  # never flipped nor turned
    assert sum((v.float() - plain).abs().mean() > 5 for v in views) > 40  # rotated (corners reflected)
    brightness = torch.stack([v.float().mean() for v in views])
    assert brightness.std() > 5  # lit differently


def test_trivial_augment_adds_one_random_operation_to_each_view():
    img = marked_image(96)
    plain = eval_transform(64)(img)
    settings = dict(size=64, flip="none", min_scale=1.0, max_rotate=0)
    without, with_ta = (train_transform(AugmentConfig(**settings, trivial=t)) for t in (False, True))
    torch.manual_seed(0)
    assert all(torch.equal(without(img), plain) for _ in range(10))  # nothing else varies the view here
    torch.manual_seed(0)
    views = [with_ta(img) for _ in range(60)]
    assert all(v.shape == plain.shape and v.dtype == torch.uint8 for v in views)
    changed = [v for v in views if not torch.equal(v, plain)]
    assert len(changed) > 40  # identity is one of its 14 operations, and strength 0 one of 31
    assert len({tuple(v.float().mean((1, 2)).round().tolist()) for v in changed}) > 20  # many kinds of change
