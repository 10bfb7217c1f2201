"""Every point of the ``cifar100`` space is a valid model and training recipe."""

from __future__ import annotations

import math

import numpy as np
import torch
from hyperopt.pyll.stochastic import sample

from objectives.cifar100.model import build_model
from objectives.cifar100.space import REFERENCE_PARAMS, space
from objectives.cifar100.training import Recipe

N_DRAWS = 200


def test_random_points_build_models_with_the_right_outputs() -> None:
    """200 draws, each built and run forward on a batch of 2 images.

    To keep this fast the layers are constructed on the meta device and then given
    uninitialised CPU memory (``to_empty``): the model code runs exactly as usual, only
    torch's random initialisation is skipped; and the images are 16x16 (the networks are
    resolution-agnostic; four stages take 16x16 down to 1x1, 32x32 to 2x2).
    """
    rng = np.random.default_rng(0)
    images = torch.zeros(2, 3, 16, 16)
    seen_coarse = seen_plain = 0
    for _ in range(N_DRAWS):
        params = sample(space, rng=rng)
        recipe = Recipe.from_params(params)
        assert math.isfinite(recipe.lr) and recipe.lr > 0 and recipe.batch_size >= 128
        with torch.device("meta"):
            model = build_model(params)
        model = model.to_empty(device="cpu")
        with torch.no_grad():
            fine, coarse = model(images)
        assert fine.shape == (2, 100), params
        if params["coarse_head"] is None:
            assert coarse is None
            seen_plain += 1
        else:
            assert coarse is not None and coarse.shape == (2, 20), params
            seen_coarse += 1
    assert seen_coarse and seen_plain


def test_reference_point_is_a_resnet9_like_model() -> None:
    model = build_model(REFERENCE_PARAMS)
    fine, coarse = model(torch.zeros(2, 3, 32, 32))
    assert fine.shape == (2, 100) and coarse is None
    assert 6e6 < sum(p.numel() for p in model.parameters()) < 9e6
