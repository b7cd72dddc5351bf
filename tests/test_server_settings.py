"""Server settings: personal defaults, workshop from env or a config file, validation, Streamlit flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from tl_core.server.settings import (
    ServerSettings,
    ServerSettingsError,
    is_loopback_host,
    load_server_settings,
    oidc_configured,
    streamlit_flags,
)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home folder, so the developer's own ~/.streamlit/secrets.toml is never read."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    return folder


@pytest.fixture()
def project(tmp_path: Path, home: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


def _flag(flags: list[str], name: str) -> str:
    return flags[flags.index(name) + 1]


def test_nothing_configured_is_todays_personal_server(project: Path) -> None:
    settings = load_server_settings({}, cwd=project)
    assert settings.mode == "personal" and not settings.sign_in_required
    assert settings.host == "localhost" and settings.port == 8501
    assert settings.disk_quota_mb is None and settings.max_queued_per_user is None
    assert settings.workspace == (project / "workspace").resolve()
    assert settings.config_file is None and settings.oidc_configured is False
    assert settings.warm_workers is True
    flags = streamlit_flags(settings)
    assert _flag(flags, "--server.address") == "localhost"
    assert _flag(flags, "--server.maxUploadSize") == "200"
    assert "--server.headless" not in flags


def test_workshop_from_environment_binds_all_interfaces_with_quotas(project: Path) -> None:
    settings = load_server_settings(
        {
            "TRANSFERLAB_MODE": "Workshop",
            "TRANSFERLAB_PORT": "8600",
            "TRANSFERLAB_MAX_UPLOAD_MB": "50",
            "TRANSFERLAB_WORKSPACE": "/srv/tl",
        },
        cwd=project,
    )
    assert settings.mode == "workshop" and settings.sign_in_required
    assert settings.host == "0.0.0.0" and settings.port == 8600
    assert settings.disk_quota_mb == 2048 and settings.max_queued_per_user == 2
    assert settings.users_file == Path("/srv/tl/users.json") and settings.server_datasets_dir == Path(
        "/srv/tl/datasets"
    )
    flags = streamlit_flags(settings)
    assert (
        _flag(flags, "--server.address"),
        _flag(flags, "--server.port"),
        _flag(flags, "--server.maxUploadSize"),
    ) == ("0.0.0.0", "8600", "50")
    assert (
        _flag(flags, "--client.showErrorDetails") == "type" and _flag(flags, "--server.enableXsrfProtection") == "true"
    )


def test_config_file_turns_on_workshop_and_environment_overrides_it(project: Path) -> None:
    (project / "transferlab.toml").write_text(
        'port = 9000\ndisk_quota_mb = 500\nmax_queued_per_user = 0\nusers_file = "accounts.json"\n'
    )
    settings = load_server_settings({"TRANSFERLAB_DISK_QUOTA_MB": "800"}, cwd=project)
    assert settings.mode == "workshop" and settings.config_file == project / "transferlab.toml"
    assert settings.port == 9000 and settings.disk_quota_mb == 800  # env beats the file
    assert settings.max_queued_per_user is None  # 0 switches the limit off
    assert settings.users_file == (project / "accounts.json").resolve()
    (project / "transferlab.toml").write_text("warm_workers = false\n")
    assert load_server_settings({}, cwd=project).warm_workers is False
    assert load_server_settings({"TRANSFERLAB_WARM_WORKERS": "yes"}, cwd=project).warm_workers is True
    assert load_server_settings({"TRANSFERLAB_WARM_WORKERS": "0"}, cwd=project).warm_workers is False
    personal = project / "personal.toml"
    personal.write_text('mode = "personal"\n')
    assert load_server_settings({"TRANSFERLAB_CONFIG": str(personal)}, cwd=project).mode == "personal"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TRANSFERLAB_MODE": "team"}, "choose 'personal' or 'workshop'"),
        ({"TRANSFERLAB_HOST": "0.0.0.0"}, "without sign-in to the network"),
        ({"TRANSFERLAB_MODE": "workshop", "TRANSFERLAB_PORT": "70000"}, "between 1 and 65535"),
        ({"TRANSFERLAB_PORT": "eighty"}, "must be a whole number"),
        ({"TRANSFERLAB_MODE": "workshop", "TRANSFERLAB_JOBS_PER_DEVICE": "0"}, "jobs_per_device=0 must be at least 1"),
        ({"TRANSFERLAB_MODE": "workshop", "TRANSFERLAB_DISK_QUOTA_MB": "-5"}, "for no limit"),
        (
            {"TRANSFERLAB_MODE": "workshop", "TRANSFERLAB_DISK_QUOTA_MB": "100", "TRANSFERLAB_MAX_UPLOAD_MB": "300"},
            "no upload that size",
        ),
        ({"TRANSFERLAB_CONFIG": "missing.toml"}, "names no file"),
        ({"TRANSFERLAB_WARM_WORKERS": "sometimes"}, "TRANSFERLAB_WARM_WORKERS='sometimes' must be true or false"),
        (
            {"TRANSFERLAB_MODE": "workshop", "TRANSFERLAB_USERS_FILE": "workspace/datasets/users.json"},
            "inside a folder users can read",
        ),
    ],
)
def test_invalid_settings_say_how_to_fix_them(project: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ServerSettingsError, match=message):
        load_server_settings(environ, cwd=project)


def test_bad_config_files_name_the_problem(project: Path) -> None:
    config = project / "transferlab.toml"
    config.write_text("port = 8600\nquota = 5\n")
    with pytest.raises(ServerSettingsError, match="unknown setting.*quota.*known ones"):
        load_server_settings({}, cwd=project)
    config.write_text("port = [\n")
    with pytest.raises(ServerSettingsError, match="not a readable TOML file"):
        load_server_settings({}, cwd=project)
    config.write_text('port = "8600"\nhost = 5\n')
    with pytest.raises(ServerSettingsError, match="must be text"):
        load_server_settings({}, cwd=project)


def test_loopback_hosts() -> None:
    assert all(is_loopback_host(host) for host in ("localhost", "127.0.0.1", "127.3.2.1", "::1", "[::1]"))
    assert not any(is_loopback_host(host) for host in ("0.0.0.0", "192.168.1.5", "example.com", "::"))
    assert ServerSettings(host="127.0.0.1").host == "127.0.0.1"


def test_oidc_needs_the_whole_auth_section(project: Path, home: Path) -> None:
    secrets = project / ".streamlit" / "secrets.toml"
    secrets.parent.mkdir()
    secrets.write_text('[auth]\nredirect_uri = "http://localhost:8501/oauth2callback"\ncookie_secret = "s"\n')
    assert not oidc_configured(project, home)  # no provider credentials yet
    secrets.write_text(
        secrets.read_text() + '[auth.google]\nclient_id = "a"\nclient_secret = "b"\n'
        'server_metadata_url = "https://accounts.google.com/.well-known/openid-configuration"\n'
    )
    assert oidc_configured(project, home)
    assert not oidc_configured(home, home)


def test_workshop_with_oidc_needs_authlib(project: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = project / ".streamlit" / "secrets.toml"
    secrets.parent.mkdir()
    secrets.write_text(
        '[auth]\nredirect_uri = "http://h:8501/oauth2callback"\ncookie_secret = "s"\nclient_id = "a"\n'
        'client_secret = "b"\nserver_metadata_url = "https://idp.example/.well-known/openid-configuration"\n'
    )
    monkeypatch.setattr("tl_core.server.settings.importlib.util.find_spec", lambda name: None)
    assert load_server_settings({}, cwd=project).oidc_configured  # personal mode never calls st.login
    with pytest.raises(ServerSettingsError, match="Authlib"):
        load_server_settings({"TRANSFERLAB_MODE": "workshop"}, cwd=project)
    monkeypatch.setattr("tl_core.server.settings.importlib.util.find_spec", lambda name: object())
    assert load_server_settings({"TRANSFERLAB_MODE": "workshop"}, cwd=project).oidc_configured


def test_run_limits_are_off_in_personal_mode_and_on_in_workshop_mode(project: Path) -> None:
    personal = load_server_settings({}, cwd=project)
    assert (personal.max_model_parameters, personal.max_image_size, personal.max_epochs, personal.max_run_minutes) == (
        None,
        None,
        None,
        None,
    )
    workshop = load_server_settings({"TRANSFERLAB_MODE": "workshop"}, cwd=project)
    assert (workshop.max_model_parameters, workshop.max_image_size, workshop.max_epochs, workshop.max_run_minutes) == (
        100_000_000,
        320,
        100,
        30,
    )
    # Set in personal mode, a limit applies there too.
    assert load_server_settings({"TRANSFERLAB_MAX_EPOCHS": "50"}, cwd=project).max_epochs == 50


def test_run_limits_from_the_config_file_and_the_environment(project: Path) -> None:
    (project / "transferlab.toml").write_text(
        "max_model_parameters = 5_000_000\nmax_image_size = 224\nmax_epochs = 0\nmax_run_minutes = 0.5\n"
    )
    settings = load_server_settings({"TRANSFERLAB_MAX_IMAGE_SIZE": "160"}, cwd=project)
    assert settings.max_model_parameters == 5_000_000 and settings.max_image_size == 160  # env beats the file
    assert (
        settings.max_epochs is None and settings.max_run_minutes == 0.5
    )  # 0 switches a limit off; fractions of minutes allowed
    settings = load_server_settings(
        {"TRANSFERLAB_MAX_RUN_MINUTES": "none", "TRANSFERLAB_MAX_MODEL_PARAMETERS": "20_000_000"}, cwd=project
    )
    assert settings.max_run_minutes is None and settings.max_model_parameters == 20_000_000
    assert load_server_settings({"TRANSFERLAB_MAX_RUN_MINUTES": "0"}, cwd=project).max_run_minutes is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"TRANSFERLAB_MAX_IMAGE_SIZE": "16"},
            "max_image_size=16 is smaller than any backbone takes: use 32 px or more",
        ),
        ({"TRANSFERLAB_MAX_EPOCHS": "-3"}, "max_epochs=-3 must be at least 1; leave it out"),
        (
            {"TRANSFERLAB_MAX_MODEL_PARAMETERS": "lots"},
            "TRANSFERLAB_MAX_MODEL_PARAMETERS='lots' must be a whole number",
        ),
        (
            {"TRANSFERLAB_MAX_RUN_MINUTES": "soon"},
            "TRANSFERLAB_MAX_RUN_MINUTES='soon' must be a number of minutes, e.g. 30",
        ),
        ({"TRANSFERLAB_MAX_RUN_MINUTES": "inf"}, "must be a number of minutes"),
        ({"TRANSFERLAB_MAX_RUN_MINUTES": "-5"}, "max_run_minutes=-5.0 must be more than 0"),
    ],
)
def test_invalid_run_limits_say_how_to_fix_them(project: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ServerSettingsError, match=message):
        load_server_settings({"TRANSFERLAB_MODE": "workshop", **environ}, cwd=project)


def test_a_run_limit_of_the_wrong_type_in_the_config_file_is_named(project: Path) -> None:
    (project / "transferlab.toml").write_text("max_run_minutes = true\n")
    with pytest.raises(ServerSettingsError, match="`max_run_minutes` in .* must be a number of minutes"):
        load_server_settings({}, cwd=project)
