"""``shapetune serve``: an exported model behind HTTP on Ray Serve.

    GET  /healthz   the model, its trial and grid: the replica is up and has verified its export
    POST /predict   multipart ``ed`` and ``es`` NIfTI label maps (``.nii`` or ``.nii.gz``; labels RV 1, myocardium 2,
                    cavity 3 unless ``labels`` says otherwise), or the form field ``index`` of a subject of the
                    prepared dataset given to ``--data``; ``?recon=true`` adds the reconstructions as base64
                    NIfTI in the subject's own grid. Answers JSON: p(HCM), class, Dice of the reconstruction,
                    latent means per level.

Each replica verifies the export once (checksums, config and weights) and batches concurrent requests into one
forward pass (``serve.batch``). A bad upload — not NIfTI, missing labels, an empty myocardium, more than
``max_upload_mb`` — is answered 4xx with the reason; the replica keeps serving. Serve has no authentication: the
proxy binds 127.0.0.1 unless told otherwise (reach it through SSH port forwarding, as the dashboard).
"""


import base64
import json
import time
import tempfile
from pathlib import Path
from typing import Any

import torch
try:
    from fastapi import FastAPI, HTTPException, Request
    from ray import serve
except ImportError as exc:  # the serve extra
    raise ImportError("shapetune serve needs Ray Serve: pip install 'shapetune[serve]'") from exc

from shapetune.data.errors import DataError
from shapetune.data.template import TemplateGrid
from shapetune.serving.export import ExportError, verify_export
from shapetune.training.ray_driver import ensure_ray
from shapetune.serving.predict import (Subject, _check_prepared_like_training, _pair, _prepared, infer,
                                       save_reconstruction)

api = FastAPI(title="ShapeTune prediction service")
MAX_BATCH = 16  # requests merged into one forward pass; 16 x 2 x 32^3 floats is 4 MB


def _nifti_suffix(data: bytes) -> str:
    """``.nii.gz`` for gzip data, ``.nii`` for a raw NIfTI-1/2 header; anything else is refused."""
    if data[:2] == b"\x1f\x8b":
        return ".nii.gz"
    if len(data) >= 348 and int.from_bytes(data[:4], "little") in (348, 540):
        return ".nii"
    raise HTTPException(422, "not a NIfTI file (neither gzip nor a NIfTI header)")


def latents_by_level(row: dict) -> list[list[float]]:
    """``z<level>_<k>`` columns as one list per level, bottom first."""
    levels: dict[int, list[tuple[int, float]]] = {}
    for key, v in row.items():
        if key.startswith("z") and "_" in key:
            lvl, k = key[1:].split("_")
            levels.setdefault(int(lvl), []).append((int(k), v))
    return [[v for _, v in sorted(levels[lvl])] for lvl in sorted(levels)]


@serve.deployment(max_ongoing_requests=2 * MAX_BATCH)  # room to fill a batch
@serve.ingress(api)
class Predictor:
    """One replica: the verified export, batching ``/predict`` requests.

    Args:
        export_dir: a folder written by ``shapetune export``.
        data: a prepared dataset whose subjects ``index`` refers to (optional).
        max_upload_mb: the largest upload accepted, both files together.
        threads: torch threads of this replica (its CPUs).
    """

    def __init__(self, export_dir: str, data: str | None = None, max_upload_mb: float = 20.0,
                 threads: int = 1) -> None:
        torch.set_num_threads(max(1, threads))
        self.model, self.cfg, self.template, self.metrics = verify_export(export_dir)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # a GPU replica gets one
        self.model.to(self.device)
        g = self.template["grid"]
        self.grid = TemplateGrid(tuple(g["shape"]), float(g["spacing"]))
        self.in_plane = (self.template.get("preprocessing") or {}).get("in_plane", "rv")
        self.data, self.max_bytes = data, int(max_upload_mb * 2**20)
        self.prepared = _prepared(Path(data), self.grid, None) if data else []

    @api.get("/healthz")
    def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.cfg.model.name, "trial": self.metrics.get("trial_id"),
                "grid": list(self.grid.shape), "spacing_mm": self.grid.spacing, "data": self.data}

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.01)
    async def _infer(self, subjects: list[Subject]) -> list[tuple[dict, Any]]:
        with torch.no_grad():
            rows, recon = infer(self.model, subjects, self.device)
        return list(zip(rows, recon, strict=True))

    async def _read(self, request: Request) -> tuple[dict[str, bytes], dict[str, str]]:
        if int(request.headers.get("content-length") or 0) > self.max_bytes:
            raise HTTPException(413, f"upload larger than {self.max_bytes // 2**20} MB")
        form = await request.form(max_part_size=self.max_bytes)
        files, fields = {}, {}
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                files[key] = await value.read(self.max_bytes + 1)
                if len(files[key]) > self.max_bytes:
                    raise HTTPException(413, f"{key}: larger than {self.max_bytes // 2**20} MB")
            else:
                fields[key] = str(value)
        return files, fields

    def _subject(self, files: dict[str, bytes], fields: dict[str, str], tmp: Path) -> Subject:
        if "index" in fields:
            if not self.prepared:
                raise HTTPException(400, "index needs a prepared dataset: start the service with --data DIR")
            try:
                k = int(fields["index"])
                if k < 0:
                    raise IndexError
                return self.prepared[k]
            except (ValueError, IndexError):
                raise HTTPException(404, f"index {fields['index']!r}: the dataset has subjects 0.."
                                         f"{len(self.prepared) - 1}") from None
        if set(files) != {"ed", "es"}:
            raise HTTPException(400, "send the files ed and es (NIfTI label maps), or the field index")
        labels = {"rv": 1, "myo": 2, "cav": 3}
        if "labels" in fields:
            try:
                labels = {k: int(v) for k, v in json.loads(fields["labels"]).items()}
                assert set(labels) == {"rv", "myo", "cav"}
            except (ValueError, AssertionError, AttributeError):
                raise HTTPException(422, 'labels must be JSON like {"rv": 1, "myo": 2, "cav": 3}') from None
        paths = {}
        for phase in ("ed", "es"):
            paths[phase] = tmp / f"{fields.get('subject', 'upload')}_{phase}{_nifti_suffix(files[phase])}"
            paths[phase].write_bytes(files[phase])
        return _pair(paths["ed"], paths["es"], self.grid, self.in_plane, labels)[0]

    @api.post("/predict")
    async def predict(self, request: Request, recon: bool = False) -> dict[str, Any]:
        files, fields = await self._read(request)
        with tempfile.TemporaryDirectory() as d:
            try:
                subject = self._subject(files, fields, Path(d))
            except DataError as exc:  # the preprocessing's own checks, with the file and the problem
                raise HTTPException(422, f"{Path(exc.path).name}: {exc.problem}") from None
            except HTTPException:
                raise
            except Exception as exc:  # nibabel's and numpy's errors on a malformed file
                raise HTTPException(422, f"unreadable upload: {type(exc).__name__}: {exc}") from None
            row, prob = await self._infer(subject)
            out: dict[str, Any] = {k: v for k, v in row.items() if k != "label" or v is not None}
            out["latents"] = latents_by_level(row)
            if recon and subject.aligned is not None:
                out["reconstruction"] = {}
                for c, phase in enumerate(("ED", "ES")):
                    f = Path(d) / f"recon_{phase}.nii.gz"
                    save_reconstruction(f, prob[c], subject, self.grid)
                    out["reconstruction"][phase] = base64.b64encode(f.read_bytes()).decode()
        return out


def run_service(export_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
                cpus_per_replica: float = 1.0, gpus_per_replica: float = 0.0, data: str | Path | None = None,
                max_upload_mb: float = 20.0, blocking: bool = True) -> None:
    """Verify the export here, then serve it on Ray Serve (``serve.start`` binds the proxy to ``host:port``).

    Args:
        export_dir: a folder written by ``shapetune export``.
        host, port: where the HTTP proxy listens (127.0.0.1: this machine only).
        replicas, cpus_per_replica, gpus_per_replica: the deployment's size.
        data: a prepared dataset for ``index`` requests.
        max_upload_mb: the largest upload a request may carry.
        blocking: serve until interrupted (Ctrl-C shuts the application down); else return once it is up.

    Raises:
        ExportError: the export is missing, modified or inconsistent (checked before anything starts).
        DataError: ``data`` is not a prepared dataset on the export's grid.
    """
    _, _, template, _ = verify_export(export_dir)
    if template.get("cohort") == "table":  # its inputs are its own phases, aligned as template.json says
        raise ExportError(f"{export_dir}: a model of a manifest-table cohort; the HTTP service takes the cardiac "
                          "models' ED/ES uploads: predict with `shapetune predict` instead")
    if data is not None:
        g = template["grid"]
        _check_prepared_like_training(Path(data), template)
        _prepared(Path(data), TemplateGrid(tuple(g["shape"]), float(g["spacing"])), None)
    ensure_ray()
    serve.start(http_options={"host": host, "port": port})
    app = Predictor.options(num_replicas=replicas, ray_actor_options={"num_cpus": cpus_per_replica,
                                                                      "num_gpus": gpus_per_replica}).bind(
        str(Path(export_dir).resolve()), str(Path(data).resolve()) if data else None, max_upload_mb,
        max(1, int(cpus_per_replica)))
    serve.run(app, name="shapetune", route_prefix="/")
    if not blocking:
        return
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete("shapetune")
