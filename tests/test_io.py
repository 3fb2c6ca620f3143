"""Atomic writes: every writer gets its own temporary name, a reader sees the old file or the new one."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from shapetune.data.nifti import save_nifti
from shapetune.io import atomic_path, atomic_write_bytes


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_concurrent_writers_of_one_file_never_share_a_temporary(tmp_path):
    target = tmp_path / "manifest.json"
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(20):
                atomic_write_bytes(target, data)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert target.read_bytes() in payloads  # one writer's whole file, never a mix
    assert not _leftovers(tmp_path)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.parquet"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target, ".parquet") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".parquet") and tmp != target
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and not _leftovers(tmp_path)


def test_writers_that_dispatch_on_the_extension_keep_it(tmp_path):
    # nibabel gzips by the file name: the temporary keeps ".nii.gz", so the result is a real gzip NIfTI.
    save_nifti(tmp_path / "seg.nii.gz", np.zeros((4, 4, 4), np.uint8), np.eye(4))
    assert (tmp_path / "seg.nii.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert not _leftovers(tmp_path)
