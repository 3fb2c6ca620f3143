"""Local paths and storage URIs (``s3://``, ``gs://``, ``abfs://``, ``file://``) behind one small interface.

Everything goes through pyarrow's filesystems (the same layer Ray Tune and Ray Train use for their
``storage_path``), so a sweep on a cluster reads its data from and writes its results to a bucket, and no
node assumes another node's disk. Work that needs files on disk (loading a dataset, reading an experiment
for export, evaluation or the dashboard) runs on a *mirror*: a local copy under the cache folder
(``$SHAPETUNE_CACHE``, default ``~/.cache/shapetune``) that is brought up to date from the URI.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile
import uuid
from pathlib import Path

import pyarrow.fs as pafs


class StorageError(OSError):
    """A storage location that cannot be reached or does not hold what was asked for."""


def is_uri(location: str | os.PathLike) -> bool:
    """True for ``scheme://...`` (including ``file://``), False for a plain path."""
    return "://" in str(location)


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base/part/...`` for a URI or a path (a URI's query string, e.g. an S3 endpoint, stays at the end)."""
    base = str(base)
    if not is_uri(base):
        return str(Path(base, *parts))
    head, sep, query = base.partition("?")
    return posixpath.join(head, *parts) + (sep + query if sep else "")


def name_of(location: str | os.PathLike) -> str:
    """The last component of a path or URI."""
    return posixpath.basename(str(location).partition("?")[0].rstrip("/"))


def parent_of(location: str | os.PathLike) -> str:
    """The location one level up (a URI stays a URI)."""
    s = str(location)
    if not is_uri(s):
        return str(Path(s).parent)
    head, sep, query = s.partition("?")
    return posixpath.dirname(head.rstrip("/")) + (sep + query if sep else "")


def resolve(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path within it."""
    s = str(location)
    if not is_uri(s):
        return pafs.LocalFileSystem(), str(Path(s).expanduser().resolve())
    try:
        return pafs.FileSystem.from_uri(s)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise StorageError(f"{s}: cannot open this storage location ({exc})") from exc


def normalise(location: str | os.PathLike) -> str:
    """An absolute path for a local location, the URI unchanged otherwise (what settings should record)."""
    s = str(location)
    return s if is_uri(s) else str(Path(s).expanduser().resolve())


def exists(location: str | os.PathLike) -> bool:
    fs, path = resolve(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_text(location: str | os.PathLike) -> str:
    fs, path = resolve(location)
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except FileNotFoundError as exc:
        raise StorageError(f"{location}: no such file") from exc


def write_text(location: str | os.PathLike, text: str) -> None:
    """Write a small file (a temporary name, then a move where the filesystem supports it)."""
    fs, path = resolve(location)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"  # unique: two writers (threads too) never share it
    with fs.open_output_stream(tmp) as f:
        f.write(text.encode())
    fs.move(tmp, path)


def upload(local: str | os.PathLike, location: str | os.PathLike) -> None:
    """Copy a local file or folder to ``location`` (a URI or another path), replacing what is there."""
    local = Path(local)
    fs, path = resolve(location)
    fs.create_dir(path if local.is_dir() else posixpath.dirname(path), recursive=True)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def download(location: str | os.PathLike, local: str | os.PathLike) -> Path:
    """Copy a file or folder at ``location`` to the local path ``local``; folders are merged file by file,
    skipping files whose size and modification time already match (a cheap incremental sync)."""
    fs, path = resolve(location)
    info = fs.get_file_info(path)
    local = Path(local)
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{location}: not found")
    if info.type == pafs.FileType.File:
        _fetch(fs, info, local)
        return local
    for item in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if item.type == pafs.FileType.File:
            _fetch(fs, item, local / posixpath.relpath(item.path, path))
    local.mkdir(parents=True, exist_ok=True)
    return local


def _fetch(fs: pafs.FileSystem, item: pafs.FileInfo, dest: Path) -> None:
    mtime = item.mtime_ns
    if dest.exists() and dest.stat().st_size == item.size and (mtime is None or dest.stat().st_mtime_ns == mtime):
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".dl-")
    os.close(fd)
    pafs.copy_files(item.path, tmp, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    if mtime is not None:
        os.utime(tmp, ns=(mtime, mtime))
    os.replace(tmp, dest)


def cache_root() -> Path:
    return Path(os.environ.get("SHAPETUNE_CACHE", Path.home() / ".cache" / "shapetune")).expanduser()


def mirror_path(location: str) -> Path:
    """Where the local mirror of ``location`` lives: stable per URI, and named like it (an experiment's mirror
    is a folder called after the experiment, as the code that reads it expects)."""
    digest = hashlib.sha256(str(location).encode()).hexdigest()[:12]
    return cache_root() / "mirror" / digest / (name_of(location) or "root")


def local_copy(location: str | os.PathLike, refresh: bool = True) -> Path:
    """A local path holding ``location``'s files: the path itself when local, else its (refreshed) mirror."""
    if not is_uri(location):
        return Path(location).expanduser().resolve()
    dest = mirror_path(str(location))
    if refresh or not dest.exists():
        download(location, dest)
    return dest
