"""The resolved settings: defaults derived from others, and validation of impossible ones."""

import pytest

from germinate.config import TrainConfig
from germinate.errors import GerminateError


def test_test_size_defaults_to_a_quarter_more_than_the_training_size_and_the_cache_holds_it():
    assert TrainConfig(size=128).eval_size == 160
    assert TrainConfig(size=224).eval_size == 280
    cfg = TrainConfig(size=128, test_size=200)
    assert cfg.eval_size == 200 and cfg.eval_cache_px >= 200
    # cached larger than used, so that evaluation images are downsampled like training crops
    assert TrainConfig(size=128).cache_px == 160 and TrainConfig(size=128).eval_cache_px == 192
    assert TrainConfig(size=128, test_size=100, cache_margin=2.0).cache_px == 256


def test_a_tiny_test_size_is_refused():
    with pytest.raises(GerminateError, match="--test-size"):
        TrainConfig(size=64, test_size=8).validate()
