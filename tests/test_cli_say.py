"""``lipcast say`` as a streamer runs it: a real process, real files, bad input refused cleanly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.media import probe

ASSETS = Path(__file__).parent / "assets"
IN_CI = os.environ.get("CI") == "true"


def lipcast(
    *args: str, cwd: Path, network: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "lipcast", *args]
    if not network:
        command = ["unshare", "--net", *command]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "LIPCAST"))}
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=120, env=env, input=stdin
    )


def network_can_be_cut() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


def test_say_renders_a_browser_playable_clip_with_the_network_cut(tmp_path: Path) -> None:
    if not network_can_be_cut():
        if IN_CI:
            pytest.fail("CI must be able to cut the network with `unshare --net`")
        pytest.skip("unshare --net is not permitted here")
    result = lipcast(
        "say", "Hello chat, welcome to the stream", "-o", "hello.mp4", cwd=tmp_path, network=False
    )
    assert result.returncode == 0, result.stderr
    info = probe(tmp_path / "hello.mp4")
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert info.fps == 25
    assert info.width >= 512 and info.height >= 512
    assert abs(info.video_seconds - info.audio_seconds) <= 1 / 25
    assert info.audio_seconds > 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["hello.mp4"]


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("de", "Guten Tag! Heute lernen wir, wie man im Café einen Kaffee bestellt."),
        ("fr", "Bonjour à tous ! Aujourd'hui, nous apprenons à commander un café."),
        ("es", "¡Hola a todos! Hoy aprendemos a pedir un café en el bar."),
    ],
)
def test_teacher_speaks_german_french_and_spanish(tmp_path: Path, language: str, text: str) -> None:
    out = tmp_path / f"teacher-{language}.mp4"
    result = lipcast(
        "say", text, "--persona", "teacher", "--language", language, "-o", str(out), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert f"({language})" in result.stdout
    info = probe(out)
    assert info.audio_seconds > 2.0
    assert abs(info.video_seconds - info.audio_seconds) <= 1 / 25


def test_say_reads_standard_input(tmp_path: Path) -> None:
    result = lipcast("say", "-", "-o", "stdin.mp4", cwd=tmp_path, stdin="Reading from a pipe.\n")
    assert result.returncode == 0, result.stderr
    assert probe(tmp_path / "stdin.mp4").audio_seconds > 0.5


def _persona(folder: Path, image: Path | None = None, image_bytes: bytes | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "persona.toml").write_text('name = "Test"\nlanguage = "en"\n')
    (folder / "prompt.md").write_text("You are {persona_name}.\n")
    if image is not None:
        shutil.copy(image, folder / "avatar.png")
    if image_bytes is not None:
        (folder / "avatar.png").write_bytes(image_bytes)
    return folder


def _faceless_png(path: Path) -> Path:
    gradient = np.tile(np.linspace(0, 255, 512, dtype=np.uint8), (512, 1))
    Image.fromarray(np.stack([gradient] * 3, axis=-1)).save(path)
    return path


def test_a_users_photo_avatar_works_without_geometry(tmp_path: Path) -> None:
    persona = _persona(tmp_path / "me", image=ASSETS / "face-astronaut.png")
    result = lipcast(
        "say", "This is my own face.", "-p", str(persona), "-o", "me.mp4", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert probe(tmp_path / "me.mp4").frames > 10


BAD_INPUTS = {
    "empty text": (["say", ""], "empty"),
    "blank text": (["say", "   \n  "], "empty"),
    "50,000 characters": (["say", "word " * 10_000], "2,000"),
    "control characters": (["say", "hello\x07world"], "U+0007"),
    "zero-width characters": (["say", "hel\u200blo"], "U+200B"),
    "unknown persona": (["say", "hi", "--persona", "nobody"], "unknown persona 'nobody'"),
    "language the persona lacks": (["say", "hi", "--language", "xx"], "does not speak 'xx'"),
    "unwritable output path": (
        ["say", "hi", "-o", "/proc/lipcast-test.mp4"],
        "/proc/lipcast-test.mp4",
    ),
    "missing output folder": (["say", "hi", "-o", "no/such/dir/out.mp4"], "does not exist"),
    "output not mp4": (["say", "hi", "-o", "out.avi"], ".mp4"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line(tmp_path: Path, case: str) -> None:
    args, expected = BAD_INPUTS[case]
    result = lipcast(*args, cwd=tmp_path)
    assert_refused(result, expected)
    assert list(tmp_path.iterdir()) == []


def assert_refused(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lipcast: error: ")
    assert expected in lines[0]


def test_unreadable_avatar_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    persona = _persona(tmp_path / "broken", image_bytes=b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "out.mp4").write_bytes(b"an older clip")
    result = lipcast("say", "hi", "-p", str(persona), "-o", "out.mp4", cwd=tmp_path)
    assert_refused(result, "not a readable image")
    assert (tmp_path / "out.mp4").read_bytes() == b"an older clip"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "out.mp4"]


def test_faceless_avatar_is_refused(tmp_path: Path) -> None:
    persona = _persona(tmp_path / "faceless")
    _faceless_png(persona / "avatar.png")
    result = lipcast("say", "hi", "-p", str(persona), "-o", "out.mp4", cwd=tmp_path)
    assert_refused(result, "no face found")
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[tts\nbackend = 1", "not valid TOML"),
        ('[tts]\nbackend = "espaek"', "tts.backend = 'espaek'"),
        ('[tts]\nbakend = "espeak"', "unknown key 'tts.bakend'"),
        ("[render]\nfps = 1000", "render.fps = 1000"),
        ('[tts.openai]\napi_key = "sk-abc"', "secrets never go in bot.toml"),
    ],
)
def test_malformed_bot_toml_is_one_clear_line(tmp_path: Path, toml: str, expected: str) -> None:
    (tmp_path / "bot.toml").write_text(toml)
    result = lipcast("say", "hi", "-o", "out.mp4", cwd=tmp_path)
    assert_refused(result, expected)
    assert "bot.toml" in result.stderr
    assert "sk-abc" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bot.toml"]


def test_personas_lists_the_broken_ones_with_their_reason(tmp_path: Path) -> None:
    _persona(tmp_path / "mine" / "garbled", image_bytes=b"not an image at all")
    _persona(tmp_path / "mine" / "photo", image=ASSETS / "face-astronaut.png")
    (tmp_path / "bot.toml").write_text('[persona]\ndirs = ["mine"]\n')
    result = lipcast("personas", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [
        line[2:] for line in result.stdout.splitlines() if line[:1] in "* " and line[2:3] != " "
    ]
    lines = {row.split()[0]: row for row in rows}
    assert "BROKEN" in lines["garbled"] and "not a readable image" in lines["garbled"]
    assert "BROKEN" not in lines["photo"]
    assert {"cohost", "teacher"} <= set(lines)


@pytest.mark.parametrize(
    "args",
    [
        ["say", "hi", "-o", "out.mp4", "-c", "my.toml"],
        ["say", "hi", "--config", "my.toml", "-o", "out.mp4", "-v"],
        ["-c", "my.toml", "say", "hi", "-o", "out.mp4"],
    ],
)
def test_config_and_verbose_flags_work_before_or_after_the_command(
    tmp_path: Path, args: list[str]
) -> None:
    (tmp_path / "my.toml").write_text('[tts]\nbackend = "espaek"\n')
    result = lipcast(*args, cwd=tmp_path)
    assert_refused(result, "my.toml: tts.backend = 'espaek'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.toml"]


def test_verbose_after_the_command_logs_more(tmp_path: Path) -> None:
    quiet = lipcast("personas", cwd=tmp_path)
    loud = lipcast("personas", "-vv", cwd=tmp_path)
    assert quiet.returncode == loud.returncode == 0, loud.stderr
    assert "DEBUG" in loud.stderr and "DEBUG" not in quiet.stderr


LONG_TEXT = " ".join(
    f"This is sentence number {n} of a long announcement for the stream." for n in range(28)
)


async def test_a_cancelled_render_stops_at_the_next_frame_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    import asyncio

    from lipcast.config import Settings, load_secrets
    from lipcast.wiring import build_clip_renderer
    from personas import load_persona

    renderer = build_clip_renderer(Settings(), load_secrets(None))
    frames: list[tuple[int, int]] = []
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def progress(done: int, total: int) -> None:
        frames.append((done, total))
        if done == 25:
            loop.call_soon_threadsafe(started.set)

    out = tmp_path / "long.mp4"
    render = asyncio.create_task(
        renderer.render(LONG_TEXT, load_persona("cohost"), path=out, progress=progress)
    )
    await asyncio.wait_for(started.wait(), 60)
    render.cancel()
    with pytest.raises(asyncio.CancelledError):
        await render
    stopped_at = len(frames)
    await asyncio.sleep(0.3)
    await renderer.tts.aclose()
    assert len(frames) == stopped_at  # the render thread is done when render() returns
    done, total = frames[-1]
    assert done < total // 4  # stopped near where it was cancelled, not after the render
    left = await asyncio.to_thread(lambda: list(tmp_path.iterdir()))
    assert left == []  # neither the clip nor its partial file


def test_ctrl_c_during_a_long_say_exits_130_and_leaves_no_file(tmp_path: Path) -> None:
    import signal
    import time

    command = [sys.executable, "-m", "lipcast", "say", LONG_TEXT, "-o", "long.mp4"]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # Into the frames: the clip's partial file appears once encoding has begun.
    deadline = time.monotonic() + 60
    while not any(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the render ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip() == "lipcast: interrupted"
    assert list(tmp_path.iterdir()) == []
