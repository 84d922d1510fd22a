"""Peak memory of the API process with 10 small models in its inference cache (target ≤ 1 GB).

Starts ``rarefit serve``, trains ten 1-epoch ``simple_cnn`` models through the
API on a PneumoniaMNIST subset, calls predict once on each (which loads it into
the cache), then reads the serving process's ``VmRSS`` and ``VmHWM`` from
``/proc``. Under ``serve`` the API runs in that process; the worker is a
separate child process and is not counted (its memory is in the scale section
of ``benchmarks.throughput``).

    python -m benchmarks.api_memory
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks import api_client, common, http_load, servers

TARGET_MB = 1024.0
SIZES = {"train": 256, "val": 64, "test": 64}


def proc_memory_mb(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` (peak) of ``pid`` in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024.0
    return values


def run(*, data: Path, models: int) -> dict[str, float]:
    arrays = common.subset(common.load_npz(data)[0], sizes=SIZES, seed=0)
    png = http_load.png_bytes(arrays["test"][0][0])
    with tempfile.TemporaryDirectory(prefix="rarefit-api-memory-") as tmp:
        env = servers.rarefit_env(data_dir=Path(tmp) / "data", api_key="bench-key", device="cpu")
        with (
            servers.rarefit_server("serve", env=env, log_path=Path(tmp) / "serve.log") as server,
            api_client.client(server.url, "bench-key") as http,
        ):
            dataset = api_client.upload_dataset(http, arrays, name="subset")
            before = proc_memory_mb(server.process.pid)
            model_ids = []
            for seed in range(models):  # one at a time: a tenant may have only a few active jobs
                job, _ = api_client.submit_job(
                    http,
                    {
                        "dataset_id": dataset["id"],
                        "model": {"arch": "simple_cnn"},
                        "epochs": 1,
                        "batch_size": 32,
                        "seed": seed,
                    },
                )
                model_ids.append(api_client.wait_job(http, job["id"], timeout=900)["model_id"])
            for model_id in model_ids:
                response = http.post(f"/v1/models/{model_id}/predict", files={"files": ("x.png", png, "image/png")})
                if response.status_code != 200:
                    raise RuntimeError(f"predict failed: HTTP {response.status_code} {response.text[:300]}")
            after = proc_memory_mb(server.process.pid)
    return {"models": models, "rss_before": before["VmRSS"], "rss_after": after["VmRSS"], "peak": after["VmHWM"]}


def main(argv: list[str] | None = None) -> int:
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__))
    args = parser.parse_args(argv)
    result = run(data=args.data, models=2 if args.quick else 10)
    table = common.markdown_table(
        ["cached models", "API RSS before models MB", "API RSS after MB", "API peak RSS MB", "target ≤ 1024 MB"],
        [
            [
                int(result["models"]),
                common.fmt(result["rss_before"], 0),
                common.fmt(result["rss_after"], 0),
                common.fmt(result["peak"], 0),
                "yes" if result["peak"] <= TARGET_MB else "no",
            ]
        ],
    )
    note = (
        "\n\nThe `rarefit serve` process (API, reaper and worker supervisor; the worker is a separate "
        "process), after one predict call on each 1-epoch `simple_cnn` model."
    )
    common.publish(
        f"api-memory-{common.machine_tag('cpu')}",
        table + note,
        args=args,
        module="benchmarks.api_memory",
        argv=sys.argv[1:] if argv is None else argv,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
