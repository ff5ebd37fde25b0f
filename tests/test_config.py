"""bot.toml validation, secrets kept out of files, logs and errors, and `lipcast doctor`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lipcast.config import load_secrets, load_settings, parse_settings
from lipcast.logs import RedactSecrets
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
FAKE_KEY = "sk-test-0123456789abcdefghij"


def test_the_documented_example_is_valid_and_matches_the_defaults() -> None:
    documented = load_settings(ROOT / "bot.toml")
    assert documented == parse_settings({}, source="defaults")


def test_every_section_of_the_defaults_is_documented_in_bot_toml() -> None:
    documented = tomllib.loads((ROOT / "bot.toml").read_text())
    defaults = parse_settings({}, source="defaults").model_dump()
    for section in defaults:
        assert section in documented, f"[{section}] is missing from bot.toml"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"tts": {"backend": "espaek"}}, "bot.toml: tts.backend = 'espaek': Input should be"),
        ({"render": {"size": 10}}, "bot.toml: render.size = 10: Input should be greater"),
        ({"persona": {"defualt": "x"}}, "unknown key 'persona.defualt'"),
        ({"nonsense": {}}, "unknown key 'nonsense'"),
        ({"tts": {"openai": {"timeout_s": "soon"}}}, "tts.openai.timeout_s = 'soon'"),
        (
            {"routes": [{"platform": "discord", "voice": True, "channel": "Lounge", "join": True}]},
            'join = true needs platform = "discord", voice = true and channel = the voice '
            "channel's id",
        ),
        (
            {"routes": [{"platform": "twitch", "channel": "1234", "join": True}]},
            "join = true needs",
        ),
    ],
)
def test_bad_values_name_file_key_value_and_expectation(raw: dict, expected: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw, source="bot.toml")
    assert expected in str(caught.value)


@pytest.mark.parametrize("key", ["api_key", "token", "discord_token", "password"])
def test_secrets_are_refused_in_bot_toml_without_echoing_them(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings({"tts": {"openai": {key: FAKE_KEY}}}, source="bot.toml")
    assert "never go in bot.toml" in str(caught.value)
    assert FAKE_KEY not in str(caught.value)


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "absent.toml")


def test_secrets_come_from_env_and_dotenv_and_never_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("DISCORD_TOKEN", "discord-from-environment")
    env_file = tmp_path / ".env"
    env_file.write_text(f"OPENAI_API_KEY={FAKE_KEY}\nDISCORD_TOKEN=discord-from-file\n")
    secrets = load_secrets(env_file)
    assert secrets.openai_api_key is not None
    assert secrets.openai_api_key.get_secret_value() == FAKE_KEY
    assert secrets.discord_token is not None
    assert secrets.discord_token.get_secret_value() == "discord-from-environment"  # env wins
    shown = repr(secrets) + str(secrets) + secrets.model_dump_json()
    assert FAKE_KEY not in shown and "discord-from" not in shown


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("lipcast.test.redact")
    logger.addFilter(RedactSecrets([FAKE_KEY]))
    with caplog.at_level(logging.INFO, logger="lipcast.test.redact"):
        logger.info("calling with key %s", FAKE_KEY)
        try:
            raise RuntimeError(f"bad key {FAKE_KEY}")
        except RuntimeError:
            logger.exception("failed")
    text = caplog.text
    assert FAKE_KEY not in text
    assert "calling with key ***" in text


def test_doctor_reports_without_showing_secrets(tmp_path: Path) -> None:
    env = dict(
        os.environ, OPENAI_API_KEY=FAKE_KEY, LIPCAST_AMQP_URL="amqp://u:hunter2pass@127.0.0.1/"
    )
    result = subprocess.run(
        [sys.executable, "-m", "lipcast", "doctor"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert FAKE_KEY not in output and "hunter2pass" not in output
    assert "OPENAI_API_KEY" in output and "set" in output
    assert "tts.espeak" in output
    assert "broker" in output and "amqp://u@127.0.0.1/" in output  # the URL, password removed
    assert "Traceback" not in output


def test_mypy_checks_the_tests_with_the_packages() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    checked = set(project["tool"]["mypy"]["packages"])
    packages = {
        path.parent.name for path in ROOT.glob("*/__init__.py") if path.parent.name != "build"
    }
    assert packages <= checked, f"not type-checked: {sorted(packages - checked)}"
    assert "tests" in checked


def test_the_readmes_test_command_installs_every_extra_the_tests_use() -> None:
    import re

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = set(project["project"]["optional-dependencies"])
    test_command = r'pip install (?:-q )?-e "\.\[([a-z0-9,]+)\]" && \.venv/bin/python -m pytest'
    for where in ("README.md", ".ci/run"):
        command = re.search(test_command, (ROOT / where).read_text(encoding="utf-8"))
        assert command is not None, f"{where}: the test command"
        assert set(command.group(1).split(",")) == extras, where


def test_routes_that_join_become_the_voice_features_channels() -> None:
    from lipcast.config import Secrets
    from lipcast.wiring import build_voice_feature

    routes = [
        {"platform": "discord", "voice": True, "channel": "920000000000000050", "join": True},
        {"platform": "discord", "voice": True, "channel": "920000000000000051"},
    ]
    settings = parse_settings({"routes": routes}, source="bot.toml")
    feature = build_voice_feature(settings, Secrets())
    assert feature.options.auto_join == (920000000000000050,)
