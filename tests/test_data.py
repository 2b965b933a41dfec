"""lmcourse.data: registry, cache -> mirror -> URL lookup, checksums, atomic downloads.

The download path is tested against a real HTTP server on 127.0.0.1 that serves the mirror, plus
servers that drop the connection mid-file, serve wrong bytes, or never answer.
"""

from __future__ import annotations

import dataclasses
import http.server
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from lmcourse import data

MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_mirror = pytest.mark.skipif(not MIRROR.is_dir(), reason="the course data mirror ../shared/data is not here")

# Blob ids from shared/data/README.md: `git hash-object` of each upstream file.
GIT_BLOBS = {
    "tinyshakespeare.txt": "7dcb3a2d4cc3b48b6283dd46870bfeb78f88aac9",
    "names.txt": "736d88e18b70b292750a30e5cca6a92b0b333bd2",
    "wikitext-2/valid.txt": "eec944eb2d9e46061cd34a6913528797db6842fc",
    "wikitext-2/test.txt": "6f3fc88e4cd88456ea892971f9f12243e8428624",
    "wikitext-2-raw/valid.txt": "7760d2e69e8038dc8332ca34cfc238c36f7e47df",
    "wikitext-2-raw/test.txt": "d9d791581935032220e10e28a04cfbd6460b72f5",
}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets an empty cache, no mirror and forgets which files were verified."""
    monkeypatch.setenv(data.CACHE_VAR, str(tmp_path / "cache"))
    monkeypatch.delenv(data.MIRROR_VAR, raising=False)
    monkeypatch.setattr(data, "_verified", set())
    return tmp_path / "cache" / "data"


def use_url(monkeypatch, name: str, url: str) -> data.DataFile:
    """Point the registered (single-file) corpus ``name`` at ``url``, keeping its real checksum."""
    entry = dataclasses.replace(data.REGISTRY[name][None], url=url)
    monkeypatch.setitem(data.REGISTRY, name, {None: entry})
    return entry


class Server:
    """An HTTP server on 127.0.0.1 in a thread. Paths: /ok/<relpath>, /drop/<relpath>, /wrong/<relpath>, /hang/."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest's output clean
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                mode, _, rel = self.path.lstrip("/").partition("/")
                if mode == "hang":
                    time.sleep(5)
                    return
                body = (root / rel).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "ok":
                    self.wfile.write(body)
                elif mode == "drop":  # half the promised bytes, then the connection closes
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif mode == "wrong":  # the right length, the wrong bytes
                    self.wfile.write(bytes(len(body)))

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server(MIRROR)
    yield srv
    srv.close()


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# --- names, splits and their errors -------------------------------------------------------------

def test_registry_lists_the_course_corpora():
    assert data.names() == sorted(["tinyshakespeare", "names", "wikitext2", "wikitext2-raw", "gpt2-vocab",
                                   "gpt2-merges", "sms-spam"])
    assert data.splits("wikitext2") == ["train", "valid", "test"]
    assert data.splits("tinyshakespeare") == []
    for entries in data.REGISTRY.values():
        for entry in entries.values():
            assert entry.url.startswith("https://")
            kind, _, hexdigest = entry.digest.partition(":")
            assert kind in {"sha256", "gitblob"} and len(hexdigest) == {"sha256": 64, "gitblob": 40}[kind]


def test_unknown_dataset_is_named_with_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown dataset 'tinyshakespear'.*Did you mean 'tinyshakespeare'"):
        data.load_text("tinyshakespear")


def test_split_errors_say_what_to_pass():
    with pytest.raises(ValueError, match=r"'wikitext2' has splits train, valid, test; got split=None"):
        data.path("wikitext2")
    with pytest.raises(ValueError, match=r"has splits train, valid, test; got split='dev'"):
        data.path("wikitext2", "dev")
    with pytest.raises(ValueError, match="single file and has no splits"):
        data.path("names", "train")


# --- the mirror and the cache -------------------------------------------------------------------

@needs_mirror
def test_every_mirrored_file_passes_its_checksum(monkeypatch):
    monkeypatch.setenv(data.MIRROR_VAR, str(MIRROR))
    for name, entries in data.REGISTRY.items():
        for split, entry in entries.items():
            if split == "train":  # WikiText-2's train split is not mirrored
                continue
            assert data.path(name, split) == MIRROR / entry.relpath


@needs_mirror
def test_gitblob_digest_matches_the_upstream_blob_ids():
    for rel, blob in GIT_BLOBS.items():
        assert data.file_digest(MIRROR / rel, "gitblob") == f"gitblob:{blob}"


@needs_mirror
def test_load_text_keeps_the_exact_text(monkeypatch):
    monkeypatch.setenv(data.MIRROR_VAR, str(MIRROR))
    text = data.load_text("tinyshakespeare")
    assert len(text) == 1_115_394 and text.count("\n") == 40_000 and len(set(text)) == 65
    assert len(data.load_text("wikitext2-raw", "test")) == 1_288_556  # code points, as the README counts


@needs_mirror
def test_the_cache_comes_before_the_mirror(monkeypatch, isolated):
    monkeypatch.setenv(data.MIRROR_VAR, str(MIRROR))
    cached = isolated / "names.txt"
    cached.parent.mkdir(parents=True)
    shutil.copy(MIRROR / "names.txt", cached)
    assert data.path("names") == cached


@needs_mirror
def test_a_corrupt_cached_file_is_deleted_and_both_hashes_shown(isolated):
    cached = isolated / "names.txt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes((MIRROR / "names.txt").read_bytes()[:-1] + b"X")
    expected = data.REGISTRY["names"][None].digest
    with pytest.raises(data.ChecksumError, match=rf"{cached}.*expected {expected}, found sha256:[0-9a-f]{{64}}"):
        data.load_text("names")
    assert not cached.exists()


def test_a_corrupt_mirrored_file_is_rejected_and_left_alone(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    bad = mirror / "names.txt"
    bad.write_text("emma\nolivia\n")
    monkeypatch.setenv(data.MIRROR_VAR, str(mirror))
    with pytest.raises(data.ChecksumError, match=r"names.txt is corrupt: expected sha256:0a30b555.*found sha256:"):
        data.load_text("names")
    assert bad.exists()  # the mirror is the user's folder: reported, not deleted


# --- downloads ----------------------------------------------------------------------------------

def test_offline_with_no_mirror_fails_fast_and_says_what_to_do(monkeypatch, isolated):
    with socket.socket() as s:  # a port nobody listens on: the connection is refused, as offline
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/tinyshakespeare.txt"
    use_url(monkeypatch, "tinyshakespeare", url)
    start = time.monotonic()
    with pytest.raises(data.DownloadError) as err:
        data.load_text("tinyshakespeare")
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert url in message and "LMCOURSE_DATA_MIRROR" in message and str(isolated / "tinyshakespeare.txt") in message
    assert leftovers(isolated) == []


def test_a_server_that_never_answers_times_out(monkeypatch, server, isolated):
    use_url(monkeypatch, "names", f"{server.url}/hang/")
    monkeypatch.setenv(data.TIMEOUT_VAR, "1")
    start = time.monotonic()
    with pytest.raises(data.DownloadError, match="timed out"):
        data.path("names")
    assert time.monotonic() - start < 10
    assert leftovers(isolated) == []


@needs_mirror
def test_download_verifies_caches_and_is_reused(monkeypatch, server, isolated):
    use_url(monkeypatch, "names", f"{server.url}/ok/names.txt")
    got = data.path("names")
    assert got == isolated / "names.txt"
    assert got.read_bytes() == (MIRROR / "names.txt").read_bytes()
    assert data.load_text("names").count("\n") == 32_032
    assert server.requests == ["/ok/names.txt"]  # the second call used the cache
    assert leftovers(isolated) == [got]


@needs_mirror
def test_a_dropped_connection_leaves_nothing_behind(monkeypatch, server, isolated):
    use_url(monkeypatch, "names", f"{server.url}/drop/names.txt")
    with pytest.raises(data.DownloadError, match=r"(stopped after \d+ of 228145 bytes|could not download names)"):
        data.path("names")
    assert leftovers(isolated) == []


@needs_mirror
def test_wrong_bytes_are_rejected_and_not_cached(monkeypatch, server, isolated):
    use_url(monkeypatch, "names", f"{server.url}/wrong/names.txt")
    with pytest.raises(data.ChecksumError, match=r"expected sha256:0a30b555.*found sha256:.*Nothing was saved"):
        data.path("names")
    assert leftovers(isolated) == []


def test_a_dataset_name_that_is_not_a_string_is_explained():
    with pytest.raises(ValueError, match="a dataset name is a string, got 3; known datasets: .*tinyshakespeare"):
        data.load_text(3)


# --- a file that comes inside a zip archive (the SMS Spam Collection) ---------------------------------

def zip_server(tmp_path: Path, member: bytes) -> Server:
    """A server whose /ok/spam.zip is a zip holding ``member`` as SMSSpamCollection (and a readme), and whose
    /ok/plain.txt is not a zip at all."""
    import zipfile

    root = tmp_path / "served"
    root.mkdir()
    with zipfile.ZipFile(root / "spam.zip", "w") as zf:
        zf.writestr("readme", "the SMS Spam Collection")
        zf.writestr("SMSSpamCollection", member)
    (root / "plain.txt").write_bytes(member)
    return Server(root)


@needs_mirror
def test_a_zipped_file_is_extracted_verified_and_cached(monkeypatch, tmp_path, isolated):
    good = (MIRROR / "sms-spam/SMSSpamCollection").read_bytes()
    srv = zip_server(tmp_path, good)
    try:
        use_url(monkeypatch, "sms-spam", f"{srv.url}/ok/spam.zip")
        got = data.path("sms-spam")
        assert got == isolated / "sms-spam/SMSSpamCollection" and got.read_bytes() == good
        assert leftovers(isolated) == [got]  # the archive itself is not kept
    finally:
        srv.close()


@needs_mirror
def test_a_tampered_or_missing_member_is_rejected_and_nothing_is_saved(monkeypatch, tmp_path, isolated):
    good = (MIRROR / "sms-spam/SMSSpamCollection").read_bytes()
    srv = zip_server(tmp_path, good.replace(b"ham\t", b"spam\t", 1))
    try:
        use_url(monkeypatch, "sms-spam", f"{srv.url}/ok/spam.zip")
        with pytest.raises(data.ChecksumError, match="expected sha256:7d039a24.*Nothing was saved"):
            data.path("sms-spam")
        use_url(monkeypatch, "sms-spam", f"{srv.url}/ok/plain.txt")
        with pytest.raises(data.DownloadError, match="did not give a zip archive holding 'SMSSpamCollection'"):
            data.path("sms-spam")
        assert leftovers(isolated) == []
    finally:
        srv.close()
