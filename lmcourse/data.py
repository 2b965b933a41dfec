"""The course corpora: a registry of public files, each checked against its checksum before use.

``path(name, split)`` finds a file in this order and returns its local path:

1. the cache, ``$LMCOURSE_CACHE_DIR/data`` (default ``~/.cache/lmcourse/data``);
2. a local mirror folder named by ``$LMCOURSE_DATA_MIRROR``, laid out like the cache
   (``tinyshakespeare.txt``, ``wikitext-2/valid.txt``, ``gpt2/vocab.json``, ...);
3. the file's public URL, downloaded into the cache with a progress bar.

Every file is checked before use. A cached copy that fails the check is deleted; a bad download
never reaches the cache, because downloads go to a temporary file that is renamed into place only
after it passes (an interrupted download leaves nothing behind).
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

__all__ = [
    "REGISTRY", "DataFile", "DataError", "ChecksumError", "DownloadError",
    "names", "splits", "path", "load_text", "cache_dir", "file_digest",
]

MIRROR_VAR = "LMCOURSE_DATA_MIRROR"
CACHE_VAR = "LMCOURSE_CACHE_DIR"
TIMEOUT_VAR = "LMCOURSE_DOWNLOAD_TIMEOUT"


class DataError(RuntimeError):
    """A data file could not be provided."""


class ChecksumError(DataError):
    """A file's bytes are not the registered ones."""


class DownloadError(DataError):
    """A file could not be downloaded."""


@dataclass(frozen=True)
class DataFile:
    """One registered file: where it lives (relative to the cache/mirror), its URL and its checksum.

    ``digest`` is ``"sha256:<hex>"``, or ``"gitblob:<hex>"`` (the id ``git hash-object`` prints) for
    a file whose SHA-256 has not been recorded from a trusted copy. With ``member``, the URL is a zip
    archive and the file is that member of it: the digest is the member's (the archive's is not known).
    """

    relpath: str
    url: str
    digest: str
    member: str | None = None


_GH = "https://raw.githubusercontent.com"
_WT2 = f"{_GH}/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8/word_language_model/data/wikitext-2"
_WT2_RAW = f"{_GH}/pytorch/examples/cf74c81ec00256a9511c054aaf0b3f62cd3aa62d/word_language_model/data/wikitext-2"
_CS336 = f"{_GH}/stanford-cs336/assignment1-basics/25a8a49f6460c83a30416d42348f2ef11d1dd185/tests/fixtures"

#: name -> split (``None`` for single-file corpora) -> file
REGISTRY: dict[str, dict[str | None, DataFile]] = {
    "tinyshakespeare": {None: DataFile(
        "tinyshakespeare.txt",
        f"{_GH}/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt",
        "sha256:86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")},
    "names": {None: DataFile(
        "names.txt",
        f"{_GH}/karpathy/makemore/988aa59e4d8fefa526d06f3b453ad116258398d4/names.txt",
        "sha256:0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d")},
    "wikitext2": {
        "train": DataFile("wikitext-2/train.txt", f"{_WT2}/train.txt",
                          "gitblob:2d84b35af79e411d73ea7cae83c73964c6ac83b4"),
        "valid": DataFile("wikitext-2/valid.txt", f"{_WT2}/valid.txt",
                          "sha256:f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"),
        "test": DataFile("wikitext-2/test.txt", f"{_WT2}/test.txt",
                         "sha256:d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"),
    },
    "wikitext2-raw": {
        "train": DataFile("wikitext-2-raw/train.txt", f"{_WT2_RAW}/train.txt",
                          "gitblob:5109d6a316409e0ce4a5c1aa2a34226c957a5655"),
        "valid": DataFile("wikitext-2-raw/valid.txt", f"{_WT2_RAW}/valid.txt",
                          "sha256:4cd0f6876d07a413aa911261ff6d363c72d757d47f0fdd6015702014c89cb9c7"),
        "test": DataFile("wikitext-2-raw/test.txt", f"{_WT2_RAW}/test.txt",
                         "sha256:173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08"),
    },
    "gpt2-vocab": {None: DataFile(
        "gpt2/vocab.json", f"{_CS336}/gpt2_vocab.json",
        "sha256:196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783")},
    "gpt2-merges": {None: DataFile(
        "gpt2/merges.txt", f"{_CS336}/gpt2_merges.txt",
        "sha256:ac33235097fe06d4a8fff0feac994644809e6eb6ab70669e1e9fd40ae032428e")},
    "sms-spam": {None: DataFile(
        "sms-spam/SMSSpamCollection", "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
        "sha256:7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d", member="SMSSpamCollection")},
}


def names() -> list[str]:
    """The registered corpus names."""
    return sorted(REGISTRY)


def splits(name: str) -> list[str]:
    """The splits of a corpus (empty for a corpus that is one file)."""
    return [s for s in _entries(name) if s is not None]


def cache_dir() -> Path:
    """The course's cache folder: ``$LMCOURSE_CACHE_DIR``, else ``~/.cache/lmcourse``."""
    if os.environ.get(CACHE_VAR):
        return Path(os.environ[CACHE_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lmcourse"


def load_text(name: str, split: str | None = None) -> str:
    """The text of a corpus (UTF-8, line endings kept exactly as in the file)."""
    return path(name, split).read_bytes().decode("utf-8")


def path(name: str, split: str | None = None) -> Path:
    """A local, verified copy of a registered file: from the cache, the mirror or its URL."""
    entry = _entry(name, split)
    cached = cache_dir() / "data" / entry.relpath
    if cached.exists():
        _verify(cached, entry, delete_if_bad=True)
        return cached
    mirror = os.environ.get(MIRROR_VAR)
    if mirror:
        mirrored = Path(mirror).expanduser() / entry.relpath
        if mirrored.exists():
            _verify(mirrored, entry, delete_if_bad=False)
            return mirrored
    _download(entry, cached, label=name if split is None else f"{name}/{split}")
    return cached


def file_digest(file: Path, kind: str = "sha256") -> str:
    """``"<kind>:<hex>"`` of a file: ``sha256``, or ``gitblob`` (SHA-1 of ``b"blob <size>\\0"`` + bytes)."""
    if kind == "sha256":
        h = hashlib.sha256()
    elif kind == "gitblob":
        h = hashlib.sha1(f"blob {file.stat().st_size}\0".encode())
    else:
        raise ValueError(f"unknown digest kind {kind!r}: use 'sha256' or 'gitblob'")
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return f"{kind}:{h.hexdigest()}"


def _entries(name: str) -> dict[str | None, DataFile]:
    if not isinstance(name, str):
        raise ValueError(f"a dataset name is a string, got {name!r}; known datasets: {', '.join(names())}")
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(names())}")
    return REGISTRY[name]


def _entry(name: str, split: str | None) -> DataFile:
    entries = _entries(name)
    if split in entries:
        return entries[split]
    known = splits(name)
    if not known:
        raise ValueError(f"dataset {name!r} is a single file and has no splits; call it without split=")
    raise ValueError(f"dataset {name!r} has splits {', '.join(known)}; got split={split!r}")


_verified: set[tuple[str, int, int]] = set()  # files already checked in this process: (path, size, mtime)


def _mismatch(file: Path, entry: DataFile) -> str | None:
    """None if ``file`` has the registered digest, else the digest it has."""
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return None
    actual = file_digest(file, entry.digest.split(":", 1)[0])
    if actual != entry.digest:
        return actual
    _verified.add(key)
    return None


def _verify(file: Path, entry: DataFile, delete_if_bad: bool) -> None:
    actual = _mismatch(file, entry)
    if actual is None:
        return
    if delete_if_bad:
        file.unlink()
        what = "The bad copy was deleted; run again to fetch a fresh one."
    else:
        what = f"Replace it with a good copy of {entry.url}"
    raise ChecksumError(f"{file} is corrupt: expected {entry.digest}, found {actual}. {what}")


def _extract_member(archive: Path, entry: DataFile) -> None:
    """Replace the zip ``archive`` by its member ``entry.member``; a DownloadError if it is not such a zip."""
    try:
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(entry.member)
    except (zipfile.BadZipFile, KeyError) as err:
        raise DownloadError(f"{entry.url} did not give a zip archive holding {entry.member!r} ({err}); "
                            "nothing was saved, try again") from err
    archive.write_bytes(data)


def _download(entry: DataFile, dest: Path, label: str) -> None:
    timeout = float(os.environ.get(TIMEOUT_VAR, "15"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(entry.url, headers={"User-Agent": "lmcourse"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {label}") as bar:
                    while chunk := response.read(1 << 16):
                        out.write(chunk)
                        bar.update(len(chunk))
        received = tmp.stat().st_size
        if total is not None and received != total:
            raise DownloadError(f"the download of {entry.url} stopped after {received} of {total} bytes; "
                                "nothing was saved, try again")
        if entry.member is not None:
            _extract_member(tmp, entry)  # tmp now holds the member's bytes, still to be checked
        actual = _mismatch(tmp, entry)
        if actual is not None:
            raise ChecksumError(f"the bytes downloaded from {entry.url} are not {label}'s: expected "
                                f"{entry.digest}, found {actual}. Nothing was saved.")
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        mirror = os.environ.get(MIRROR_VAR)
        mirror_note = f" (it is {mirror!r} now and has no {entry.relpath})" if mirror else ""
        raise DownloadError(
            f"could not download {label} from {entry.url}: {err}. If this machine is offline, get that "
            f"file elsewhere and put it at {dest}, or put it at <folder>/{entry.relpath} and set "
            f"{MIRROR_VAR}=<folder>{mirror_note}.") from err
    finally:
        tmp.unlink(missing_ok=True)
