"""Up-front checks of a template grid: does its field of view hold the LV, do its arrays fit in memory and on disk.

Each check raises a DataError naming the options (or the output folder) before any work starts, with the
numbers: what the grid covers or needs, and what would fit.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from shapetune.data.errors import DataError
from shapetune.data.template import TemplateGrid

# Half-extent (mm) of the LV (myocardium + cavity, ED and ES) around its ED centroid, per template axis
# (apex->base, inferior->anterior, septum->lateral). Measured from the generator's analytic epicardium
# (LVShape.surfaces, base plane cut) over 300 subjects (sample_subject seeds 20000-20299, half HCM): the
# 99th percentiles are 58.7, 46.3 and 48.1 mm (maxima 62.4, 51.1, 49.1; the apex is the far end of axis 0);
# add 2.4 mm of boundary roughness (4 sd at the default 0.6 mm). A grid smaller than this cuts off the apex
# or the wall of most subjects; the rare larger LV is caught per subject by the border check (fov_clipped).
LV_HALF_EXTENT_MM = (61.0, 49.0, 51.0)
MAX_SPACING_MM = 10.0  # TemplateGrid's own bound

# Peak memory of one worker per template voxel (bytes): growth of the peak RSS while one subject is done,
# measured at 64^3, 96^3 and 128^3 (tracemalloc agrees within 20 %): preparing one ACDC subject 109-132
# B/voxel (coordinate grids, scanner indices, interpolated distance maps), rendering one Imperial-style
# subject 280-299 (coordinates, four roughness fields, the LV model's temporaries), one fetal skull 107-116.
# The constants add about 15 % headroom.
BYTES_PER_VOXEL = {"prepare": 150, "synth": 350, "fetal": 135}


def check_field_of_view(grid: TemplateGrid, options: str) -> None:
    """Refuse a grid whose field of view cannot hold the LV, with the smallest one that does and what fits."""
    fov = [n * grid.spacing for n in grid.shape]
    need = [2 * h for h in LV_HALF_EXTENT_MM]
    short = [i for i in range(3) if fov[i] < need[i]]
    if not short:
        return
    n = max(grid.shape)
    spacing = math.ceil(max(need[i] / grid.shape[i] for i in range(3)) * 10) / 10
    size = math.ceil(max(need) / grid.spacing)
    fits = f"--spacing {spacing:g} with --grid {n}" if spacing <= MAX_SPACING_MM else \
        f"--grid {math.ceil(max(need) / MAX_SPACING_MM)} or more"
    covers = " x ".join(f"{f:g}" for f in fov)
    raise DataError(options, f"the template grid covers {covers} mm, too small for the left ventricle, which needs "
                             f"at least {need[0]:g} mm along the long axis and {max(need[1:]):g} mm across "
                             f"(±{LV_HALF_EXTENT_MM[0]:g} mm around its centre); use {fits}, or --grid {size} at "
                             f"{grid.spacing:g} mm")


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable, capped by a cgroup v2 limit when there is one)."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    if avail is None:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:  # containers: the cgroup's limit minus what it already uses
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return avail


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_memory(shape: tuple[int, ...], workers: int, what: str, options: str, available: int | None = None) -> None:
    """Refuse a grid whose per-subject arrays, times ``workers`` processes, exceed the memory available."""
    per_worker = BYTES_PER_VOXEL[what] * math.prod(shape)
    avail = available_memory() if available is None else available
    if per_worker * workers <= avail:
        return
    fit = avail // per_worker
    hint = f"use --workers {fit} or a smaller --grid" if fit >= 1 else "use a smaller --grid"
    raise DataError(options, f"a {'x'.join(map(str, shape))} grid needs about {_gib(per_worker)} of memory per "
                             f"worker ({_gib(per_worker * workers)} for {workers} worker(s)), but only "
                             f"{_gib(avail)} is available; {hint}")


def check_disk(out: Path, nbytes: int, what: str) -> None:
    """Refuse to start writing ``nbytes`` of arrays where the file system has less free space."""
    p = out
    while not p.exists() and p != p.parent:
        p = p.parent
    free = shutil.disk_usage(p).free
    if nbytes > free:
        raise DataError(out, f"{what} would take {_gib(nbytes)} but the file system has {_gib(free)} free; "
                             "use a smaller --grid or another --out")
