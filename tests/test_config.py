"""Configuration: file, environment, shorthand, flags; every error names its key."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import (
    ConfigError,
    Settings,
    load_settings,
    parse_duration,
    parse_listen_address,
    parse_size,
)
from tests.certs import bcrypt_hash

MINIMAL = """
[targets.main]
url = "https://vms.local/"
token = "s3cr3t-token"
"""


def target_with(lines: str) -> str:
    """MINIMAL with its target's token line replaced by ``lines``."""
    return MINIMAL.replace('token = "s3cr3t-token"', lines)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), **kwargs)  # type: ignore[arg-type]
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("7d", 604800),
        ("2w", 1209600),
        (45, 45),
        ("12.5", 12.5),
        ("1m0.5s", 60.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "5x",
        "m5",
        "1h 30m",
        "-5s",
        "0s",
        True,
        [1],
        "inf",
        "nan",
        float("inf"),
        "200000w",
        "1e400",
    ],
)
def test_bad_durations_are_rejected(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [("512KiB", 512 * 1024), ("16MiB", 16 * 2**20), ("1GB", 10**9), (4096, 4096), ("2048", 2048)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "16 MiBs", "-1KiB", "1e3", True, 1.5, "2GiB", 10, "9" * 400])
def test_bad_sizes_are_rejected(text: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_defaults_from_a_minimal_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.web.listen_address == ":9877"
    assert (settings.poll.interval, settings.poll.lookback) == (60, 86400)
    assert (settings.poll.timeout, settings.poll.max_staleness) == (45, 600)
    assert settings.poll.full_resync == 600
    target = settings.targets["main"]
    assert target.url == "https://vms.local"
    assert target.path == "/api/v1/users/downloads"
    assert (target.client, target.timezone, target.per_page, target.concurrency) == (
        "web",
        "UTC",
        100,
        4,
    )
    assert target.tls_verify is True
    assert (target.max_response_size, target.max_downloads) == (16 * 2**20, 1_000_000)


@pytest.mark.parametrize("text", ["0s", "0", "0m", 0])
def test_full_resync_zero_means_every_poll_is_full(tmp_path: Path, text: object) -> None:
    value = repr(text) if isinstance(text, str) else str(text)
    settings = load_settings(write(tmp_path, MINIMAL + f"\n[poll]\nfull_resync = {value}\n"))
    assert settings.poll.full_resync == 0


def test_example_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).parents[1] / "config.example.toml"
    secret = tmp_path / "token"
    secret.write_text("t\n")
    text = example.read_text(encoding="utf-8").replace("/run/secrets/vms_token", str(secret))
    settings = load_settings(write(tmp_path, text))
    assert list(settings.targets) == ["main"]


def test_environment_overrides_a_target_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMS_EXPORTER_TARGETS__MAIN__TIMEZONE", "Europe/Moscow")
    monkeypatch.setenv("VMS_EXPORTER_POLL__INTERVAL", "2m")
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.targets["main"].timezone == "Europe/Moscow"
    assert settings.targets["main"].url == "https://vms.local"  # the rest of the table stays
    assert settings.poll.interval == 120


def test_flag_overrides_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMS_EXPORTER_WEB__LISTEN_ADDRESS", ":9200")
    text = MINIMAL + '\n[web]\nlisten_address = ":9100"\n'
    assert load_settings(write(tmp_path, text)).web.listen_address == ":9200"
    settings = load_settings(write(tmp_path, text), {"web": {"listen_address": "127.0.0.1:9300"}})
    assert settings.web.listen_address == "127.0.0.1:9300"


def test_config_file_from_environment_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, MINIMAL)
    monkeypatch.setenv("VMS_EXPORTER_CONFIG", str(path))
    assert list(load_settings().targets) == ["main"]
    monkeypatch.delenv("VMS_EXPORTER_CONFIG")
    (Path.cwd() / "config.toml").write_text(MINIMAL.replace("main", "cwd"))
    assert list(load_settings().targets) == ["cwd"]


def test_shorthand_builds_the_default_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMS_EXPORTER_URL", "http://127.0.0.1:8080")
    monkeypatch.setenv("VMS_EXPORTER_TOKEN", "abc")
    monkeypatch.setenv("VMS_EXPORTER_TIMEZONE", "Europe/Moscow")
    monkeypatch.setenv("VMS_EXPORTER_PATH", "/api/v1/downloads")
    settings = load_settings()
    target = settings.targets["default"]
    assert (target.url, target.timezone, target.path) == (
        "http://127.0.0.1:8080",
        "Europe/Moscow",
        "/api/v1/downloads",
    )
    assert target.token is not None and target.token.get_secret_value() == "abc"


def test_shorthand_mixed_with_file_targets_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMS_EXPORTER_URL", "http://127.0.0.1:8080")
    monkeypatch.setenv("VMS_EXPORTER_TOKEN", "abc")
    assert any("VMS_EXPORTER_URL" in p and "mixed" in p for p in problems(tmp_path, MINIMAL))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "\n[poll]\nintervall = '1m'\n", "poll.intervall: unknown key"),
        (MINIMAL + "\nextra = 1\n", "extra: unknown key"),
        (
            target_with('token = "x"\ncolour = "red"'),
            "targets.main.colour: unknown key",
        ),
        (MINIMAL + "\n[poll]\ninterval = 'soon'\n", "poll.interval: invalid duration"),
        (
            target_with('token = "x"\nmax_response_size = "lots"'),
            "targets.main.max_response_size: invalid size 'lots'",
        ),
        (
            target_with('token = "x"\nmax_downloads = 0'),
            "targets.main.max_downloads",
        ),
        (
            MINIMAL + "\n[poll]\ninterval = '30s'\ntimeout = '45s'\n",
            "poll.timeout: must be less than poll.interval",
        ),
        (
            MINIMAL + "\n[poll]\ninterval = '2d'\ntimeout = '45s'\n",
            "poll.interval: must not exceed poll.lookback",
        ),
        (
            target_with('token = "x"\nrequest_timeout = "1m"'),
            "targets.main.request_timeout: must be less than poll.timeout",
        ),
        (
            target_with('token = "x"\ntimezone = "Mars/Olympus"'),
            "targets.main.timezone: unknown IANA time zone",
        ),
        (
            target_with('token = "x"\nclient = "desktop"'),
            "targets.main.client",
        ),
        (MINIMAL.replace("https://vms.local/", "vms.local"), "targets.main.url: expected"),
        (
            MINIMAL.replace("https://vms.local/", "https://u:p@vms.local"),
            "targets.main.url: credentials in the URL",
        ),
        (
            target_with('token = "x"\nper_page = 0'),
            "targets.main.per_page",
        ),
        (target_with(""), "targets.main: no way to authenticate"),
        (
            target_with('token = "x"\nlogin = "a"\npassword = "b"'),
            "targets.main: set either login or token",
        ),
        (
            target_with('login = "a"'),
            "targets.main: login needs password",
        ),
        (
            target_with('password = "b"'),
            "targets.main: password needs login",
        ),
        (MINIMAL.replace("targets.main", "targets.Main"), "targets: target name 'Main'"),
        ("[poll]\ninterval = '1m'\n", "targets: no target configured"),
        (MINIMAL + "\n[web]\nlisten_address = 'localhost'\n", "web.listen_address: expected"),
        (MINIMAL + "\n[metrics]\nmax_cameras = 0\n", "metrics.max_cameras"),
        (MINIMAL + "\n[web]\nshow_details = true\n", "web.show_details: names and logins"),
        (MINIMAL + "\n[web]\nexternal_url = 'vms-exporter'\n", "web.external_url: expected"),
        (MINIMAL + "\n[web]\nexternal_url = 'https://h/?a=1'\n", "web.external_url: must not"),
        (MINIMAL + "\n[poll]\nlookback = '200000w'\n", "poll.lookback: duration must not"),
        (MINIMAL + "\n[poll]\nmax_staleness = 'nan'\n", "poll.max_staleness: duration"),
        (MINIMAL + "\n[poll]\nfull_resync = '-1m'\n", "poll.full_resync: invalid duration"),
        (MINIMAL + "\n[poll]\nfull_resync = '30s'\n", "poll.full_resync: must be 0s"),
        (
            target_with('token = "x"\nmax_rps = inf'),
            "targets.main.max_rps",
        ),
        ("[targets.main\n", "not valid TOML"),
        (MINIMAL + "\n[poll]\ninterval = " + "9" * 400 + "\n", "poll.interval: duration must"),
        (target_with('token = "x"\nmax_pages = ' + "9" * 40), "targets.main.max_pages"),
        (MINIMAL + "\nx = " + "[" * 5000 + "]" * 5000 + "\n", "cannot be read: nested too"),
        (MINIMAL + "\n[metrics]\nmax_cameras = " + "9" * 5000 + "\n", "a value too large"),
        (target_with('token = "ab\\u2028cd"'), "targets.main.token: must be non-empty"),
        (target_with('token = "Bearer "'), "targets.main.token: must be non-empty"),
        (MINIMAL + '\n[state]\ndirectory = "/nonexistent/x"\n', "state.directory: /nonexist"),
        (MINIMAL + "\n[state]\nkeep = 1\n", "state.keep: unknown key"),
    ],
)
def test_each_invalid_case_names_its_key(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(expected in p for p in found), found


def test_unknown_environment_variables_are_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMS_EXPORTER_INTERVAL", "30s")
    monkeypatch.setenv("VMS_EXPORTER_POLL__INTERVALL", "30s")
    found = problems(tmp_path, MINIMAL)
    assert "VMS_EXPORTER_INTERVAL: unknown variable (not a configuration key)" in found
    monkeypatch.delenv("VMS_EXPORTER_INTERVAL")
    assert problems(tmp_path, MINIMAL) == ["poll.intervall: unknown key"]


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    text = MINIMAL + "\n[poll]\ninterval = 'soon'\nlookback = 'never'\n"
    found = problems(tmp_path, text)
    assert any(p.startswith("poll.interval:") for p in found)
    assert any(p.startswith("poll.lookback:") for p in found)


def test_missing_and_empty_secret_files_are_named(tmp_path: Path) -> None:
    text = target_with(f'token_file = "{tmp_path}/absent"')
    assert problems(tmp_path, text) == [
        f"targets.main.token_file: cannot read {tmp_path}/absent: No such file or directory"
    ]
    (tmp_path / "empty").write_text("\n")
    text = target_with(f'token_file = "{tmp_path}/empty"')
    assert problems(tmp_path, text) == [
        f"targets.main.token_file: {tmp_path}/empty is empty, not text, or has control characters"
    ]


def test_ca_file_must_hold_a_certificate(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    text = MINIMAL + f'ca_file = "{tmp_path}/ca.pem"\n'
    assert problems(tmp_path, text) == [
        f"targets.main.ca_file: {tmp_path}/ca.pem holds no PEM certificate"
    ]


def test_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(MINIMAL.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(path)


def test_lowercase_variables_are_checked_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("vms_exporter_interval", "30s")
    assert "vms_exporter_interval: unknown variable (not a configuration key)" in problems(
        tmp_path, MINIMAL
    )


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--config.file: .*no such file"):
        load_settings(tmp_path / "nope.toml")


def test_secrets_are_not_in_reprs_or_errors(tmp_path: Path) -> None:
    text = target_with('login = "svc"\npassword = "pa55word"')
    settings = load_settings(write(tmp_path, text))
    for shown in (
        repr(settings),
        str(settings),
        repr(settings.targets["main"]),
        settings.model_dump_json(),
    ):
        assert "pa55word" not in shown
    for bad_secret in (
        'token = "line1\\nline2-s3cr3t"',
        "token = 31415926",
        'login = "svc"\npassword = "pa55\\r\\nword"',
    ):
        bad = target_with(bad_secret)
        found = problems(tmp_path, bad)
        assert found
        assert not any("s3cr3t" in p or "31415926" in p or "pa55" in p for p in found), found


def test_device_uuid_is_stable_and_overridable(tmp_path: Path) -> None:
    first = load_settings(write(tmp_path, MINIMAL)).targets["main"]
    again = load_settings(write(tmp_path, MINIMAL)).targets["main"]
    assert first.device_id("main") == again.device_id("main")
    assert uuid.UUID(first.device_id("main")).version == 5
    assert first.device_id("main") != first.device_id("other")
    fixed = "5f0c3b7e-1111-4222-8333-444455556666"
    text = target_with(f'token = "x"\ndevice_uuid = "{fixed}"')
    assert load_settings(write(tmp_path, text)).targets["main"].device_id("main") == fixed


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (":9877", (None, 9877)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[::1]:9877", ("::1", 9877)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
    ],
)
def test_listen_addresses(text: str, parsed: tuple[str | None, int]) -> None:
    assert parse_listen_address(text) == parsed


def test_settings_type_is_frozen(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    assert isinstance(settings, Settings)
    with pytest.raises(Exception, match="frozen"):
        settings.poll = settings.poll  # type: ignore[misc]


def test_a_token_file_with_a_line_separator_is_an_error_not_a_shorter_token(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "token"
    secret.write_text("abc\u2028def\n", encoding="utf-8")
    found = problems(tmp_path, target_with(f'token_file = "{secret}"'))
    assert found == [
        f"targets.main.token_file: {secret} is empty, not text, or has control characters"
    ]
    secret.write_text("Bearer abc\n", encoding="utf-8")
    assert load_settings(write(tmp_path, target_with(f'token_file = "{secret}"')))


def test_a_state_directory_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    text = MINIMAL + f'\n[state]\ndirectory = "{tmp_path / "file"}"\n'
    assert problems(tmp_path, text) == [
        f"state.directory: {tmp_path / 'file'} is not an existing directory"
    ]
    settings = load_settings(write(tmp_path, MINIMAL + f'\n[state]\ndirectory = "{tmp_path}"\n'))
    assert settings.state.directory == tmp_path


KEYS = [
    "targets",
    "main",
    "poll",
    "interval",
    "timeout",
    "url",
    "token",
    "per_page",
    "state",
    "directory",
    "web",
    "listen_address",
    "metrics",
    "max_cameras",
    "max_rps",
    "lookback",
]
SCALARS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=20),
    st.sampled_from(["30s", "1h30m", "http://127.0.0.1:1", "9" * 500, ":9877"]),
)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if value != value
            else ("inf" if value > 0 else "-inf")
            if abs(value) == float("inf")
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


DOCUMENTS = st.dictionaries(
    st.sampled_from(KEYS) | st.text(min_size=1, max_size=5),
    st.recursive(
        SCALARS,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
        ),
        max_leaves=12,
    ),
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(document=DOCUMENTS)
def test_any_toml_document_is_settings_or_config_errors_never_an_exception(
    tmp_path_factory: pytest.TempPathFactory, document: dict[str, object]
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "config.toml"
    path.write_text("\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in document.items()))
    try:
        load_settings(path)
    except ConfigError as exc:
        for problem in exc.problems:
            key = problem.split(":", 1)[0]
            assert key and ": " in problem, problem


def test_show_details_needs_basic_auth_users(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    details = MINIMAL + f"\n[web]\nshow_details = true\nconfig_file = '{web}'\n"
    assert problems(tmp_path, details) == [
        "web.show_details: names and logins are shown only behind basic auth: "
        "set basic_auth_users in web.config_file (or show_details = false)"
    ]
    web.write_text(f"basic_auth_users:\n  op: '{bcrypt_hash('pw')}'\n")
    assert load_settings(write(tmp_path, details)).web.show_details
