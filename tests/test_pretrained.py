"""Named pretrained weights: download from a local file server, checksum, one-time conversion, offline use."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import threading
import urllib.request

import pytest
import torch

import annofree
from annofree import pretrained
from annofree.errors import UserError
from annofree.interop.official import save_official_checkpoint
from tests.tiny import tiny_groupvit

NAME = "groupvit-test-tiny"


@pytest.fixture
def release(tmp_path):
    """A published-like official file, its model and its SHA-256."""
    model = tiny_groupvit().eval()
    path = save_official_checkpoint(model, tmp_path / "served" / "group_vit_tiny-abcdef12.pth")
    return path, model, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def server(release):
    """A local HTTP server serving the release's folder; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(release[0].parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNOFREE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ANNOFREE_OFFLINE", raising=False)
    return tmp_path / "home"


def _register(monkeypatch, url: str, sha256: str) -> pretrained.PretrainedWeights:
    entry = pretrained.PretrainedWeights(NAME, url, sha256, "official", "a tiny test model")
    monkeypatch.setitem(pretrained.REGISTRY, NAME, entry)
    return entry


def _no_network(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_download_check_convert_then_cached(home, release, server, monkeypatch) -> None:
    path, model, sha = release
    entry = _register(monkeypatch, f"{server}/{path.name}", sha)
    loaded = annofree.load(NAME)
    assert _same_weights(loaded, model)
    assert pretrained.download_path(entry).is_file() and pretrained.converted_path(entry).is_file()
    _no_network(monkeypatch)  # second use: from the cache, no network
    assert _same_weights(annofree.load(NAME), model)


def test_the_file_name_prefix_is_enough_as_a_checksum(home, release, server, monkeypatch) -> None:
    path, model, sha = release
    _register(monkeypatch, f"{server}/{path.name}", sha[:8])
    assert _same_weights(annofree.load(NAME), model)


def test_checksum_mismatch_is_a_clear_error_and_nothing_is_cached(home, release, server, monkeypatch) -> None:
    path, _, sha = release
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    entry = _register(monkeypatch, f"{server}/{path.name}", wrong)
    with pytest.raises(UserError, match="checksum mismatch"):
        annofree.load(NAME)
    downloads = pretrained.download_path(entry).parent
    assert not pretrained.download_path(entry).exists() and not list(downloads.glob("*"))
    assert not pretrained.converted_path(entry).exists()


def test_offline_says_what_to_fetch_and_where_then_uses_the_placed_file(home, release, monkeypatch) -> None:
    path, model, sha = release
    entry = _register(monkeypatch, "http://127.0.0.1:9/nowhere/" + path.name, sha)  # port 9: nothing listens
    with pytest.raises(UserError) as info:
        annofree.load(NAME)
    message = str(info.value)
    assert entry.url in message and str(pretrained.download_path(entry)) in message and "\n" not in message
    pretrained.download_path(entry).parent.mkdir(parents=True, exist_ok=True)
    pretrained.download_path(entry).write_bytes(path.read_bytes())
    _no_network(monkeypatch)
    assert _same_weights(annofree.load(NAME), model)


def test_a_placed_file_with_a_wrong_checksum_is_not_used(home, release, monkeypatch) -> None:
    path, _, sha = release
    entry = _register(monkeypatch, "http://127.0.0.1:9/" + path.name, sha)
    pretrained.download_path(entry).parent.mkdir(parents=True)
    pretrained.download_path(entry).write_bytes(path.read_bytes() + b"tampered")
    _no_network(monkeypatch)
    with pytest.raises(UserError, match="checksum mismatch"):
        annofree.load(NAME)
    assert not pretrained.converted_path(entry).exists()


def test_annofree_offline_never_touches_the_network(home, release, monkeypatch) -> None:
    path, _, sha = release
    _register(monkeypatch, "http://example.invalid/" + path.name, sha)
    monkeypatch.setenv("ANNOFREE_OFFLINE", "1")
    _no_network(monkeypatch)
    with pytest.raises(UserError, match="ANNOFREE_OFFLINE"):
        annofree.load(NAME)


def test_every_weights_option_takes_the_name(home, release, server, monkeypatch, tmp_path) -> None:
    from PIL import Image

    from annofree.cli import main

    path, _, sha = release
    _register(monkeypatch, f"{server}/{path.name}", sha)
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "red.png")
    argv = [
        "segment",
        str(tmp_path / "red.png"),
        "--weights",
        NAME,
        "--classes",
        "red,blue",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 0
    assert (tmp_path / "o" / "red.png").is_file()


def _redcaps_like_release(path):
    """A file in the RedCaps release's configuration (multi_label: 0, so no multi_label_logit_scale), official
    names and shapes, an OmegaConf-like training config and no annofree config: what the NVlabs script saves."""
    from annofree.interop.official import state_dict_to_official
    from annofree.models import GroupViT
    from tests.tiny import tiny_groupvit_config

    config = tiny_groupvit_config()
    # the official text encoder has width // 64 heads
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, width=64, heads=1))
    torch.manual_seed(3)
    model = GroupViT(config).eval()
    state = state_dict_to_official(model.state_dict())
    del state["multi_label_logit_scale"]
    training_config = {
        "data": {"text_aug": {"multi_label": 0}},
        "model": {"img_encoder": {"num_heads": [2, 2, 2]}, "multi_label": "${data.text_aug.multi_label}"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "epoch": 29, "config": training_config}, path)
    return model


def test_the_redcaps_name_loads_from_a_placed_file_offline(home, monkeypatch, tmp_path) -> None:
    """``groupvit-gcc-redcaps`` through the offline path: the release has no multi_label_logit_scale (issue 18.1)."""
    import dataclasses

    released = pretrained.REGISTRY["groupvit-gcc-redcaps"]
    placed = pretrained.download_path(released)
    model = _redcaps_like_release(placed)
    sha = hashlib.sha256(placed.read_bytes()).hexdigest()
    monkeypatch.setitem(pretrained.REGISTRY, released.name, dataclasses.replace(released, sha256=sha[:8]))
    monkeypatch.setenv("ANNOFREE_OFFLINE", "1")
    _no_network(monkeypatch)
    loaded = annofree.load("groupvit-gcc-redcaps")
    assert pretrained.converted_path(released).is_file()
    mine, theirs = loaded.state_dict(), model.state_dict()
    assert mine.keys() == theirs.keys()
    for name, tensor in theirs.items():
        if name != "multi_label_logit_scale":  # not in the file: the official initial value, log(1 / 0.07)
            assert torch.equal(mine[name], tensor), name
    pixels, ids = torch.randn(2, 3, 32, 32), annofree.tokenize(["a cat", "two dogs on grass"], context_length=16)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(pixels), model.encode_image(pixels))
        assert torch.equal(loaded.encode_text(ids), model.encode_text(ids))


def test_the_released_models_are_registered_with_their_checksums() -> None:
    for name, prefix in (("groupvit-gcc-yfcc", "879422e0"), ("groupvit-gcc-redcaps", "3dd09a76")):
        entry = pretrained.REGISTRY[name]
        assert entry.filename.endswith(f"-{prefix}.pth") and entry.sha256 == prefix
        assert entry.url.startswith("https://")


def test_home_defaults_to_the_user_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("ANNOFREE_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained.sys, "platform", "linux")
    assert pretrained.annofree_home() == tmp_path / "cache" / "annofree"


def test_convert_takes_the_name_as_its_source(home, release, server, monkeypatch, tmp_path) -> None:
    from annofree.cli import main
    from annofree.interop.hf import load_hf_checkpoint

    path, model, sha = release
    _register(monkeypatch, f"{server}/{path.name}", sha)
    assert main(["convert", "--from", "annofree", NAME, "--to", "hf", "--out", str(tmp_path / "hf")]) == 0
    pytest.importorskip("transformers")
    assert _same_weights(load_hf_checkpoint(tmp_path / "hf"), model)
