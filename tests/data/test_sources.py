"""Shards from anywhere: local files, ``pipe:`` commands, HTTP served from 127.0.0.1 (with dropped connections
and missing shards), fsspec URLs; naming sources with ``::``; bad sources never stop reading."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from annofree.data import sources
from annofree.data.sources import (
    RetryPolicy,
    ShardSourceError,
    TransientSourceError,
    expand_shards,
    expand_sources,
    open_shard,
    read_shard,
    split_outside_braces,
)
from annofree.data.spec import LoaderSpec
from annofree.data.stream import image_text_batches
from annofree.data.writer import ShardWriter
from annofree.engine.config import resolve_path_value
from annofree.errors import UserError
from tests.data.shard_helpers import (
    as_list,
    key_sample,
    keys_of,
    run,
    write_directory_order_tar,
    write_folder,
    write_samples,
)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(sources, "RETRY", RetryPolicy(attempts=3, first_delay_s=0.01, max_delay_s=0.02))
    monkeypatch.setattr(sources, "HTTP_TIMEOUT_S", 5.0)


class ShardServer:
    """A threading HTTP server on 127.0.0.1 serving the files of ``root``; ``drops[name]`` answers that many
    requests for ``name`` with half the body and a closed connection, ``missing`` names are 404."""

    def __init__(self, root: Path):
        self.root = root
        self.drops: dict[str, int] = {}
        self.missing: set[str] = set()
        self.requests: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests[name] = server.requests.get(name, 0) + 1
                path = server.root / name
                if name in server.missing or not path.is_file():
                    self.send_error(404, "Not Found")
                    return
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drops.get(name, 0) > 0:
                    server.drops[name] -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def served(tmp_path):
    write_samples(tmp_path / "shards", 24, per_shard=4)  # 000000..000005.tar, all full
    server = ShardServer(tmp_path / "shards")
    yield server
    server.close()


def pattern(server: ShardServer, last: int = 5) -> str:
    return f"{server.url}/{{000000..{last:06d}}}.tar"


def test_http_shards_read_as_the_same_batches_as_the_files(served):
    local = run(str(served.root), batch_size=3, seed=2)
    assert len(local) == 8
    assert run(pattern(served), batch_size=3, seed=2) == local
    assert run(pattern(served), batch_size=3, seed=2, skip_batches=3) == local[3:]  # exact resume over HTTP
    assert run(pattern(served), batch_size=3, seed=2, num_workers=2) == run(
        str(served.root), batch_size=3, seed=2, num_workers=2
    )


def test_a_connection_dropped_mid_shard_is_retried_and_gives_exactly_the_same_samples(served):
    local = run(str(served.root), batch_size=2, seed=1)
    served.drops["000002.tar"] = 2  # the third try gets the whole body
    assert run(pattern(served), batch_size=2, seed=1) == local
    assert served.requests["000002.tar"] == 3 and served.requests["000001.tar"] == 1


def test_a_shard_that_keeps_dropping_is_skipped_reported_once_and_the_rest_read(served, caplog):
    served.drops["000003.tar"] = 99
    with caplog.at_level(logging.WARNING):
        first = keys_of(run(pattern(served), batch_size=1, seed=1))
        second = keys_of(run(pattern(served), batch_size=1, seed=1, epoch=1))
    assert served.requests["000003.tar"] == 6  # 3 tries in each epoch
    for keys in (first, second):
        others = {f"{index:06d}" for index in range(24) if index // 4 != 3}
        assert others <= set(keys) and len(keys) == len(set(keys))
        assert set(keys) - others <= {"000012", "000013", "000014", "000015"}  # what came before the drop
    url = f"{served.url}/000003.tar"
    reports = [record.getMessage() for record in caplog.records if url in record.getMessage()]
    assert len(reports) == 1, reports
    assert "connection closed after" in reports[0] and "gave up after 3 tries" in reports[0]
    assert "bad shard(s) so far" in reports[0]


def test_a_missing_shard_404_is_skipped_at_once_and_the_rest_read(served, caplog):
    served.missing.add("000004.tar")
    with caplog.at_level(logging.WARNING):
        keys = keys_of(run(pattern(served), batch_size=1))
    assert sorted(keys) == [f"{index:06d}" for index in range(24) if index // 4 != 4]
    assert served.requests["000004.tar"] == 1  # a 404 is not retried
    assert f"{served.url}/000004.tar: HTTP 404" in caplog.text


def test_an_unreachable_server_is_transient_and_reading_goes_on(served, caplog):
    dead = ShardServer(served.root)
    dead.close()  # nothing listens on its port any more
    data = f"{dead.url}/000000.tar,{served.url}/{{000001..000005}}.tar"
    with caplog.at_level(logging.WARNING):
        keys = keys_of(run(data, batch_size=1))
    assert sorted(keys) == [f"{index:06d}" for index in range(4, 24)]
    assert f"{dead.url}/000000.tar: cannot connect" in caplog.text and "gave up after 3 tries" in caplog.text


def test_pipe_cat_reads_the_same_batches_as_the_files(tmp_path):
    write_samples(tmp_path, 16, per_shard=4)
    local = run(str(tmp_path), batch_size=2, seed=3)
    assert run(f"pipe:cat {tmp_path}/{{000000..000003}}.tar", batch_size=2, seed=3) == local


def test_a_failing_command_is_a_failed_shard_with_its_stderr(tmp_path, caplog):
    write_samples(tmp_path, 12, per_shard=4)
    (tmp_path / "000001.tar").unlink()
    with caplog.at_level(logging.WARNING):
        keys = keys_of(run(f"pipe:cat {tmp_path}/{{000000..000002}}.tar", batch_size=1))
    assert sorted(keys) == [f"{index:06d}" for index in (0, 1, 2, 3, 8, 9, 10, 11)]
    message = next(record.getMessage() for record in caplog.records if "000001.tar" in record.getMessage())
    assert "exited with status 1" in message and "No such file" in message and "\n" not in message


def test_closing_a_pipe_early_stops_its_command(tmp_path):
    # Big enough (about 3 MB) that its first samples come long before the command's end.
    noise = np.random.default_rng(0).integers(0, 256, (8, 256, 256, 3), dtype=np.uint8)
    with ShardWriter(tmp_path, samples_per_shard=8, image_format="png") as writer:
        for index, image in enumerate(noise):
            writer.write(f"{index:06d}", image, "noise")
    samples = read_shard(f"pipe:cat {tmp_path}/000000.tar; sleep 60")
    assert next(samples)[0] == "000000"
    started = time.monotonic()
    samples.close()
    assert time.monotonic() - started < 10


def test_an_fsspec_url_reads_the_same_batches_as_the_files(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    write_samples(tmp_path, 12, per_shard=4)
    memory = fsspec.filesystem("memory")
    for path in sorted(tmp_path.glob("*.tar")):
        memory.pipe(f"/sources-test/{path.name}", path.read_bytes())
    try:
        data = "memory://sources-test/{000000..000002}.tar"
        assert run(data, batch_size=2, seed=4) == run(str(tmp_path), batch_size=2, seed=4)
        with pytest.raises(ShardSourceError, match="FileNotFoundError"):
            list(read_shard("memory://sources-test/000009.tar"))
    finally:
        memory.rm("/sources-test", recursive=True)


def test_a_missing_fsspec_backend_is_one_line_naming_the_extra():
    fsspec = pytest.importorskip("fsspec")
    try:
        fsspec.get_filesystem_class("s3")
        pytest.skip("s3fs is installed")
    except ImportError:
        pass
    with pytest.raises(UserError) as caught:
        expand_shards("s3://bucket/{00000..00009}.tar")
    message = str(caught.value)
    assert "annofree[remote]" in message and "s3fs" in message and "\n" not in message
    with pytest.raises(UserError, match="no reader for nosuch://"):
        expand_shards("nosuch://bucket/x.tar")


def test_corrupt_empty_and_wrong_format_shards_never_stop_reading(tmp_path, caplog):
    write_samples(tmp_path, 12, per_shard=4)
    (tmp_path / "000003.tar").write_bytes(b"")
    (tmp_path / "000004.tar").write_text("not a tar at all, " * 100)
    write_directory_order_tar(tmp_path / "000005.tar", 3, prefix="")
    with caplog.at_level(logging.WARNING):
        keys = keys_of(run(str(tmp_path), batch_size=1))
        keys_again = keys_of(run(str(tmp_path), batch_size=1, epoch=1))
    assert sorted(keys) == sorted(keys_again) == [f"{index:06d}" for index in range(12)]
    for name in ("000003.tar", "000004.tar", "000005.tar"):
        reports = [record.getMessage() for record in caplog.records if "bad shard(s) so far" in record.getMessage()]
        assert sum(name in report for report in reports) == 1, name  # once, by name


def test_an_ungrouped_first_shard_among_good_ones_does_not_stop_reading(tmp_path):
    write_directory_order_tar(tmp_path / "000000.tar", 3, prefix="")
    for index in (1, 2):
        write_samples(tmp_path / "more", 4 * index, per_shard=4)
    shutil.move(tmp_path / "more" / "000001.tar", tmp_path / "000001.tar")
    keys = keys_of(run(str(tmp_path), batch_size=1, seed=1))
    assert {f"{index:06d}" for index in range(4, 8)} <= set(keys)


def test_sources_are_separated_by_double_colons(tmp_path):
    a = [str(path) for path in write_samples(tmp_path / "a", 4, per_shard=2).shard_paths]
    b = [str(path) for path in write_samples(tmp_path / "b", 6, per_shard=2).shard_paths]
    data = f"{tmp_path}/a/{{000000..000001}}.tar::{tmp_path / 'b'}"
    assert expand_sources(data) == [a, b]
    assert expand_shards(data) == a + b
    assert expand_sources("pipe:cat x.tar::http://[::1]:8000/{0..1}.tar") == [
        ["pipe:cat x.tar"],
        ["http://[::1]:8000/0.tar", "http://[::1]:8000/1.tar"],
    ]
    assert split_outside_braces("a{0..1,3}b,c", ",") == ["a{0..1,3}b", "c"]
    with pytest.raises(UserError, match="empty source"):
        expand_sources(f"{a[0]}::")


def test_a_config_makes_local_parts_absolute_and_leaves_urls_alone(tmp_path):
    data = "a/{0..1}.tar,http://host/x.tar::pipe:cat b.tar::s3://bucket/{0..9}.tar::c"
    assert resolve_path_value("train.data", data, tmp_path) == (
        f"{tmp_path}/a/{{0..1}}.tar,http://host/x.tar::pipe:cat b.tar::s3://bucket/{{0..9}}.tar::{tmp_path}/c"
    )


def test_open_shard_sorts_errors_into_transient_and_not(tmp_path, served):
    served.missing.add("x.tar")
    with pytest.raises(ShardSourceError) as caught:
        open_shard(f"{served.url}/x.tar")
    assert not isinstance(caught.value, TransientSourceError)
    with pytest.raises(ShardSourceError, match="cannot be read"):
        open_shard(str(tmp_path / "nothing.tar"))
    stream = open_shard("pipe:echo oops >&2; exit 3")
    with pytest.raises(TransientSourceError, match="status 3: oops"):
        stream.read()
    stream.close()


def test_expand_shards_accepts_patterns_files_directories_and_lists(tmp_path):
    first = write_samples(tmp_path / "a", 6, per_shard=2).shard_paths
    second = write_samples(tmp_path / "b", 2, per_shard=2).shard_paths
    a = [str(path) for path in first]
    assert expand_shards(str(tmp_path / "a" / "{000000..000002}.tar")) == a
    assert expand_shards(a[1]) == [a[1]]
    assert expand_shards(str(tmp_path / "a")) == a
    both = f"{tmp_path}/a/{{000000,000002}}.tar, {tmp_path / 'b'},{a[0]}"
    assert expand_shards(both) == [a[0], a[2], str(second[0])]  # a[0] only once

    missing = str(tmp_path / "a" / "{000000..000009}.tar")
    with pytest.raises(UserError, match=r"\{000000\.\.000009\}\.tar: 7 of 10"):
        expand_shards(missing)
    with pytest.raises(UserError, match=r"nowhere\.tar"):
        expand_shards(str(tmp_path / "nowhere.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no shard files"):
        expand_shards(str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"missing\.tar"):
        image_text_batches(LoaderSpec(data=str(tmp_path / "missing.tar"), batch_size=1), key_sample, as_list)


@pytest.mark.parametrize("name", ["captions.csv", "captions.tsv", "part-0.PARQUET"])
def test_a_table_given_as_shards_points_to_annofree_data_shards(tmp_path, name):
    (tmp_path / name).write_text("url\tcaption\nimg0.png\ta caption\n")
    with pytest.raises(UserError, match=rf"{name}: a table, not webdataset shards.*annofree data shards .*{name} OUT"):
        run(str(tmp_path / name))
    for part in ("a", "b"):
        (tmp_path / f"{part}.csv").write_text("url,caption\n")
    with pytest.raises(UserError, match=r"a\.csv: a table"):  # in a brace pattern too
        expand_shards(str(tmp_path / "{a,b}.csv"))


def test_a_folder_of_captioned_images_given_as_shards_points_to_annofree_data_shards(tmp_path):
    write_folder(tmp_path / "folder", 2)
    with pytest.raises(UserError, match=r"holds no shard files .*annofree data shards SRC OUT"):
        run(str(tmp_path / "folder"))
