"""User verbs of the ``rarefit`` command, on top of ``rarefit.client``: datasets, jobs, experiments, models, predict.

They talk to a running server over HTTP (``--url``/``RAREFIT_URL``,
``--api-key``/``RAREFIT_API_KEY``). Results go to stdout (``--json`` for the
API's JSON, ``-q`` for the id alone); progress and errors go to stderr.
Exit codes: 0 success; 1 the job or experiment waited for failed or was
cancelled; 2 bad usage; 3 the API answered an error; 4 the server could not be
reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_API_ERROR, EXIT_UNREACHABLE = 0, 1, 2, 3, 4


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``datasets``, ``jobs``, ``experiments``, ``models`` and ``predict`` to the ``rarefit`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None, help="server URL (default: RAREFIT_URL or http://127.0.0.1:8000)")
    common.add_argument("--api-key", default=None, help="API key (default: RAREFIT_API_KEY)")
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    common.add_argument("-q", "--quiet", action="store_true", help="print only the id")

    def verb(group, name: str, handler, help_: str) -> argparse.ArgumentParser:
        parser = group.add_parser(name, parents=[common], help=help_)
        parser.set_defaults(client_handler=handler)
        return parser

    datasets = commands.add_parser("datasets", help="upload and list datasets").add_subparsers(required=True)
    upload = verb(datasets, "upload", _upload, "upload a .npz, .zip or .tar.gz dataset")
    upload.add_argument("file", type=Path)
    upload.add_argument("--name", default=None)
    verb(datasets, "list", lambda c, a: c.list_datasets(), "list datasets")
    verb(datasets, "get", lambda c, a: c.get_dataset(a.id), "one dataset").add_argument("id")

    jobs = commands.add_parser("jobs", help="submit, follow and inspect training jobs").add_subparsers(required=True)
    submit = verb(jobs, "submit", _submit, "submit a job spec (JSON file, or - for stdin)")
    submit.add_argument("spec", help="path of the job spec JSON")
    submit.add_argument("--dataset", default=None, help="set the spec's dataset_id")
    submit.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    follow = verb(jobs, "wait", lambda c, a: _follow(c, a.id), "follow a job until it ends")
    follow.add_argument("id")
    follow.set_defaults(wait=True)
    verb(jobs, "get", lambda c, a: c.get_job(a.id), "one job").add_argument("id")
    listing = verb(jobs, "list", lambda c, a: c.list_jobs(status=a.status), "list jobs, newest first")
    listing.add_argument("--status", default=None, choices=["queued", "running", "succeeded", "failed", "cancelled"])
    verb(jobs, "cancel", lambda c, a: c.cancel_job(a.id), "cancel a job").add_argument("id")
    metrics = verb(jobs, "metrics", lambda c, a: c.metrics(a.id, since_epoch=a.since_epoch), "a job's metrics")
    metrics.add_argument("id")
    metrics.add_argument("--since-epoch", type=int, default=0)
    verb(jobs, "artifacts", lambda c, a: c.list_artifacts(a.id), "a job's artefacts").add_argument("id")
    download = verb(jobs, "download", _download, "save one artefact (e.g. model.pt2)")
    download.add_argument("id")
    download.add_argument("name")
    download.add_argument("-o", "--output", type=Path, default=Path("."), help="file or folder (default: here)")

    experiments = commands.add_parser("experiments", help="search over job specs, each trial run once per seed")
    verbs = experiments.add_subparsers(required=True)
    create = verb(verbs, "create", _create_experiment, "start an experiment (JSON file, or - for stdin)")
    create.add_argument("spec", help="path of the experiment request JSON")
    create.add_argument("--dataset", default=None, help="set the request's dataset_id")
    create.add_argument("--wait", action="store_true", help="follow the experiment until it ends")
    verb(verbs, "get", lambda c, a: c.get_experiment(a.id), "one experiment with its leaderboard").add_argument("id")
    listing = verb(verbs, "list", lambda c, a: c.list_experiments(status=a.status), "list experiments, newest first")
    listing.add_argument("--status", default=None, choices=["queued", "running", "succeeded", "failed", "cancelled"])
    verb(verbs, "cancel", lambda c, a: c.cancel_experiment(a.id), "cancel an experiment and its jobs").add_argument(
        "id"
    )

    models = commands.add_parser("models", help="list trained models").add_subparsers(required=True)
    verb(models, "list", lambda c, a: c.list_models(), "list models")
    verb(models, "get", lambda c, a: c.get_model(a.id), "one model").add_argument("id")
    predict = verb(commands, "predict", lambda c, a: c.predict(a.model, a.images), "classify image files")
    predict.add_argument("model")
    predict.add_argument("images", nargs="+", type=Path)


class UsageError(Exception):
    """The command line cannot be carried out as given (exit 2)."""


def is_client_command(args: argparse.Namespace) -> bool:
    return hasattr(args, "client_handler")


def run(args: argparse.Namespace) -> int:
    from rarefit.client import ApiError, Client

    try:
        try:
            client = Client(args.url, args.api_key)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        with client:
            result = args.client_handler(client, args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for problem in exc.errors:
            print(f"  {'.'.join(map(str, problem.get('loc', [])))}: {problem.get('msg')}", file=sys.stderr)
        return EXIT_API_ERROR
    except httpx.TransportError as exc:
        print(f"error: cannot reach the server ({type(exc).__name__}: {exc})", file=sys.stderr)
        return EXIT_UNREACHABLE
    _show(result, args)
    if getattr(args, "wait", False) and result.status != "succeeded":
        return EXIT_JOB_FAILED
    return EXIT_OK


def _upload(client, args: argparse.Namespace):
    return client.upload_dataset(args.file, name=args.name)


def _download(client, args: argparse.Namespace):
    path = client.download_artifact(args.id, args.name, args.output)
    print(f"saved {path}", file=sys.stderr)
    return [a for a in client.list_artifacts(args.id) if a.name == args.name][0]


def _read_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON object named by ``args.spec`` (``-``: stdin), with ``--dataset`` as its ``dataset_id``."""
    text = sys.stdin.read() if args.spec == "-" else Path(args.spec).read_text(encoding="utf-8")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{args.spec} is not JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise UsageError(f"{args.spec} is not a JSON object")
    if args.dataset:
        spec["dataset_id"] = args.dataset
    return spec


def _submit(client, args: argparse.Namespace):
    job = client.submit_job(_read_spec(args))
    print(f"submitted job {job.id}", file=sys.stderr)
    return _follow(client, job.id) if args.wait else job


def _follow(client, job_id: str):
    from launch.progress_bar import JobProgress

    with JobProgress(client.get_job(job_id)) as bar:
        job = client.wait(job_id, progress=bar.update)
    message = f"job {job.id} {job.status}"
    if job.error is not None:
        message += f": {job.error.type}: {job.error.message}"
    print(message, file=sys.stderr)
    return job


def _create_experiment(client, args: argparse.Namespace):
    experiment = client.create_experiment(_read_spec(args))
    print(f"started experiment {experiment.id} ({experiment.progress.trials_total} trials)", file=sys.stderr)
    if not args.wait:
        return experiment

    def report(event) -> None:  # a line per state change; the trials' own progress is on their jobs
        print(f"experiment {experiment.id} {event.data['status']}", file=sys.stderr)

    finished = client.wait_experiment(experiment, progress=report)
    if finished.error:
        print(f"experiment {finished.id} {finished.status}: {finished.error}", file=sys.stderr)
    return finished


def _show(result: Any, args: argparse.Namespace) -> None:
    items = result if isinstance(result, list) else [result]
    if args.json:
        payload = (
            [i.model_dump(mode="json") for i in items] if isinstance(result, list) else result.model_dump(mode="json")
        )
        print(json.dumps(payload, indent=2))
    elif args.quiet:
        for item in items:
            print(getattr(item, "id", None) or getattr(item, "model_id", None) or getattr(item, "name", ""))
    else:
        for item in items:
            print(_line(item))


def _line(item: BaseModel) -> str:
    """One readable line per object; ``--json`` has everything."""
    from rarefit.schemas import ExperimentOut, MetricsOut, PredictOut

    data = item.model_dump(mode="json")
    if isinstance(item, PredictOut):
        return "\n".join(f"{p['label']}\t{json.dumps(p['probabilities'])}" for p in data["predictions"])
    if isinstance(item, MetricsOut):  # a model has a history too: of its operating points
        rows = [
            f"epoch {h['epoch']}\ttrain_loss {h['train_loss']:.4f}\tval_loss {h['val_loss']}" for h in data["history"]
        ]
        return "\n".join([*rows, f"best_epoch {data['best_epoch']}\ttest {json.dumps(data['test'])}"])
    if isinstance(item, ExperimentOut):
        head = (
            f"id={item.id}\tname={json.dumps(item.name)}\tstatus={item.status}\tprogress={json.dumps(data['progress'])}"
        )
        rows = [
            f"rank {row.rank}\ttrial {row.trial}\t{row.state}\tval objective {_mean_std(row.val.get('objective'))}"
            f"\t{json.dumps(row.params)}"
            for row in item.leaderboard
        ]
        return "\n".join([head, *rows])
    keys = ("id", "name", "status", "progress", "num_classes", "imbalance_ratio", "arch", "model_id", "error")
    return "\t".join(f"{key}={json.dumps(data[key])}" for key in keys if key in data and data[key] is not None)


def _mean_std(summary: Any) -> str:
    if summary is None or summary.mean is None:
        return "-"
    return f"{summary.mean:.4f} ± {summary.std or 0.0:.4f}"
