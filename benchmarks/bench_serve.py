"""The prediction service under load, on loopback: throughput and latency percentiles against calling the model
in-process, with 1 and 2 replicas.

    python benchmarks/bench_serve.py --export EXPORT_DIR --data PREPARED [--requests 500 --clients 1,8,32]

Each request is ``POST /predict`` with ``index=K`` (a prepared subject; the upload and preprocessing of raw NIfTI
are left out so the figure is the service's own cost). "in-process" runs the same subjects through
``serving.predict.infer`` one at a time in this process (what a request would cost with no HTTP and no
batching). Prints a table and writes ``benchmarks/results/bench_serve.{md,json}``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import threading
import time
from pathlib import Path

import numpy as np
import requests

from _results import publish

from shapetune.dashboard.screenshots import free_port
from shapetune.data.template import TemplateGrid
from shapetune.serving.export import verify_export
from shapetune.serving.predict import _prepared, infer


def load(url: str, n: int, clients: int, n_subjects: int) -> dict:
    """``n`` requests from ``clients`` threads; latency per request and the wall time of the whole run."""
    local = threading.local()  # one keep-alive session per client thread

    def one(k: int) -> float:
        if not hasattr(local, "s"):
            local.s = requests.Session()
        s = local.s
        t = time.perf_counter()
        r = s.post(f"{url}/predict", data={"index": str(k % n_subjects)}, timeout=300)
        r.raise_for_status()
        return time.perf_counter() - t

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        lat = np.array(list(pool.map(one, range(n))))
    wall = time.perf_counter() - t0
    return {"requests": n, "clients": clients, "throughput_rps": n / wall, "p50_ms": 1e3 * np.percentile(lat, 50),
            "p95_ms": 1e3 * np.percentile(lat, 95), "p99_ms": 1e3 * np.percentile(lat, 99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--export", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--replicas", default="1,2")
    args = ap.parse_args()
    import ray
    from ray import serve

    from shapetune.serving.http import run_service

    model, _, template, _ = verify_export(args.export)
    g = template["grid"]
    subjects = _prepared(Path(args.data), TemplateGrid(tuple(g["shape"]), float(g["spacing"])), None)
    rows = []
    lat = []
    for k in range(min(args.requests, 200)):
        t = time.perf_counter()
        infer(model, [subjects[k % len(subjects)]])
        lat.append(time.perf_counter() - t)
    lat = np.array(lat)
    rows.append({"setting": "in-process (no HTTP, no batching)", "requests": len(lat), "clients": 1,
                 "throughput_rps": len(lat) / lat.sum(), "p50_ms": 1e3 * np.percentile(lat, 50),
                 "p95_ms": 1e3 * np.percentile(lat, 95), "p99_ms": 1e3 * np.percentile(lat, 99)})
    print(rows[-1], flush=True)
    ray.init(num_cpus=os.cpu_count(), configure_logging=False, log_to_driver=False)
    for replicas in map(int, args.replicas.split(",")):
        port = free_port()
        run_service(args.export, port=port, replicas=replicas, data=args.data, blocking=False)
        url = f"http://127.0.0.1:{port}"
        load(url, 20, 4, len(subjects))  # warm-up
        for clients in map(int, args.clients.split(",")):
            rows.append({"setting": f"Serve, {replicas} replica(s)", **load(url, args.requests, clients,
                                                                              len(subjects))})
            print(rows[-1], flush=True)
        serve.shutdown()
    cols = ["setting", "clients", "requests", "throughput_rps", "p50_ms", "p95_ms", "p99_ms"]
    cells = [[str(r[c]) if not isinstance(r[c], float) else f"{r[c]:.1f}" for c in cols] for r in rows]
    publish("bench_serve", "bench_serve (POST /predict index=K on loopback)",
            f"{os.cpu_count()} CPUs, export {args.export}, {len(subjects)} prepared subjects at "
            f"{g['shape'][0]}^3, {args.requests} requests per row, 1 CPU (1 torch thread) per replica",
            cols, cells, rows)


if __name__ == "__main__":
    main()
