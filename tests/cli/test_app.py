"""`annofree app`: options, defaults (loopback), limits handed to the app; the server itself is mocked here
(tests/test_app.py and tests/test_app_browser.py start real ones)."""

from __future__ import annotations

import pytest

from annofree import cli
from tests.tiny import save_tiny_densesiam, save_tiny_groupvit


@pytest.fixture
def served(monkeypatch):
    """Replace the server by a recorder of what it was given."""
    calls = []

    def fake_serve(app, host, port, examples, block):
        calls.append({"app": app, "host": host, "port": port, "examples": list(examples), "block": block})
        assert all(path.is_file() for path, _ in examples)  # still there while serving

    monkeypatch.setattr("annofree.app.serve", fake_serve)
    return calls


def test_app_listens_on_loopback_with_default_limits(tmp_path, served, capsys):
    weights = save_tiny_groupvit(tmp_path / "run")
    assert cli.main(["app", "--weights", str(weights)]) == 0
    (call,) = served
    assert call["host"] == "127.0.0.1" and call["port"] == 7860 and call["block"]
    app = call["app"]
    assert (
        app.kind == "groupvit"
        and app.short_side == 448
        and app.settings.bg_thresh == 0.95
        and app.settings.mode == "whole"
    )
    assert app.limits.max_upload_bytes == 20 * 2**20 and app.limits.max_pixels == 25_000_000
    assert app.limits.max_classes == 50
    names = {path.stem for path, _ in call["examples"]}
    assert {"astronaut", "shapes_0"} <= names
    assert not any(path.exists() for path, _ in call["examples"])  # the examples' temporary folder is removed
    assert "http://127.0.0.1:7860" in capsys.readouterr().out


def test_app_options_reach_the_app(tmp_path, served):
    weights = save_tiny_groupvit(tmp_path / "run")
    argv = ["app", "--weights", str(weights), "--host", "0.0.0.0", "--port", "8000", "--max-upload-mb", "2",
            "--max-pixels", "1000000", "--max-classes", "7", "--bg-thresh", "0.4", "--mode", "slide",
            "--short-side", "0", "--bg-rule", "similarity", "--flip", "--no-examples"]  # fmt: skip
    assert cli.main(argv) == 0
    (call,) = served
    app = call["app"]
    assert (call["host"], call["port"], call["examples"]) == ("0.0.0.0", 8000, [])
    assert app.limits.max_upload_bytes == 2 * 2**20 and app.limits.max_pixels == 1_000_000
    assert app.limits.max_classes == 7 and app.settings.bg_thresh == 0.4 and app.settings.mode == "slide"
    assert app.short_side is None
    assert app.settings.bg_rule == "similarity" and app.settings.flip


def test_densesiam_weights_default_to_short_side_320(tmp_path, served):
    weights = save_tiny_densesiam(tmp_path / "ds")
    assert cli.main(["app", "--weights", str(weights), "--no-examples"]) == 0
    assert served[0]["app"].kind == "densesiam" and served[0]["app"].short_side == 320


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--port", "0"], "--port must lie in"),
        (["--max-upload-mb", "0"], "--max-upload-mb must be positive"),
        (["--max-classes", "0"], "max_classes must be positive"),
        (["--short-side", "-1"], "--short-side must be 0"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, served, capsys, option, message):
    weights = save_tiny_groupvit(tmp_path / "run")
    assert cli.main(["app", "--weights", str(weights), *option]) == 2
    assert message in capsys.readouterr().err and not served


def test_a_warning_when_listening_beyond_this_machine(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gradio")
    import annofree
    from annofree.app import SegmentApp, serve

    launched = {}
    monkeypatch.setattr("gradio.Blocks.launch", lambda self, **kwargs: launched.update(kwargs))
    app = SegmentApp(annofree.load(save_tiny_groupvit(tmp_path / "run")))
    serve(app, host="0.0.0.0", port=7999, block=False)
    assert "anyone who can reach this machine" in capsys.readouterr().err
    assert launched["server_name"] == "0.0.0.0" and launched["max_file_size"] == 20 * 2**20
    assert launched["share"] is False and launched["prevent_thread_lock"] is True
    serve(app, block=False)
    assert launched["server_name"] == "127.0.0.1" and "anyone" not in capsys.readouterr().err


def test_sigterm_stops_the_server_and_removes_the_examples(tmp_path, monkeypatch):
    import os
    import signal

    seen = []

    def serve_until_terminated(app, host, port, examples, block):
        seen.extend(path for path, _ in examples)
        os.kill(os.getpid(), signal.SIGTERM)  # as a service manager stops it

    monkeypatch.setattr("annofree.app.serve", serve_until_terminated)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        cli.main(["app", "--weights", str(save_tiny_groupvit(tmp_path / "run"))])
    assert stop.value.code == 0
    assert seen and not any(path.exists() for path in seen)
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back


def test_the_app_starts_from_the_weights_settings_and_says_so(tmp_path, served, capsys):
    from annofree.weights import write_stored_settings

    weights = save_tiny_groupvit(tmp_path / "run")
    write_stored_settings(weights, {"bg_rule": "similarity", "bg_thresh": 0.2, "short_side": 24}, synthetic=True)
    assert cli.main(["app", "--weights", str(weights), "--no-examples", "--mode", "slide"]) == 0
    app = served[0]["app"]
    settings = app.settings
    assert (settings.bg_rule, settings.bg_thresh, app.short_side, settings.mode) == ("similarity", 0.2, 24, "slide")
    err = capsys.readouterr().err
    assert f"from {tmp_path / 'run' / 'inference.json'}: bg_thresh=0.2 bg_rule=similarity short_side=24" in err
    assert "from the command line: mode=slide" in err and "trained on synthetic scenes only" in err
    assert app.notes() == err.strip().splitlines()[:2]  # the page shows the same lines
