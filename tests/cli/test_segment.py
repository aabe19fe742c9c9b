import json

import numpy as np
import pytest
from PIL import Image

from annofree import cli
from tests.tiny import save_tiny_groupvit


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny GroupViT with the real CLIP vocabulary (the CLI tokenizes class prompts with BPE)."""
    return save_tiny_groupvit(tmp_path_factory.mktemp("run"))


def annofree(monkeypatch, *argv) -> int:
    """Run the ``annofree`` entry point with only this room's subcommands registered."""
    monkeypatch.setattr(cli, "COMMANDS", ["segment", "evaluate"])
    return cli.main([str(a) for a in argv])


def _rgb(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _make_inputs(folder):
    folder.mkdir()
    Image.fromarray(_rgb(30, 40)[..., 0]).save(folder / "grey.png")  # mode L
    Image.fromarray(np.dstack([_rgb(25, 35, 1), np.full((25, 35), 128, np.uint8)])).save(folder / "rgba.png")
    deep = (np.random.default_rng(2).integers(0, 65536, (21, 27))).astype(np.uint16)
    Image.fromarray(deep).save(folder / "deep.png")  # 16-bit grey
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide x 24 high, shown rotated by 90 degrees: 24 wide x 40 high
    Image.fromarray(_rgb(24, 40, 3)).save(folder / "rotated.jpg", exif=exif)
    return {"grey": (30, 40), "rgba": (25, 35), "deep": (21, 27), "rotated": (40, 24)}  # (height, width)


def test_segment_writes_outputs_for_every_kind_of_image(tmp_path, weights, monkeypatch, capsys):
    sizes = _make_inputs(tmp_path / "in")
    (tmp_path / "in" / "notes.txt").write_text("not an image, and skipped inside a directory")
    out = tmp_path / "out"
    code = annofree(
        monkeypatch, "segment", tmp_path / "in", "--weights", weights, "--classes", "cat, dog,grass",
        "--out", out, "--short-side", 0, "--bg-thresh", 0.5,
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    for name, (height, width) in sizes.items():
        labels = Image.open(out / f"{name}.png")
        assert labels.mode == "L" and labels.size == (width, height)
        assert np.asarray(labels).max() <= 3
        overlay = Image.open(out / f"{name}_overlay.png")
        assert overlay.width > width and overlay.height >= height  # image plus legend panel
        summary = json.loads((out / f"{name}.json").read_text())
        assert summary["classes"] == ["background", "cat", "dog", "grass"]
        assert summary["size"] == {"width": width, "height": height}
        assert summary["image"].endswith(name + (".jpg" if name == "rotated" else ".png"))
        assert sum(summary["fractions"].values()) == pytest.approx(1.0)
        counts = np.bincount(np.asarray(labels).ravel(), minlength=4) / (width * height)
        assert list(summary["fractions"].values()) == pytest.approx(counts.tolist())
    assert not (out / "notes.png").exists()


def test_slide_mode_and_short_side_keep_the_input_size(tmp_path, weights, monkeypatch, capsys):
    Image.fromarray(_rgb(37, 53)).save(tmp_path / "odd.png")
    code = annofree(
        monkeypatch, "segment", tmp_path / "odd.png", "--weights", weights, "--classes", "cat,dog",
        "--out", tmp_path / "out", "--mode", "slide", "--window", 24, "--stride", 16, "--short-side", 30,
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert Image.open(tmp_path / "out" / "odd.png").size == (53, 37)


def test_the_similarity_rule_takes_a_cosine_threshold(tmp_path, weights, monkeypatch, capsys):
    Image.fromarray(_rgb(16, 16)).save(tmp_path / "x.png")
    common = ["segment", tmp_path / "x.png", "--weights", weights, "--classes", "cat,dog", "--short-side", 0]
    # Every cosine is at least -1: at that threshold nothing is background.
    assert annofree(monkeypatch, *common, "--out", tmp_path / "out", "--bg-rule", "similarity", "--bg-thresh", -1) == 0
    assert np.asarray(Image.open(tmp_path / "out" / "x.png")).min() >= 1
    capsys.readouterr()
    # The same threshold is no affinity: a one-line error, and nothing written.
    assert annofree(monkeypatch, *common, "--out", tmp_path / "out2", "--bg-thresh", -1) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[0, 1] with the affinity rule" in err
    assert not (tmp_path / "out2" / "x.png").exists()


def test_a_corrupt_file_is_reported_and_the_others_are_processed(tmp_path, weights, monkeypatch, capsys):
    Image.fromarray(_rgb(20, 20)).save(tmp_path / "good1.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    Image.fromarray(_rgb(16, 24)).save(tmp_path / "good2.jpg")
    out = tmp_path / "out"
    code = annofree(
        monkeypatch, "segment", tmp_path / "good1.png", tmp_path / "broken.png", tmp_path / "good2.jpg",
        tmp_path / "missing.png", "--weights", weights, "--classes", "cat", "--out", out, "--short-side", 0,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.png" in err and "missing.png" in err
    assert "Traceback" not in err
    assert Image.open(out / "good1.png").size == (20, 20)
    assert Image.open(out / "good2.png").size == (24, 16)
    assert not (out / "broken.png").exists()


def test_same_stems_get_distinct_outputs(tmp_path, weights, monkeypatch, capsys):
    Image.fromarray(_rgb(12, 14)).save(tmp_path / "a.png")
    Image.fromarray(_rgb(10, 18)).save(tmp_path / "a.jpg")
    out = tmp_path / "out"
    code = annofree(
        monkeypatch, "segment", tmp_path / "a.png", tmp_path / "a.jpg", "--weights", weights,
        "--classes", "cat", "--out", out, "--short-side", 0,
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert Image.open(out / "a.png").size == (14, 12)
    assert Image.open(out / "a_jpg.png").size == (18, 10)


@pytest.mark.parametrize(
    ("classes", "weights_kind", "message"),
    [
        ("", "good", "no class names"),
        (" , ", "good", "no class names"),
        ("cat,dog,Cat", "good", "duplicated class name"),
        ("cat,,dog", "good", "empty class name"),
        ("background,cat", "good", "implicit"),
        ("cat", "missing", "no weights file"),
        ("cat", "corrupt", "not a readable safetensors"),
    ],
)
def test_bad_arguments_give_one_line_errors(tmp_path, weights, monkeypatch, capsys, classes, weights_kind, message):
    Image.fromarray(_rgb(8, 8)).save(tmp_path / "x.png")
    path = {"good": weights, "missing": tmp_path / "nothing.safetensors", "corrupt": tmp_path / "bad.safetensors"}
    (tmp_path / "bad.safetensors").write_bytes(b"\x00\x01 not safetensors at all")
    code = annofree(
        monkeypatch, "segment", tmp_path / "x.png", "--weights", path[weights_kind], "--classes", classes,
        "--out", tmp_path / "out", "--short-side", 0,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("annofree: error:")
    assert not (tmp_path / "out" / "x.png").exists()


def test_a_non_image_file_alone_fails_with_a_one_line_error(tmp_path, weights, monkeypatch, capsys):
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    code = annofree(
        monkeypatch, "segment", tmp_path / "table.csv", "--weights", weights, "--classes", "cat",
        "--out", tmp_path / "out", "--short-side", 0,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("annofree: error:")]
    assert len(errors) == 1 and "table.csv" in errors[0] and "not a readable image" in errors[0]
    assert "Traceback" not in err


def test_vis_groups_writes_the_groups_of_each_stage(tmp_path, weights, monkeypatch, capsys):
    from annofree.viz import group_colors, grouping_stages
    from annofree.weights import load

    image = _rgb(36, 44, 5)
    Image.fromarray(image).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    code = annofree(monkeypatch, "segment", tmp_path / "photo.png", "--weights", weights, "--classes", "cat,dog",
                    "--out", out, "--short-side", 32, "--vis", "groups")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == {"photo.png", "photo_overlay.png", "photo.json", "photo_groups.png"}
    panel = np.asarray(Image.open(out / "photo_groups.png").convert("RGB"))
    # image | stage 1 (8 groups) | stage 2 (4 groups), enlarged 5 times (256 // 44), below a title strip.
    maps, counts = grouping_stages(load(weights), image, short_side=32)
    assert counts == [8, 4]
    top = panel.shape[0] - 5 * 36
    tile = panel[top:, 5 * 44 + 8 : 2 * 5 * 44 + 8]
    blended = (image.astype(np.float32) * 0.4 + group_colors(8)[maps[0]].astype(np.float32) * 0.6 + 0.5).astype(
        np.uint8
    )
    np.testing.assert_array_equal(tile[::5, ::5], blended)
    # Without --vis groups there is no such file; DenseSiam has no grouping stages.
    assert annofree(monkeypatch, "segment", tmp_path / "photo.png", "--weights", weights, "--classes", "cat",
                    "--out", tmp_path / "plain") == 0  # fmt: skip
    assert not (tmp_path / "plain" / "photo_groups.png").exists()


def test_vis_groups_with_densesiam_weights_is_an_error(tmp_path, monkeypatch, capsys):
    from tests.tiny import save_tiny_densesiam

    Image.fromarray(_rgb(20, 20)).save(tmp_path / "photo.png")
    ds = save_tiny_densesiam(tmp_path / "ds")
    code = annofree(monkeypatch, "segment", tmp_path / "photo.png", "--weights", ds, "--out", tmp_path / "o", "--vis",
                    "groups")  # fmt: skip
    assert code == 2 and "DenseSiam has no grouping stages" in capsys.readouterr().err


def test_folders_are_searched_recursively_and_outputs_keep_the_sub_path(tmp_path, weights, monkeypatch, capsys):
    photos = tmp_path / "photos"
    (photos / "2024" / "june").mkdir(parents=True)
    (photos / ".hidden").mkdir()
    Image.fromarray(_rgb(12, 14)).save(photos / "top.png")
    Image.fromarray(_rgb(10, 18)).save(photos / "2024" / "top.png")  # the same name one folder down
    Image.fromarray(_rgb(16, 12)).save(photos / "2024" / "june" / "beach.jpg")
    Image.fromarray(_rgb(8, 8)).save(photos / ".hidden" / "skipped.png")
    out = tmp_path / "out"
    code = annofree(
        monkeypatch, "segment", photos, "--weights", weights, "--classes", "cat", "--out", out, "--short-side", 0
    )
    assert code == 0, capsys.readouterr().err
    assert Image.open(out / "top.png").size == (14, 12)
    assert Image.open(out / "2024" / "top.png").size == (18, 10)
    assert Image.open(out / "2024" / "june" / "beach.png").size == (12, 16)
    assert (out / "2024" / "june" / "beach_overlay.png").is_file() and (out / "2024" / "june" / "beach.json").is_file()
    assert not list(out.rglob("skipped*"))


def test_output_names_never_collide():
    from pathlib import Path

    from annofree.cli.segment import OUTPUT_SUFFIXES, output_names

    wanted = [(Path(f"in/{name}"), Path(name).with_suffix("").as_posix()) for name in [
        "a.jpg", "a.png", "a.gif", "a_overlay.jpg", "b_groups.png", "b.png", "A.png", "sub/a.jpg", "sub/a.png",
    ]]  # fmt: skip
    names = output_names(wanted)
    files = [(name + suffix).lower() for name in names for suffix in OUTPUT_SUFFIXES]
    assert len(files) == len(set(files)), names
    assert names[:3] == ["a", "a_png", "a_gif"] and names[7:] == ["sub/a", "sub/a_png"]


def test_progress_bar_on_a_terminal_and_quiet(tmp_path, weights, monkeypatch, capsys):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for name in ("one", "two"):
        Image.fromarray(_rgb(12, 14)).save(tmp_path / f"{name}.png")
    common = ["segment", tmp_path / "one.png", tmp_path / "two.png", "--weights", weights, "--classes", "cat"]
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert annofree(monkeypatch, *common, "--out", tmp_path / "out") == 0
    bar = terminal.getvalue()
    assert "segment: 100%" in bar and "2/2" in bar and "<00:00" in bar, bar  # done, and the time left (ETA)
    assert "two.png" in bar  # the file being segmented
    assert capsys.readouterr().out.count(" -> ") == 2
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert annofree(monkeypatch, *common, "--out", tmp_path / "out2", "--quiet") == 0
    assert quiet.getvalue() == "" and capsys.readouterr().out == ""
    assert (tmp_path / "out2" / "two.png").is_file()
    plain = io.StringIO()  # not a terminal (a log file, a pipe): no bar
    monkeypatch.setattr(sys, "stderr", plain)
    assert annofree(monkeypatch, *common, "--out", tmp_path / "out3") == 0
    assert "%" not in plain.getvalue() and "segmented 2 of 2 inputs" in plain.getvalue()


STORED = {"bg_rule": "similarity", "bg_thresh": 0.2, "short_side": 24, "flip": True}


@pytest.fixture
def stored_run(tmp_path):
    """A run whose weights carry the settings they were scored with, trained on synthetic scenes."""
    from annofree.weights import write_stored_settings

    weights = save_tiny_groupvit(tmp_path / "stored")
    write_stored_settings(weights, STORED, synthetic=True)
    return weights.parent


def test_segment_uses_the_weights_settings_and_says_where_each_came_from(
    tmp_path, weights, stored_run, monkeypatch, capsys
):
    Image.fromarray(_rgb(30, 41, 7)).save(tmp_path / "x.png")
    common = ["segment", tmp_path / "x.png", "--classes", "cat,dog,grass"]
    assert annofree(monkeypatch, *common, "--weights", stored_run, "--out", tmp_path / "stored") == 0
    err = capsys.readouterr().err
    source = stored_run / "inference.json"
    assert f"from {source}: bg_thresh=0.2 bg_rule=similarity short_side=24 flip=on" in err
    assert "defaults: mode=whole topk=5 prompts=single" in err
    assert "trained on synthetic scenes only; for photos use --weights groupvit-gcc-yfcc" in err
    # The same labels as with every option given on the command line, to weights without a settings file.
    explicit = ["--bg-rule", "similarity", "--bg-thresh", 0.2, "--short-side", 24, "--flip"]
    assert annofree(monkeypatch, *common, "--weights", weights.parent, *explicit, "--out", tmp_path / "given") == 0
    err = capsys.readouterr().err
    assert "from the command line: bg_thresh=0.2 bg_rule=similarity short_side=24 flip=on" in err
    assert "synthetic" not in err
    stored_labels = np.asarray(Image.open(tmp_path / "stored" / "x.png"))
    np.testing.assert_array_equal(stored_labels, np.asarray(Image.open(tmp_path / "given" / "x.png")))
    assert annofree(monkeypatch, *common, "--weights", weights.parent, "--out", tmp_path / "paper") == 0
    assert "defaults: bg_thresh=0.95 bg_rule=affinity mode=whole short_side=448" in capsys.readouterr().err


def test_an_option_given_overrides_only_that_setting(tmp_path, stored_run, monkeypatch, capsys):
    Image.fromarray(_rgb(30, 41, 7)).save(tmp_path / "x.png")
    common = ["segment", tmp_path / "x.png", "--classes", "cat,dog", "--weights", stored_run]
    # A cosine of -1 is no valid affinity: accepted here because the rule still comes from the weights.
    assert annofree(monkeypatch, *common, "--bg-thresh", -1, "--no-flip", "--out", tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "from the command line: bg_thresh=-1 flip=off" in err
    assert f"from {stored_run / 'inference.json'}: bg_rule=similarity short_side=24" in err
    assert np.asarray(Image.open(tmp_path / "out" / "x.png")).min() >= 1  # no cosine is below -1: no background


def test_a_broken_settings_file_is_a_one_line_error(tmp_path, stored_run, monkeypatch, capsys):
    (stored_run / "inference.json").write_text('{"zero_shot": {"bg_treshold": 0.2}}')
    Image.fromarray(_rgb(8, 8)).save(tmp_path / "x.png")
    code = annofree(monkeypatch, "segment", tmp_path / "x.png", "--classes", "cat", "--weights", stored_run,
                    "--out", tmp_path / "out")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "inference.json: unknown zero-shot setting 'bg_treshold'" in err


@pytest.mark.parametrize("command", ["segment", "evaluate"])
def test_help_says_where_unset_options_come_from(monkeypatch, capsys, command):
    with pytest.raises(SystemExit):
        annofree(monkeypatch, command, "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "default None" not in text and "default: None" not in text
    assert "--flip, --no-flip" in text
    if command == "evaluate":
        assert "(GroupViT default: the benchmark's protocol; with --data the weights' inference.json, else 448; " \
            "DenseSiam default: 320 on a benchmark, the folder's size with --data)" in text  # fmt: skip
    else:
        assert "default: the weights' inference.json, else 0.95" in text


def test_the_packaged_demo_weights_on_a_photo_use_their_settings_and_say_what_they_cannot_tell(
    tmp_path, monkeypatch, capsys
):
    """The acceptance case of a new user: the demo's weights (trained on synthetic shapes) on a real photo."""
    skimage_data = pytest.importorskip("skimage.data")
    from annofree.demo import default_config_path

    Image.fromarray(skimage_data.chelsea()).save(tmp_path / "chelsea.jpg")
    demo_weights = default_config_path("groupvit").parents[2] / "demo" / "weights" / "groupvit"
    code = annofree(monkeypatch, "segment", tmp_path / "chelsea.jpg", "--weights", demo_weights,
                    "--classes", "cat,person,cup,circle", "--out", tmp_path / "out")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"from {demo_weights / 'inference.json'}: bg_thresh=0.2 bg_rule=similarity" in err
    assert "trained on synthetic scenes only; for photos use --weights groupvit-gcc-yfcc" in err
    # Words it never trained on have zero embedding rows in the packed checkpoint: their prompts are one.
    assert "embed the classes cat, person, cup alike" in err and "circle" not in err.split("alike")[0]
    fractions = json.loads((tmp_path / "out" / "chelsea.json").read_text())["fractions"]
    assert fractions["cat"] < 1.0  # no longer the whole photo for the first class
