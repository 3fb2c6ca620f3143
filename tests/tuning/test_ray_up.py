"""Ray's cluster launcher for real: ``ray up -y ray_cluster.local.yaml`` (SSH to 127.0.0.1), ``ray job submit`` of a
tiny sweep whose data and results live in a ``file://`` bucket, the results checked, ``ray down -y``.

``.ci/local_cluster.sh`` prepares the machine (Debian's openssh-server, a throw-away key, ~/shapetune-venv).
``ray down`` runs ``ray stop`` on the node, which on this machine stops every Ray process of this user: the
session's local Ray is shut down first and started again afterwards.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from shapetune import storage

from ..conftest import write_space

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
DASHBOARD = "http://127.0.0.1:8275"


def _run(args: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    assert res.returncode == 0, f"{' '.join(args)} -> {res.returncode}\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res


@pytest.mark.slow
def test_ray_up_job_submit_ray_down(tiny_prepared, ray_local, tmp_path):
    import ray

    setup = subprocess.run(["bash", str(ROOT / ".ci" / "local_cluster.sh")], capture_output=True, text=True,
                           timeout=600)
    if setup.returncode != 0:
        pytest.fail(f".ci/local_cluster.sh could not prepare SSH to 127.0.0.1:\n{setup.stdout}\n{setup.stderr}")
    config = ROOT / "ray_cluster.local.yaml"
    if getpass.getuser() != "root":  # the file names the CI user; anyone else runs a copy with their own name
        config = tmp_path / "ray_cluster.local.yaml"
        config.write_text((ROOT / "ray_cluster.local.yaml").read_text().replace("ssh_user: root",
                                                                               f"ssh_user: {getpass.getuser()}"))
    bucket = f"file://{tmp_path / 'bucket'}"
    storage.upload(tiny_prepared, storage.join(bucket, "data", "tiny"))
    space = write_space(tmp_path / "space.yaml", epochs=2)
    # Ray 2.60 clusters require token authentication; on this machine the client finds the head's token in
    # ~/.ray/auth_token (on a remote cluster: copy it from the head, docs/cluster.md).
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "token"}
    ray.shutdown()  # `ray down` would stop it anyway
    try:
        _run([RAY, "up", "-y", "--no-config-cache", str(config)], timeout=600, env=env)
        job = _run([RAY, "job", "submit", "--address", DASHBOARD, "--", "shapetune", "tune", "--space", str(space),
                    "--data", storage.join(bucket, "data", "tiny"), "--name", "viajob", "--trials", "2",
                    "--concurrency", "2", "--storage-path", storage.join(bucket, "experiments")],
                   timeout=900, env=env)
        assert "succeeded" in job.stdout.lower(), job.stdout[-3000:]
        status = _run([RAY, "status", "--address", "127.0.0.1:6390"], timeout=120, env=env)
        assert "local.cluster.node" in status.stdout  # the launcher's head node, known to the autoscaler
    finally:
        down = subprocess.run([RAY, "down", "-y", str(config)], capture_output=True, text=True, timeout=300, env=env)
        ray.init(address="local", num_cpus=2, configure_logging=False, log_to_driver=False)  # the session's Ray again
    assert down.returncode == 0, down.stderr[-3000:]
    exp = storage.join(bucket, "experiments", "viajob")
    trials = pd.read_parquet(storage.local_copy(exp) / "trials.parquet")
    assert len(trials) == 2 and (trials.status == "completed").all()
    assert all(storage.exists(storage.join(exp, "trials", t, "checkpoint_best", "checkpoint.pt"))
               for t in trials.trial_id)
    # ray down left no cluster behind: nothing listens on its GCS or dashboard port. (Asking `ray status` instead
    # takes 43 s here to give up on a cluster that is gone.)
    for port in (6390, 8275):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
