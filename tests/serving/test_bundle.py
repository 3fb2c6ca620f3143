"""``shapetune export --format monai-bundle``: MONAI's own tools accept the bundle, and the network it parses gives
what ``shapetune predict`` gives on the same subjects."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from shapetune.cli import app
from shapetune.data.dataset import PreparedDataset
from shapetune.data.template import MYOCARDIUM
from shapetune.io import MARKER
from shapetune.serving.bundle import REQUIRED_METADATA
from shapetune.serving.export import export_model
from shapetune.serving.predict import predict

bundle_api = pytest.importorskip("monai.bundle")  # the monai extra, installed by `make test`


@pytest.fixture(scope="module")
def bundle(finished_sweep, tmp_path_factory):
    return export_model(finished_sweep, tmp_path_factory.mktemp("b") / "bundle", fmt="monai-bundle")


def test_the_bundle_has_monais_layout_and_metadata(bundle):
    assert {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} == {
        "configs/metadata.json", "configs/inference.json", "configs/template.json", "models/model.pt",
        "docs/README.md", MARKER}
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    assert not missing, missing
    assert meta["version"] in meta["changelog"] and meta["required_packages_version"]["shapetune"]
    g = json.loads((bundle / "configs" / "template.json").read_text())["grid"]["shape"]
    image, pred = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == pred["num_channels"] == 2 and image["spatial_shape"] == pred["spatial_shape"] == g
    for entry in (image, pred, meta["network_data_format"]["outputs"]["hcm_probability"]):
        assert {"type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data",
                "channel_def"} <= set(entry)
    torch.load(bundle / "models" / "model.pt", weights_only=True)  # tensors only


def test_monai_verifies_the_networks_input_and_output(bundle):
    bundle_api.verify_net_in_out(net_id="network_def", meta_file=str(bundle / "configs" / "metadata.json"),
                                 config_file=str(bundle / "configs" / "inference.json"), device="cpu")


def test_the_parsed_network_matches_shapetune_predict(bundle, finished_sweep, tiny_prepared, tmp_path):
    parser = bundle_api.ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    net = parser.get_parsed_content("network")
    parser.get_parsed_content("load")
    net.eval()

    expected = predict(export_model(finished_sweep, tmp_path / "export"), tiny_prepared, tmp_path / "pred",
                       split="val")
    ds = PreparedDataset(tiny_prepared)
    rows = ds.split("val").sort_values("index")
    x = torch.from_numpy(np.asarray(ds.masks[rows["index"].to_numpy()]) == MYOCARDIUM).float()
    with torch.no_grad():
        logits, p = net(x), net.hcm_probability(x)[:, 0]
    assert list(rows.subject) == list(expected.subject)
    np.testing.assert_allclose(p.numpy(), expected.p_hcm.to_numpy(), atol=1e-5)
    hard = (logits > 0).float()
    dice = (2 * (hard * x).sum((2, 3, 4)) / (hard.sum((2, 3, 4)) + x.sum((2, 3, 4)))).numpy()
    np.testing.assert_allclose(dice[:, 0], expected.dice_ed.to_numpy(), atol=1e-4)
    np.testing.assert_allclose(dice[:, 1], expected.dice_es.to_numpy(), atol=1e-4)


def test_cli_writes_a_bundle_and_refuses_to_overwrite_it(finished_sweep, tmp_path):
    out = tmp_path / "b"
    args = ["export", str(finished_sweep), "--out", str(out), "--format", "monai-bundle"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "wrote MONAI bundle" in r.output and (out / "models" / "model.pt").exists()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output
    assert CliRunner().invoke(app, [*args, "--force"]).exit_code == 0
