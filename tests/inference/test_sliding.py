import pytest
import torch

from annofree.inference.sliding import slide, window_boxes


@pytest.mark.parametrize(
    ("height", "width", "window", "stride"),
    [(37, 53, 16, 8), (32, 32, 32, 16), (10, 70, 16, 5), (448, 597, 448, 224), (5, 9, 16, 8), (40, 40, (16, 24), 16)],
)
def test_windows_cover_every_pixel_inside_the_image(height, width, window, stride):
    boxes = window_boxes(height, width, window, stride)
    wh, ww = (window, window) if isinstance(window, int) else window
    covered = torch.zeros(height, width, dtype=torch.long)
    for top, bottom, left, right in boxes:
        assert 0 <= top < bottom <= height and 0 <= left < right <= width
        # Every window has the same size, so windows can share one forward pass.
        assert (bottom - top, right - left) == (min(wh, height), min(ww, width))
        covered[top:bottom, left:right] += 1
    assert covered.min() >= 1
    assert len(set(boxes)) == len(boxes)


def test_window_starts_follow_the_stride_and_the_last_window_ends_on_the_border():
    boxes = window_boxes(20, 30, 8, 6)
    tops = sorted({b[0] for b in boxes})
    lefts = sorted({b[2] for b in boxes})
    assert tops == [0, 6, 12]  # 12 + 8 = 20: the last start is pulled back to end on the border
    assert lefts == [0, 6, 12, 18, 22]
    assert max(b[3] for b in boxes) == 30


def test_stride_larger_than_window_is_refused():
    with pytest.raises(ValueError, match="gaps"):
        window_boxes(64, 64, 16, 17)
    with pytest.raises(ValueError, match="window"):
        window_boxes(64, 64, 0, 1)


def test_slide_averages_overlapping_windows():
    torch.manual_seed(0)
    pixels = torch.rand(2, 3, 13, 19)
    boxes = window_boxes(13, 19, 8, 5)
    window_value: dict[tuple, float] = {}

    def predict(crops):
        # A different constant per window (its mean pixel), so overlaps really get averaged.
        values = crops.mean(dim=(1, 2, 3))
        out = values[:, None, None, None].expand(-1, 2, *crops.shape[-2:]).clone()
        out[:, 1] *= 2
        return out

    out = slide(predict, pixels, 8, 5, batch_size=3)
    assert out.shape == (2, 2, 13, 19)
    for b in range(2):
        for box in boxes:
            t, bo, le, r = box
            window_value[(b, box)] = pixels[b, :, t:bo, le:r].mean().item()
        for y, x in [(0, 0), (6, 7), (12, 18), (4, 10)]:
            inside = [v for (bb, (t, bo, le, r)), v in window_value.items() if bb == b and t <= y < bo and le <= x < r]
            expected = sum(inside) / len(inside)
            assert out[b, 0, y, x].item() == pytest.approx(expected, rel=1e-6)
            assert out[b, 1, y, x].item() == pytest.approx(2 * expected, rel=1e-6)


def test_slide_of_a_pixelwise_function_equals_applying_it_to_the_whole_image():
    torch.manual_seed(1)
    pixels = torch.rand(1, 3, 21, 34)
    result = slide(lambda crops: crops * 3 - 1, pixels, (8, 12), (5, 7), batch_size=4)
    torch.testing.assert_close(result, pixels * 3 - 1)


@pytest.mark.parametrize("batch_size", [1, 2, 100])
def test_window_batch_size_does_not_change_the_result(batch_size):
    torch.manual_seed(2)
    pixels = torch.rand(2, 3, 17, 23)

    def predict(crops):
        return crops.cumsum(dim=-1)  # depends on the window's position in the image

    reference = slide(predict, pixels, 9, 4, batch_size=7)
    torch.testing.assert_close(slide(predict, pixels, 9, 4, batch_size=batch_size), reference)
