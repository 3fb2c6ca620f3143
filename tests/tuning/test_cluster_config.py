"""The cluster launcher files: both validate against the schema shipped with the installed Ray, and the AWS one
keeps Ray's unauthenticated ports off the internet."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
FILES = ["ray_cluster.yaml", "ray_cluster.local.yaml"]


def _validate(cfg: dict) -> dict:
    # prepare_config fills Ray's defaults (validate alone rejects a file that leaves them out)
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("name", FILES)
def test_cluster_files_validate_against_rays_schema(name):
    cfg = yaml.safe_load((ROOT / name).read_text())
    _validate(cfg)
    broken = {**cfg, "head_node_typo": "x"}
    with pytest.raises(Exception, match="head_node_typo"):  # the check does reject what Ray would reject
        _validate(broken)


def test_aws_cluster_pins_ray_and_opens_only_ssh():
    text = (ROOT / "ray_cluster.yaml").read_text()
    cfg = yaml.safe_load(text)
    assert f"ray[default,tune,train]=={ray.__version__}" in " ".join(cfg["setup_commands"])
    assert "constraints.txt" in " ".join(cfg["setup_commands"])
    assert "0.0.0.0" not in text.replace("0.0.0.0/0", "")  # nothing binds to every interface
    assert "--dashboard-host=127.0.0.1" in " ".join(cfg["head_start_ray_commands"])
    ingress = cfg["provider"]["security_group"]["IpPermissions"]
    assert [(p["FromPort"], p["ToPort"]) for p in ingress] == [(22, 22)]
    assert all(r["CidrIp"] != "0.0.0.0/0" for p in ingress for r in p["IpRanges"])
    gpu = cfg["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["resources"]["GPU"] == 4 and gpu["max_workers"] >= 1
