"""``shapetune serve``: the exported model on Ray Serve, over real HTTP on localhost."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import configparser
import gzip
import io

import nibabel as nib
import numpy as np
import pytest
import requests

from shapetune.dashboard.screenshots import free_port
from shapetune.serving.export import export_model
from shapetune.serving.predict import predict

serve = pytest.importorskip("ray.serve")  # ray[serve], installed by `make test`


@pytest.fixture(scope="module")
def service(finished_sweep, tiny_prepared, ray_local, tmp_path_factory):
    from shapetune.serving.http import run_service

    export = export_model(finished_sweep, tmp_path_factory.mktemp("serve") / "model")
    port = free_port()
    run_service(export, port=port, data=tiny_prepared, max_upload_mb=2, blocking=False)
    yield f"http://127.0.0.1:{port}", export
    serve.shutdown()


@pytest.fixture(scope="module")
def pair(acdc_raw):
    """An ACDC patient's ED and ES label maps."""
    patient = sorted(p.parent for p in acdc_raw.rglob("Info.cfg"))[0]
    cfg = configparser.ConfigParser()
    cfg.read_string("[p]\n" + (patient / "Info.cfg").read_text())
    frame = {k: int(cfg["p"][k]) for k in ("ed", "es")}
    return {k: patient / f"{patient.name}_frame{v:02d}_gt.nii.gz" for k, v in frame.items()}


def _post(url, files=None, data=None, **params):
    return requests.post(f"{url}/predict", files=files, data=data, params=params, timeout=120)


def _files(pair):
    return {k: (p.name, p.read_bytes()) for k, p in pair.items()}


def test_health(service):
    url, export = service
    r = requests.get(f"{url}/healthz", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["grid"] == [16, 16, 16]


def test_a_nifti_pair_is_predicted_as_predict_does(service, pair, tmp_path):
    url, export = service
    r = _post(url, files=_files(pair), recon="true")
    assert r.status_code == 200, r.text
    got = r.json()
    want = predict(export, pair["ed"], tmp_path / "p", es=pair["es"]).iloc[0]
    assert got["p_hcm"] == pytest.approx(want.p_hcm, abs=1e-5) and got["predicted"] == want.predicted
    assert got["dice_ed"] == pytest.approx(want.dice_ed, abs=1e-5)
    top = got["latents"][-1]
    assert top == pytest.approx([want[f"z{len(got['latents']) - 1}_{k}"] for k in range(len(top))], abs=1e-5)
    src = nib.load(pair["ed"])
    rec = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(got["reconstruction"]["ED"])))
    assert rec.shape == src.shape and np.allclose(rec.affine, src.affine)  # the subject's own grid
    assert set(np.unique(np.asarray(rec.dataobj))) <= {0, 2}
    expected = nib.load(tmp_path / "p" / pair["ed"].name.split(".")[0] / "recon_ED.nii.gz")
    assert np.array_equal(np.asarray(rec.dataobj), np.asarray(expected.dataobj))


def test_prepared_subjects_by_index_and_concurrent_requests_batch(service, tiny_prepared, tmp_path):
    url, export = service
    want = predict(export, tiny_prepared, tmp_path / "p").set_index("subject")
    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda k: _post(url, data={"index": str(k)}), range(8)))
    for r in answers:
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["p_hcm"] == pytest.approx(want.loc[got["subject"]].p_hcm, abs=1e-5)
        assert got["dice_es"] == pytest.approx(want.loc[got["subject"]].dice_es, abs=1e-5)
    assert len({r.json()["subject"] for r in answers}) == 8


def _empty_myocardium(pair) -> bytes:
    img = nib.load(pair["ed"])
    labels = np.asarray(img.dataobj).copy()
    labels[labels == 2] = 0
    buf = io.BytesIO()
    out = nib.Nifti1Image(labels, img.affine)
    buf.write(gzip.compress(out.to_bytes()))
    return buf.getvalue()


@pytest.mark.parametrize("case,status,reason", [
    ("junk", 422, "not a NIfTI file"),
    ("empty_myocardium", 422, "myocardium"),
    ("missing_es", 400, "send the files ed and es"),
    ("too_large", 413, "larger than 2 MB"),
    ("bad_index", 404, "the dataset has subjects 0.."),
    ("bad_labels", 422, "labels must be JSON"),
])
def test_bad_requests_get_4xx_with_the_reason_and_the_replica_survives(service, pair, case, status, reason):
    url, _ = service
    files, data = _files(pair), None
    if case == "junk":
        files["ed"] = ("ed.nii.gz", b"this is not an image" * 10)
    elif case == "empty_myocardium":
        files["ed"] = ("ed.nii.gz", _empty_myocardium(pair))
    elif case == "missing_es":
        del files["es"]
    elif case == "too_large":
        files["ed"] = ("ed.nii.gz", np.random.default_rng(0).bytes(3 * 2**20))
    elif case == "bad_index":
        files, data = None, {"index": "100000"}
    elif case == "bad_labels":
        data = {"labels": "{not json"}
    r = _post(url, files=files, data=data)
    assert r.status_code == status and reason in r.json()["detail"], (r.status_code, r.text)
    assert _post(url, files=_files(pair)).status_code == 200  # the same replica still answers
