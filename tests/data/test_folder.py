"""The generic segmentation folder: reading, writing, and every way a folder can be wrong."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annofree.data.folder import (
    SegmentationFolder,
    read_classes,
    read_label,
    write_classes,
    write_segmentation_sample,
)
from annofree.errors import UserError

CLASSES = ["background", "cat", "dog"]


def tiny_pair(seed: int, height: int = 16, width: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label = rng.integers(0, len(CLASSES), (height, width), dtype=np.uint8)
    label[0, :4] = 255  # ignore
    return image, label


def make_folder(root: Path, count: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    write_classes(root, CLASSES)
    pairs = {}
    for index in range(count):
        pairs[f"img{index}"] = tiny_pair(index)
        write_segmentation_sample(root, f"img{index}", *pairs[f"img{index}"])
    return pairs


def test_a_written_folder_reads_back_exactly(tmp_path):
    pairs = make_folder(tmp_path, 3)
    jpg_image, jpg_label = tiny_pair(9, height=12)
    jpg_image[:] = 120  # flat, so that JPEG keeps it nearly exact
    write_segmentation_sample(tmp_path, "b_photo", jpg_image, jpg_label, image_format="jpg")

    folder = SegmentationFolder(tmp_path)
    assert folder.classes == CLASSES
    assert folder.names == ["b_photo", "img0", "img1", "img2"]
    assert len(folder) == 4
    for index, name in enumerate(folder.names[1:], start=1):
        got_name, image, label = folder[index]
        assert got_name == name
        assert image.dtype == np.uint8 and label.dtype == np.uint8
        np.testing.assert_array_equal(image, pairs[name][0])
        np.testing.assert_array_equal(label, pairs[name][1])
    name, image, label = folder[0]
    assert image.shape == (12, 16, 3) and np.abs(image.astype(int) - 120).max() <= 2
    np.testing.assert_array_equal(label, jpg_label)
    assert folder[-1][0] == "img2"
    assert folder.image_path(0) == tmp_path / "images" / "b_photo.jpg"
    assert folder.label_path(0) == tmp_path / "labels" / "b_photo.png"
    with Image.open(folder.label_path(0)) as written_label:
        assert written_label.mode == "L"
    with pytest.raises(IndexError):
        folder[4]


def test_palette_labels_are_read_as_their_indices(tmp_path):
    make_folder(tmp_path, 1)
    ids = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    palette_label = Image.frombytes("P", (2, 2), ids.tobytes())
    palette_label.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)  # VOC-like colours
    palette_label.save(tmp_path / "labels" / "img0.png")
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(tmp_path / "images" / "img0.png")
    _, _, label = SegmentationFolder(tmp_path)[0]
    np.testing.assert_array_equal(label, ids)


def test_labels_match_the_upright_image(tmp_path):
    write_classes(tmp_path, CLASSES)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    stored = Image.fromarray(np.full((8, 16, 3), 90, dtype=np.uint8))  # 16 wide, 8 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees: 8 wide, 16 high
    stored.save(tmp_path / "images" / "r.jpg", exif=exif.tobytes())
    Image.fromarray(np.zeros((16, 8), dtype=np.uint8)).save(tmp_path / "labels" / "r.png")
    assert SegmentationFolder(tmp_path)[0][1].shape == (16, 8, 3)

    Image.fromarray(np.zeros((8, 16), dtype=np.uint8)).save(tmp_path / "labels" / "r.png")
    with pytest.raises(UserError, match=r"r\.png: label is 16x8 \(WxH\) but its image .*r\.jpg is 8x16"):
        SegmentationFolder(tmp_path)[0]


# ------------------------------------------------------------------------------------------------ errors


def break_missing_classes(root: Path) -> None:
    (root / "classes.txt").unlink()


def break_empty_class_name(root: Path) -> None:
    (root / "classes.txt").write_text("background\n\ncat\n")


def break_duplicated_class(root: Path) -> None:
    (root / "classes.txt").write_text("background\ncat\ndog\ncat\n")


def break_empty_classes(root: Path) -> None:
    (root / "classes.txt").write_text("\n \n")


def break_too_many_classes(root: Path) -> None:
    (root / "classes.txt").write_text("".join(f"c{index}\n" for index in range(256)))


def break_missing_labels_folder(root: Path) -> None:
    for path in (root / "labels").iterdir():
        path.unlink()
    (root / "labels").rmdir()


STRUCTURE_ERRORS = [
    (break_missing_classes, r"classes\.txt: no such file"),
    (break_empty_class_name, r"classes\.txt: line 2 is empty"),
    (break_duplicated_class, r"classes\.txt: class 'cat' appears twice \(lines 2 and 4\)"),
    (break_empty_classes, r"classes\.txt: no class names"),
    (break_too_many_classes, r"classes\.txt: 256 classes"),
    (break_missing_labels_folder, r"labels: no such folder"),
]


@pytest.mark.parametrize("damage, message", STRUCTURE_ERRORS, ids=[d.__name__ for d, _ in STRUCTURE_ERRORS])
@pytest.mark.parametrize("skip_bad", [False, True])
def test_structure_errors_are_always_fatal(tmp_path, damage, message, skip_bad):
    make_folder(tmp_path, 2)
    damage(tmp_path)
    with pytest.raises(UserError, match=message):
        SegmentationFolder(tmp_path, skip_bad=skip_bad)


def add_image_without_label(root: Path) -> str:
    Image.fromarray(tiny_pair(5)[0]).save(root / "images" / "lonely.png")
    return r"images/lonely\.png: no label .*labels/lonely\.png"


def add_label_without_image(root: Path) -> str:
    Image.fromarray(tiny_pair(5)[1]).save(root / "labels" / "orphan.png")
    return r"labels/orphan\.png: no image orphan"


def add_two_images_with_one_name(root: Path) -> str:
    Image.fromarray(tiny_pair(5)[0]).save(root / "images" / "img0.jpg")
    return r"several images named 'img0'"


PAIRING_ERRORS = [add_image_without_label, add_label_without_image, add_two_images_with_one_name]


@pytest.mark.parametrize("damage", PAIRING_ERRORS, ids=[d.__name__ for d in PAIRING_ERRORS])
def test_unpaired_files_are_errors_or_skipped(tmp_path, damage):
    make_folder(tmp_path, 2)
    message = damage(tmp_path)
    with pytest.raises(UserError, match=message):
        SegmentationFolder(tmp_path)
    folder = SegmentationFolder(tmp_path, skip_bad=True)
    assert len(folder.skipped) == 1
    assert folder.names == [name for name in ("img0", "img1") if name not in {n for n, _ in folder.skipped}]


def label_of_other_size(root: Path) -> str:
    Image.fromarray(np.zeros((16, 15), dtype=np.uint8)).save(root / "labels" / "img1.png")
    return r"labels/img1\.png: label is 15x16 \(WxH\) but its image .*img1\.png is 16x16"


def rgb_label(root: Path) -> str:
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(root / "labels" / "img1.png")
    return r"labels/img1\.png: a label must be single-channel 8-bit .* mode RGB"


def sixteen_bit_label(root: Path) -> str:
    Image.fromarray(np.zeros((16, 16), dtype=np.uint16)).save(root / "labels" / "img1.png")
    return r"labels/img1\.png: a label must be single-channel 8-bit .* mode I;16"


def label_with_unknown_class(root: Path) -> str:
    label = tiny_pair(1)[1]
    label[3, 3], label[4, 4] = 3, 7  # 3 classes: 0, 1, 2 (255 is fine)
    Image.fromarray(label).save(root / "labels" / "img1.png")
    return r"labels/img1\.png: values 3, 7 are not class ids \(classes\.txt names 3"


def corrupt_image(root: Path) -> str:
    (root / "images" / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return r"images/img1\.png: not a readable image"


def corrupt_label(root: Path) -> str:
    (root / "labels" / "img1.png").write_bytes(b"garbage")
    return r"labels/img1\.png: not a readable label"


CONTENT_ERRORS = [
    label_of_other_size,
    rgb_label,
    sixteen_bit_label,
    label_with_unknown_class,
    corrupt_image,
    corrupt_label,
]


@pytest.mark.parametrize("damage", CONTENT_ERRORS, ids=[d.__name__ for d in CONTENT_ERRORS])
def test_bad_pairs_raise_when_read_or_are_skipped_up_front(tmp_path, damage, caplog):
    make_folder(tmp_path, 3)
    message = damage(tmp_path)

    strict = SegmentationFolder(tmp_path)  # contents are checked when read
    assert strict.names == ["img0", "img1", "img2"]
    assert strict[0][0] == "img0"
    with pytest.raises(UserError, match=message):
        strict[1]
    with pytest.raises(UserError, match=message):
        strict.check()

    with caplog.at_level(logging.WARNING, logger="annofree.data.folder"):
        lenient = SegmentationFolder(tmp_path, skip_bad=True)
    assert lenient.names == ["img0", "img2"]
    assert [name for name, _ in lenient.skipped] == ["img1"]
    assert "skipped 1 bad pairs" in caplog.text
    lenient.check()
    assert [lenient[i][0] for i in range(len(lenient))] == ["img0", "img2"]


def test_a_folder_left_without_pairs_is_an_error(tmp_path):
    make_folder(tmp_path, 1)
    rgb_label(tmp_path)
    (tmp_path / "labels" / "img0.png").rename(tmp_path / "labels" / "img1.png")
    with pytest.raises(UserError, match=r"no image/label pairs \(2 bad pairs skipped\)"):
        SegmentationFolder(tmp_path, skip_bad=True)
    with pytest.raises(UserError, match="no such segmentation folder"):
        SegmentationFolder(tmp_path / "nowhere")


# ----------------------------------------------------------------------------------------------- helpers


def test_classes_round_trip_and_tolerate_editor_leftovers(tmp_path):
    write_classes(tmp_path, [" background", "cat ", "dog"])
    assert (tmp_path / "classes.txt").read_text() == "background\ncat\ndog\n"
    assert read_classes(tmp_path) == read_classes(tmp_path / "classes.txt") == CLASSES
    (tmp_path / "classes.txt").write_bytes("\ufeffbackground\r\n  cat\r\ndog\r\n\r\n\n".encode())
    assert read_classes(tmp_path) == CLASSES
    for bad in ([], ["a", ""], ["a", "a"], ["two\nlines"], [f"c{index}" for index in range(256)]):
        with pytest.raises(ValueError):
            write_classes(tmp_path / "other", bad)


def test_writing_a_sample_validates_and_replaces_the_other_format(tmp_path):
    image, label = tiny_pair(0)
    write_segmentation_sample(tmp_path, "a", image, label, image_format="jpg")
    write_segmentation_sample(tmp_path, "a", image, label, image_format="png")
    assert sorted(path.name for path in (tmp_path / "images").iterdir()) == ["a.png"]
    with pytest.raises(ValueError, match="label is"):
        write_segmentation_sample(tmp_path, "b", image, label[:8])
    with pytest.raises(ValueError, match="uint8"):
        write_segmentation_sample(tmp_path, "b", image.astype(np.float32), label)
    with pytest.raises(ValueError, match="name"):
        write_segmentation_sample(tmp_path, "x/y", image, label)


def test_read_label_accepts_ignore_and_rejects_unknown_ids(tmp_path):
    path = tmp_path / "l.png"
    Image.fromarray(np.array([[0, 2], [255, 1]], dtype=np.uint8)).save(path)
    np.testing.assert_array_equal(read_label(path, 3), [[0, 2], [255, 1]])
    with pytest.raises(UserError, match="values 2 are not class ids"):
        read_label(path, 2)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((2, 2), dtype=bool)).save(buffer, format="PNG")  # mode "1": not 8-bit
    (tmp_path / "b.png").write_bytes(buffer.getvalue())
    with pytest.raises(UserError, match="mode 1"):
        read_label(tmp_path / "b.png")
