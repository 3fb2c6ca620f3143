"""NIfTI label-map I/O with the checks every input gets (readable, 3D, finite, integer, known labels)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from shapetune.data.errors import DataError


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_label_map(path: str | Path, allowed: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D integer label map and its affine; raise DataError naming the file on any problem."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for truncated/corrupt files
        raise DataError(path, f"cannot read NIfTI ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(path, f"expected a 3D label map, got a {data.ndim}D image of shape {data.shape}")
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise DataError(path, f"label map contains {int(np.sum(~np.isfinite(data)))} NaN/inf voxels")
        if not np.all(data == np.round(data)):
            raise DataError(path, "label map has non-integer values (is this an image rather than a segmentation?)")
    data = data.astype(np.int16)
    found = set(np.unique(data).tolist())
    unexpected = sorted(found - allowed - {0})
    if unexpected:
        raise DataError(path, f"unexpected label value(s) {unexpected}; expected a subset of {sorted(allowed | {0})}")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise DataError(path, "invalid (singular or non-finite) affine in the NIfTI header")
    return data, affine


def save_nifti(path: str | Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write a NIfTI atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=suffix, prefix=".tmp-")
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
