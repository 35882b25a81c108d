"""Per-batch augmentation and normalisation: what training feeds the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmi_cli.data.batch_transforms import BatchAugment, BatchPreprocess, to_float_chw
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


def test_without_zoom_each_sample_is_itself_or_its_mirror_exactly() -> None:
    images, masks = batch(n=8)
    x, y = to_float_chw(images), masks.to(torch.int64)
    flip_only = BatchAugment(hflip=True, scale=(1.0, 1.0), color_jitter=0.0)
    out_x, out_y = flip_only(images, masks, torch.Generator().manual_seed(0))
    mirrored = []
    for i in range(8):
        same = torch.equal(out_x[i], x[i]) and torch.equal(out_y[i], y[i])
        flipped = torch.equal(out_x[i], x[i].flip(-1)) and torch.equal(out_y[i], y[i].flip(-1))
        assert same or flipped
        mirrored.append(flipped)
    assert set(mirrored) == {True, False}  # 8 coin tosses
    nothing = BatchAugment(hflip=False, scale=(1.0, 1.0), color_jitter=0.0)
    same_x, same_y = nothing(images, masks)
    assert torch.equal(same_x, x)
    assert torch.equal(same_y, y)


def test_zooming_out_pads_with_ignore_and_zooming_in_never_does() -> None:
    images, masks = batch()
    half = BatchAugment(hflip=False, scale=(0.5, 0.5), color_jitter=0.0)
    for seed in range(3):
        out_x, out_y = half(images, masks, torch.Generator().manual_seed(seed))
        assert set(out_y.unique().tolist()) <= set(range(6)) | {255}
        # A 16 px pair inside the 32 px frame: everything around it is padding.
        assert int((out_y == 255).sum()) == 4 * (32 * 32 - 16 * 16)
        pad = (out_y == 255).unsqueeze(1).expand_as(out_x)
        assert float(out_x[pad].mean()) < 8  # black, but for bilinear blending at the edge
    double = BatchAugment(hflip=False, scale=(2.0, 2.0), color_jitter=0.0)
    _, grown = double(images, masks, torch.Generator().manual_seed(0))
    assert 255 not in grown
    # Doubled, each source id covers two pixels in a row: about half as many id changes.
    changes = int((masks[:, :, 1:] != masks[:, :, :-1]).sum())
    grown_changes = int((grown[:, :, 1:] != grown[:, :, :-1]).sum())
    assert grown_changes < 0.6 * changes


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


def test_colour_jitter_changes_images_not_masks_and_stays_in_range() -> None:
    images, masks = batch()
    x = to_float_chw(images)
    jitter = BatchAugment(hflip=False, scale=(1.0, 1.0), color_jitter=0.5)
    out_x, out_y = jitter(images, masks, torch.Generator().manual_seed(0))
    assert torch.equal(out_y, masks.to(torch.int64))
    assert not torch.allclose(out_x, x, atol=1.0)
    assert float(out_x.min()) >= 0
    assert float(out_x.max()) <= 255


def test_augmentation_leaves_the_global_random_state_alone() -> None:
    images, masks = batch()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    BatchAugment()(images, masks, torch.Generator().manual_seed(1))
    assert torch.equal(torch.rand(3), expected)


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
