"""The one settings loader (runtime.settings.load) behind Settings and ApiSettings."""

from __future__ import annotations

import pytest

from runtime.settings import Settings, SettingsError
from service.api.config import ApiSettings


def test_no_keys_give_the_defaults() -> None:
    """An empty environment builds both classes with their defaults."""
    assert Settings.from_env({}) == Settings()
    assert ApiSettings.from_env({}) == ApiSettings()


def test_each_type_is_read_from_its_key() -> None:
    """Strings stay as written, numbers and booleans are converted, other prefixes are ignored."""
    settings = Settings.from_env({"SHOUWANG_DATABASE_URL": "postgresql://db/x", "SHOUWANG_LOG_LEVEL": "debug",
                                  "SHOUWANG_INGEST_BATCH": " 700 ", "SHOUWANG_LOG_JSON": "true",
                                  "SHOUWANG_API_PORT": "not mine", "OTHER_POOL_SIZE": "x"})
    assert (settings.database_url, settings.log_level, settings.ingest_batch, settings.log_json) == \
        ("postgresql://db/x", "debug", 700, True)
    api = ApiSettings.from_env({"SHOUWANG_API_HOST": "0.0.0.0", "SHOUWANG_API_PORT": "9000",
                                "SHOUWANG_API_CONNECT_NATS": "off", "SHOUWANG_API_MAX_PROJECTION_LAG": "0"})
    assert (api.host, api.port, api.connect_nats, api.max_projection_lag) == ("0.0.0.0", 9000, False, 0)


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", True), ("true", True), ("YES", True), (" on ", True),
    ("0", False), ("false", False), ("No", False), ("off", False),
    ("auto", None), ("", None),
])
def test_boolean_spellings(raw: str, expected: bool | None) -> None:
    """1/true/yes/on and 0/false/no/off in any case; `auto` or empty leave log_json to the terminal."""
    assert Settings.from_env({"SHOUWANG_LOG_JSON": raw}).log_json is expected


@pytest.mark.parametrize(("env", "message"), [
    ({"SHOUWANG_INGEST_BATCH": "lots"}, "SHOUWANG_INGEST_BATCH='lots': expected a whole number"),
    ({"SHOUWANG_INGEST_BATCH": "0"}, "SHOUWANG_INGEST_BATCH=0: must be 1..10000"),
    ({"SHOUWANG_INGEST_BATCH": "10001"}, "SHOUWANG_INGEST_BATCH=10001: must be 1..10000"),
    ({"SHOUWANG_LOG_LEVEL": "INFO"}, "SHOUWANG_LOG_LEVEL='INFO': use debug, info, warning or error"),
    ({"SHOUWANG_LOG_JSON": "maybe"}, "SHOUWANG_LOG_JSON='maybe': expected true or false"),
    ({"SHOUWANG_LOG_JSON": "null"}, "SHOUWANG_LOG_JSON='null': expected true or false"),
    ({"SHOUWANG_POOL_SIZE": "8 conns"}, "SHOUWANG_POOL_SIZE='8 conns': expected a whole number"),
])
def test_a_bad_setting_names_its_key_value_and_what_is_expected(env: dict[str, str], message: str) -> None:
    """Settings refuses a bad value with one line: key, value as written, what would do."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert str(caught.value) == message


@pytest.mark.parametrize(("env", "message"), [
    ({"SHOUWANG_API_PORT": "http"}, "SHOUWANG_API_PORT='http': expected a whole number"),
    ({"SHOUWANG_API_PORT": "0"}, "SHOUWANG_API_PORT=0: must be positive"),
    ({"SHOUWANG_API_LOCKOUT_SECONDS": "-60"}, "SHOUWANG_API_LOCKOUT_SECONDS=-60: must be positive"),
    ({"SHOUWANG_API_POOL_SIZE": "0"}, "SHOUWANG_API_POOL_SIZE=0: must be positive"),
    ({"SHOUWANG_API_CONNECT_NATS": "auto"}, "SHOUWANG_API_CONNECT_NATS='auto': expected true or false"),
])
def test_a_bad_api_setting_names_its_key_value_and_what_is_expected(env: dict[str, str], message: str) -> None:
    """ApiSettings goes through the same loader and words its refusals the same way."""
    with pytest.raises(SettingsError) as caught:
        ApiSettings.from_env(env)
    assert str(caught.value) == message


def test_settings_come_from_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping the loader reads os.environ."""
    monkeypatch.setenv("SHOUWANG_NATS_URL", "nats://elsewhere:4222")
    monkeypatch.setenv("SHOUWANG_API_TOKEN_HOURS", "3")
    assert Settings.from_env().nats_url == "nats://elsewhere:4222"
    assert ApiSettings.from_env().token_hours == 3
