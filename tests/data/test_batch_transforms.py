"""Per-batch augmentation and normalisation: what training feeds the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmi_cli.data.batch_transforms import (
    BatchAugment,
    BatchPreprocess,
    jitter_colors,
    to_float_chw,
    warp,
)
from cmi_cli.data.transforms import EvalTransform

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def batch(n: int = 4, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)
    masks = torch.randint(0, 6, (n, size, size), dtype=torch.uint8, generator=g)
    return images, masks


def test_evaluation_normalisation_equals_the_numpy_transform_serving_uses() -> None:
    images, masks = batch()
    transform = EvalTransform(32, MEAN, STD)
    expected = np.stack(
        [transform(i.numpy(), m.numpy())[0] for i, m in zip(images, masks, strict=True)]
    )
    x, y = BatchPreprocess(MEAN, STD, BatchAugment())((images, masks), train=False)
    np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=1e-5)
    assert torch.equal(y, masks.to(torch.int64))


def test_identity_and_flip_warps_move_pixels_exactly() -> None:
    images, masks = batch()
    x, y = to_float_chw(images), masks.to(torch.int64)
    ones = torch.ones(4)
    same = warp(x, y, ones, torch.zeros(4, 2), ones)
    assert torch.equal(same[0], x)
    assert torch.equal(same[1], y)
    mirrored = warp(x, y, ones, torch.zeros(4, 2), -ones)
    assert torch.equal(mirrored[0], x.flip(-1))
    assert torch.equal(mirrored[1], y.flip(-1))


def test_zooming_out_pads_with_ignore_and_zooming_in_never_does() -> None:
    images, masks = batch()
    x, y = to_float_chw(images), masks.to(torch.int64)
    half = torch.full((4,), 0.5)
    for shift in ([0.0, 0.0], [0.5, -0.5], [-0.5, 0.25]):
        out_x, out_y = warp(x, y, half, torch.tensor([shift] * 4), torch.ones(4))
        assert set(out_y.unique().tolist()) <= set(range(6)) | {255}
        assert int((out_y == 255).sum()) == 4 * (32 * 32 - 16 * 16)  # a 16 px pair in 32 px
        assert torch.all(out_x[(out_y == 255).unsqueeze(1).expand_as(out_x)] == 0)
    double = torch.full((4,), 2.0)
    _, grown = warp(x, y, double, torch.tensor([[1.0, -1.0]] * 4), torch.ones(4))
    assert 255 not in grown
    # Shifted by (1, -1), the enlarged pair's centre sits at the frame's top-right corner.
    assert torch.equal(grown[:, 0, -1], y[:, 16, 15])


def test_augmented_masks_keep_class_ids() -> None:
    images, masks = batch(n=8)
    augment = BatchAugment(scale=(0.6, 1.4), color_jitter=0.3)
    _, y = augment(images, masks, torch.Generator().manual_seed(3))
    assert set(y.unique().tolist()) <= set(range(6)) | {255}


def test_flips_move_image_and_mask_together() -> None:
    images = torch.zeros(16, 16, 16, 3, dtype=torch.uint8)
    images[:, :, :4] = 255
    masks = torch.zeros(16, 16, 16, dtype=torch.uint8)
    masks[:, :, :4] = 2
    flip_only = BatchAugment(hflip=True, scale=(1.0, 1.0), color_jitter=0.0)
    x, y = flip_only(images, masks, torch.Generator().manual_seed(0))
    assert torch.equal(x[:, 0] > 0, y == 2)
    left = (y[:, 0, 0] == 2).tolist()
    assert set(left) == {True, False}  # 16 coin tosses


def test_jitter_factors_of_one_change_nothing_and_others_stay_in_range() -> None:
    x = to_float_chw(batch()[0])
    ones = torch.ones(4)
    assert torch.allclose(jitter_colors(x.clone(), ones, ones, ones), x, atol=1e-3)
    out = jitter_colors(x.clone(), ones * 1.5, ones * 2.0, ones * 0.0)
    assert float(out.min()) >= 0
    assert float(out.max()) <= 255
    grey = out.std(dim=1)  # saturation 0: the three channels agree
    assert float(grey.max()) < 1e-3


def test_augmentation_repeats_with_a_seed_and_varies_without() -> None:
    images, masks = batch()
    pre = BatchPreprocess(MEAN, STD, BatchAugment(color_jitter=0.3))
    a = pre((images, masks), train=True, generator=torch.Generator().manual_seed(11))
    b = pre((images, masks), train=True, generator=torch.Generator().manual_seed(11))
    c = pre((images, masks), train=True, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (4, 3, 32, 32)
    assert a[0].dtype == torch.float32
    assert a[1].dtype == torch.int64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augmentation_on_cuda_matches_the_cpu() -> None:
    images, masks = batch()
    pre = BatchPreprocess(MEAN, STD, BatchAugment(color_jitter=0.3))
    cpu = pre((images, masks), train=True, generator=torch.Generator().manual_seed(5))
    gpu = pre((images.cuda(), masks.cuda()), train=True, generator=torch.Generator().manual_seed(5))
    assert gpu[0].is_cuda
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-3, rtol=0)
    assert float((gpu[1].cpu() != cpu[1]).float().mean()) < 0.01
