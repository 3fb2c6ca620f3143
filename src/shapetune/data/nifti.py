"""NIfTI label-map I/O with the checks every input gets (readable, 3D, finite, integer, known labels)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from shapetune.data.errors import DataError
from shapetune.io import atomic_path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stored_voxel_sizes(img, path: str | Path, ndim: int) -> np.ndarray:
    """Voxel sizes as stored in the file's header (nibabel silently reads a 0 or negative pixdim as 1 mm / abs)."""
    try:
        with ImageOpener(str(path)) as f:
            raw = type(img.header).from_fileobj(f, check=False)
        return np.asarray(raw["pixdim"][1:ndim + 1], dtype=np.float64)
    except Exception:  # formats without a pixdim field (MGH, ...): what nibabel reports
        return np.asarray(img.header.get_zooms()[:ndim], dtype=np.float64)


def check_voxel_sizes(img, path: str | Path, ndim: int) -> None:
    """Refuse a header whose voxel sizes (pixdim) are zero, negative or not finite."""
    sizes = stored_voxel_sizes(img, path, ndim)
    if not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
        raise DataError(path, f"invalid voxel size(s) pixdim[1:{ndim + 1}] = {sizes.tolist()} in the NIfTI header "
                              "(must be finite and positive, in mm)")


def check_label_values(data: np.ndarray, path: str | Path, allowed: set[int] | None) -> set[int]:
    """Label values of ``data`` as stored (before any cast): finite integers from ``allowed`` (any when None) or 0."""
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)
            or data.dtype == np.bool_):
        raise DataError(path, f"label map has data type {data.dtype}; expected integers")
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        if not np.all(finite):
            raise DataError(path, f"label map contains {int(np.sum(~finite))} NaN/inf voxels")
        if not np.all(data == np.round(data)):
            raise DataError(path, "label map has non-integer values (is this an image rather than a segmentation?)")
    values = np.unique(data)
    if allowed is None and len(values) and (values[0] < 0 or values[-1] > np.iinfo(np.int32).max):
        raise DataError(path, f"label values must lie within 0..{np.iinfo(np.int32).max}, got "
                              f"{values[0]!r}..{values[-1]!r}")
    # Compare as Python ints: a cast first (e.g. int32 65538 -> int16 2) would turn stray values into labels.
    found = {int(v) for v in values.tolist()}
    unexpected = [] if allowed is None else sorted(found - allowed - {0})
    if unexpected and allowed is not None:
        shown = ", ".join(map(str, unexpected[:8])) + (", ..." if len(unexpected) > 8 else "")
        raise DataError(path, f"unexpected label value(s) [{shown}]; expected a subset of {sorted(allowed | {0})}")
    return found


def load_label_map(path: str | Path, allowed: set[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D integer label map and its affine; raise DataError naming the file on any problem.

    ``allowed``: the label values it may hold besides 0; None accepts any integer labels (a user's own cohort,
    whose structure label is chosen afterwards).
    """
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
    check_voxel_sizes(img, path, 3)
    check_label_values(data, path, allowed)
    # safe now: every value is 0 or a known label (any labels: int32 holds every integer a label map uses)
    data = data.astype(np.int16 if allowed is not None else np.int32)
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
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"  # nibabel picks gzip by the name
    with atomic_path(path, suffix) as tmp:
        nib.save(img, tmp)
