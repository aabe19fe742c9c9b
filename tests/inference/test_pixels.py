"""The pixel helpers every segmenter shares (annofree.inference.pixels)."""

import pytest
import torch
import torch.nn.functional as F

from annofree.inference.pixels import channel_argmax, drop_patch_remainder, upsample_argmax


def test_upsample_argmax_in_class_chunks_equals_the_full_resize():
    torch.manual_seed(3)
    logits = torch.rand(7, 5, 6)
    full = F.interpolate(logits[None], size=(23, 17), mode="bilinear", align_corners=False)[0].argmax(0)
    for budget in [1, 23 * 17 * 2, 1 << 30]:
        assert torch.equal(upsample_argmax(logits, (23, 17), max_elements=budget), full)


@pytest.mark.parametrize(("shape", "dim"), [((2, 8, 33, 47), 1), ((6, 40, 30), 0), ((3, 5), 1)])
def test_channel_argmax_is_argmax_with_the_first_index_winning_ties(shape, dim):
    values = torch.randint(0, 3, shape, generator=torch.Generator().manual_seed(0)).float()  # many ties
    assert torch.equal(channel_argmax(values, dim), values.argmax(dim=dim))


def test_drop_patch_remainder_crops_and_keeps_sides_of_at_least_one_patch():
    pixels = torch.rand(1, 3, 37, 50)
    torch.testing.assert_close(drop_patch_remainder(pixels, 16), pixels[..., :32, :48])
    assert tuple(drop_patch_remainder(torch.rand(1, 3, 10, 40), 16).shape[-2:]) == (16, 32)  # fitted: 10 < 16
