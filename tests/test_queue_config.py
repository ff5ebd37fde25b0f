"""[queue] and [worker] settings, the broker URL secret, `lipcast worker` refusing bad set-ups."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from lipcast.commands import COMMANDS
from lipcast.config import Secrets, parse_settings
from lipcast.wiring import build_job_queue, job_queue_options
from pipeline.errors import ConfigError
from pipeline.jobs.queue.memory import MemoryJobQueue
from pipeline.jobs.queue.rabbitmq import RabbitJobQueue

ROOT = Path(__file__).resolve().parent.parent


def test_the_defaults_are_an_embedded_memory_queue() -> None:
    settings = parse_settings({}, source="defaults")
    assert settings.queue.backend == "memory"
    assert "@" in settings.queue.url and ":guest@" not in settings.queue.url
    assert isinstance(build_job_queue(settings, Secrets()), MemoryJobQueue)
    assert "worker" in COMMANDS


def test_the_secret_url_wins_over_the_configured_one() -> None:
    settings = parse_settings(
        {"queue": {"backend": "rabbitmq", "url": "amqp://lipcast@broker.lan:5672/", "name": "q"}},
        source="bot.toml",
    )
    secrets = Secrets(amqp_url=SecretStr("amqp://lipcast:s3cret@broker.lan:5672/"))
    options = job_queue_options(settings, secrets, connection_name="x")
    assert options.url == "amqp://lipcast:s3cret@broker.lan:5672/" and options.name == "q"
    assert job_queue_options(settings, Secrets(), connection_name="x").url.endswith(
        "broker.lan:5672/"
    )
    assert isinstance(build_job_queue(settings, secrets), RabbitJobQueue)


def test_a_password_in_bot_toml_is_refused_without_being_repeated() -> None:
    raw = {"queue": {"url": "amqp://lipcast:s3cret@broker.lan:5672/"}}
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw, source="bot.toml")
    message = str(caught.value)
    assert "queue.url" in message and "LIPCAST_AMQP_URL" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("queue", "backend", "kafka"),
        ("queue", "url", "http://broker/"),
        ("queue", "max_priority", 10),
        ("queue", "max_attempts", 0),
        ("worker", "prefetch", 0),
    ],
)
def test_bad_values_name_their_key(section: str, key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        parse_settings({section: {key: value}}, source="bot.toml")


def test_lipcast_worker_explains_that_it_needs_the_rabbitmq_backend(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text('[queue]\nbackend = "memory"\n')
    done = subprocess.run(
        [sys.executable, "-m", "lipcast", "-c", str(config), "worker"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2
    assert 'backend = "rabbitmq"' in done.stderr
