"""Choosing the job backend from the settings: local by default (no Ray), Ray settings validated with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tl_core.server.settings import ServerSettingsError, load_server_settings


def test_the_local_backend_stays_the_default_and_imports_no_ray() -> None:
    code = (
        "import sys\n"
        "from tl_core.jobs.backends import backend_for\n"
        "from tl_core.server.settings import load_server_settings\n"
        "backend, slots = backend_for(load_server_settings({}))\n"
        "backend.close()\n"
        "print(type(backend).__name__, 'ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["ProcessBackend", "False"]


def test_ray_settings_from_the_environment_and_the_config_file(tmp_path) -> None:
    settings = load_server_settings(
        {
            "TRANSFERLAB_JOB_BACKEND": "Ray",
            "TRANSFERLAB_RAY_ADDRESS": "10.0.0.5:6379",
            "TRANSFERLAB_GPUS_PER_JOB": "0.5",
        },
        cwd=tmp_path,
    )
    assert (settings.job_backend, settings.ray_address, settings.gpus_per_job) == ("ray", "10.0.0.5:6379", 0.5)
    assert (settings.cpus_per_job, settings.max_retries) == (1.0, 2)
    (tmp_path / "transferlab.toml").write_text(
        'mode = "personal"\njob_backend = "ray"\nray_address = "auto"\nmax_retries = 0\n'
    )
    settings = load_server_settings({}, cwd=tmp_path)
    assert (settings.job_backend, settings.ray_address, settings.max_retries) == ("ray", "auto", 0)
    assert settings.ray_shared_paths == ()


def test_shared_paths_from_the_environment_and_the_config_file(tmp_path) -> None:
    shared = [tmp_path / "nfs-a", tmp_path / "nfs-b"]
    for folder in shared:
        folder.mkdir()
    joined = os.pathsep.join(str(folder) for folder in shared)
    settings = load_server_settings({"TRANSFERLAB_RAY_SHARED_PATHS": joined}, cwd=tmp_path)
    assert settings.ray_shared_paths == tuple(shared)
    (tmp_path / "transferlab.toml").write_text(f'mode = "personal"\nray_shared_paths = ["{shared[1]}"]\n')
    assert load_server_settings({}, cwd=tmp_path).ray_shared_paths == (shared[1],)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"TRANSFERLAB_RAY_ADDRESS": "http://head"}, "TRANSFERLAB_RAY_ADDRESS"),
        ({"TRANSFERLAB_JOB_BACKEND": "slurm"}, "TRANSFERLAB_JOB_BACKEND"),
        ({"TRANSFERLAB_GPUS_PER_JOB": "0"}, "gpus_per_job"),
        (
            {"TRANSFERLAB_RAY_SHARED_PATHS": "relative/data"},
            "ray_shared_paths entry 'relative/data' is not an absolute",
        ),
        ({"TRANSFERLAB_RAY_SHARED_PATHS": "/no/such/mount"}, "'/no/such/mount' is not a folder on this server"),
    ],
)
def test_bad_ray_settings_name_the_setting(environ: dict, named: str, tmp_path) -> None:
    with pytest.raises(ServerSettingsError, match=named):
        load_server_settings(environ, cwd=tmp_path)


def test_serve_with_an_unreachable_ray_cluster_stops_at_start_naming_the_setting(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from tl_core.cli.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRANSFERLAB_JOB_BACKEND", "ray")
    monkeypatch.setenv("TRANSFERLAB_RAY_ADDRESS", "127.0.0.1:9")  # the discard port: nothing listens there
    assert main(["serve"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: No Ray cluster answers at 127.0.0.1:9 (TRANSFERLAB_RAY_ADDRESS")
    assert "ray start --head" in error and error.count("\n") == 1
