"""The user verbs of ``rarefit`` against a real server: ids for scripts, --json, --wait and its exit codes, for jobs
and experiments."""

from __future__ import annotations

import json

import live_api
import pytest
from live_api import KEY

from launch.cli import main
from service.models import JobStatus

live_server, small_npz = live_api.live_server, live_api.small_npz  # the live API fixtures


@pytest.fixture
def env(live_server, monkeypatch):
    monkeypatch.setenv("RAREFIT_URL", live_server.url)
    monkeypatch.setenv("RAREFIT_API_KEY", KEY)
    monkeypatch.setenv("COLUMNS", "200")  # the progress line is cut to the terminal's width
    return live_server


@pytest.fixture
def dataset_id(env, small_npz, capsys) -> str:
    assert main(["datasets", "upload", str(small_npz), "--name", "cli", "-q"]) == 0
    return capsys.readouterr().out.strip()


def spec_file(tmp_path, **spec) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"model": {"arch": "simple_cnn"}, **spec}))
    return str(path)


def submit_and_wait(env, capsys, tmp_path, dataset_id: str, *, status: str) -> tuple[int, str, str]:
    """``jobs submit --wait`` while the stand-in worker trains the job it submitted."""
    assert main(["jobs", "submit", spec_file(tmp_path, epochs=2), "--dataset", dataset_id, "-q"]) == 0
    job_id = capsys.readouterr().out.strip()
    env.play_worker(job_id, epochs=2, status=status)
    code = main(["jobs", "wait", job_id, "--json"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_upload_prints_the_id_and_get_shows_it(env, dataset_id, capsys):
    assert len(dataset_id) == 32
    assert main(["datasets", "get", dataset_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "cli"


def test_wait_exits_0_on_success_with_a_progress_bar(env, capsys, tmp_path, dataset_id):
    code, out, err = submit_and_wait(env, capsys, tmp_path, dataset_id, status="succeeded")
    assert code == 0 and json.loads(out)["status"] == "succeeded"
    assert "2/2" in err and "succeeded" in err and "train_loss" in err


def test_wait_exits_1_on_failure_and_says_why(env, capsys, tmp_path, dataset_id):
    code, out, err = submit_and_wait(env, capsys, tmp_path, dataset_id, status="failed")
    assert code == 1 and json.loads(out)["error"]["message"] == "the loss became NaN"
    assert "failed: ValueError: the loss became NaN" in err


def test_submit_with_wait_follows_the_job(env, capsys, tmp_path, dataset_id, monkeypatch):
    import launch.client_commands as commands

    started = []
    original = commands._follow

    def follow(client, job_id):  # start the stand-in worker once the job exists
        started.append(env.play_worker(job_id, epochs=2))
        return original(client, job_id)

    monkeypatch.setattr(commands, "_follow", follow)
    code = main(["jobs", "submit", spec_file(tmp_path, epochs=2, dataset_id=dataset_id), "--wait", "-q"])
    out = capsys.readouterr().out.strip()
    assert code == 0 and len(out) == 32 and started


def test_list_metrics_and_json_output(env, capsys, tmp_path, dataset_id):
    submit_and_wait(env, capsys, tmp_path, dataset_id, status="succeeded")
    assert main(["jobs", "list", "--status", "succeeded", "--json"]) == 0
    [job, *_] = json.loads(capsys.readouterr().out)
    assert main(["jobs", "metrics", job["id"], "--since-epoch", "1", "--json"]) == 0
    assert [h["epoch"] for h in json.loads(capsys.readouterr().out)["history"]] == [2]


def test_api_errors_exit_3_naming_the_field(env, capsys, tmp_path, dataset_id):
    assert main(["jobs", "submit", spec_file(tmp_path, epochs=0, dataset_id=dataset_id)]) == 3
    err = capsys.readouterr().err
    assert "422" in err and "epochs" in err
    assert main(["jobs", "get", "f" * 32]) == 3
    assert "404" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["jobs", "submit", str(broken)]) == 2
    assert "is not JSON" in capsys.readouterr().err


def experiment_file(tmp_path) -> str:
    path = tmp_path / "experiment.json"
    request = {
        "base": {"model": {"arch": "simple_cnn"}, "epochs": 1},
        "search": {"strategy": "grid", "space": {"loss.type": ["cross_entropy", "focal"]}},
        "seeds": [0],
    }
    path.write_text(json.dumps(request))
    return str(path)


def create_and_wait(env, capsys, tmp_path, dataset_id: str, *, status: JobStatus, monkeypatch) -> tuple[int, str, str]:
    """``experiments create --wait`` while the real experiment steps run with the stand-in worker."""
    from rarefit.client import Client

    original = Client.wait_experiment

    def wait_experiment(client, experiment, **kwargs):  # start the control loop once the experiment exists
        env.play_experiment(experiment.id, epochs=1, status=status)
        return original(client, experiment, **kwargs)

    monkeypatch.setattr(Client, "wait_experiment", wait_experiment)
    code = main(["experiments", "create", experiment_file(tmp_path), "--dataset", dataset_id, "--wait", "--json"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_experiments_create_wait_exits_0_and_get_list_show_it(env, capsys, tmp_path, dataset_id, monkeypatch):
    code, out, err = create_and_wait(
        env, capsys, tmp_path, dataset_id, status=JobStatus.succeeded, monkeypatch=monkeypatch
    )
    body = json.loads(out)
    assert code == 0 and body["status"] == "succeeded" and [row["rank"] for row in body["leaderboard"]] == [1, 2]
    assert f"experiment {body['id']} running" in err and f"experiment {body['id']} succeeded" in err
    assert main(["experiments", "get", body["id"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"id={body['id']}") and "status=succeeded" in lines[0]
    assert lines[1].startswith("rank 1\ttrial 1\tcomplete\tval objective 0.7000 ± 0.0000")
    assert main(["experiments", "list", "--status", "succeeded", "-q"]) == 0
    assert body["id"] in capsys.readouterr().out.split()


def test_experiments_create_wait_exits_1_when_it_fails(env, capsys, tmp_path, dataset_id, monkeypatch):
    code, out, err = create_and_wait(
        env, capsys, tmp_path, dataset_id, status=JobStatus.failed, monkeypatch=monkeypatch
    )
    body = json.loads(out)
    assert code == 1 and body["status"] == "failed" and "every trial failed" in body["error"]
    assert f"experiment {body['id']} failed: every trial failed" in err


def test_experiments_cancel_and_its_errors(env, capsys, tmp_path, dataset_id):
    assert main(["experiments", "create", experiment_file(tmp_path), "--dataset", dataset_id, "-q"]) == 0
    experiment_id = capsys.readouterr().out.strip()
    assert main(["experiments", "cancel", experiment_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    assert main(["experiments", "cancel", experiment_id]) == 3
    assert "409" in capsys.readouterr().err
    assert main(["experiments", "create", experiment_file(tmp_path)]) == 3  # no dataset_id
    err = capsys.readouterr().err
    assert "422" in err and "dataset_id" in err
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    assert main(["experiments", "create", str(listed)]) == 2
    assert "is not a JSON object" in capsys.readouterr().err


def test_an_unreachable_server_exits_4_and_a_missing_key_2(monkeypatch, capsys, free_port):
    monkeypatch.setenv("RAREFIT_URL", f"http://127.0.0.1:{free_port}")
    monkeypatch.setenv("RAREFIT_API_KEY", KEY)
    assert main(["jobs", "list"]) == 4
    assert "cannot reach the server" in capsys.readouterr().err
    monkeypatch.delenv("RAREFIT_API_KEY")
    assert main(["jobs", "list"]) == 2
    assert "RAREFIT_API_KEY" in capsys.readouterr().err
