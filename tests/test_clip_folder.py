"""What lipcast keeps on disk: state in the user's data folder, a bounded clip folder."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from lipcast.clip_folder import ClipFolderLimits, prune_clips
from lipcast.config import load_settings


def _clip(folder: Path, name: str, size: int, age_s: float) -> Path:
    path = folder / name
    path.write_bytes(b"\0" * size)
    stamp = 1_700_000_000 - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_the_oldest_clips_go_beyond_the_count(tmp_path: Path) -> None:
    clips = [_clip(tmp_path, f"t{n:010x}-00.mp4", 10, age_s=100 - n) for n in range(6)]
    removed = prune_clips(tmp_path, ClipFolderLimits(max_clips=4, max_bytes=10_000))
    assert removed == clips[:2]
    assert sorted(tmp_path.iterdir()) == clips[2:]


def test_the_oldest_clips_go_beyond_the_size(tmp_path: Path) -> None:
    clips = [_clip(tmp_path, f"t{n:010x}-01.mp4", 400, age_s=100 - n) for n in range(5)]
    prune_clips(tmp_path, ClipFolderLimits(max_clips=100, max_bytes=1000))
    assert sorted(tmp_path.iterdir()) == clips[3:]


def test_files_lipcast_did_not_write_are_never_deleted(tmp_path: Path) -> None:
    mine = [
        _clip(tmp_path, name, 500, age_s=1000)
        for name in ("holiday.mp4", "notes.txt", "t0123456789-00.mp4.part", "T0123456789A-00.mp4")
    ]
    newest = _clip(tmp_path, "tabcdef0123-00.mp4", 500, age_s=0)
    prune_clips(tmp_path, ClipFolderLimits(max_clips=1, max_bytes=1))
    assert sorted(tmp_path.iterdir()) == sorted(mine)  # even the newest clip went, theirs stayed
    assert not newest.exists()


def test_state_lives_in_the_users_data_folder_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sys.platform != "linux":
        pytest.skip("XDG_DATA_HOME is how Linux names the data folder")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path / "..")
    settings = load_settings(None)
    assert settings.memory.path == tmp_path / "data" / "lipcast" / "memory.sqlite3"
    assert settings.output.dir == tmp_path / "data" / "lipcast" / "clips"


async def test_lipcast_run_leaves_the_folder_it_runs_from_as_it_was(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "LIPCAST"))}
    env["XDG_DATA_HOME"] = str(data)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lipcast",
        "run",
        "--no-overlay",
        "--user",
        "ada",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=checkout,
        env=env,
    )
    stdout, stderr = await asyncio.wait_for(
        process.communicate(b"Hello there, nice stream.\nbob: and hi from bob too\n/quit\n"), 120
    )
    assert process.returncode == 0, stderr.decode()
    assert await asyncio.to_thread(lambda: list(checkout.iterdir())) == []
    clips = await asyncio.to_thread(lambda: sorted((data / "lipcast" / "clips").glob("*.mp4")))
    assert len(clips) >= 2, stdout.decode()
    assert await asyncio.to_thread((data / "lipcast" / "memory.sqlite3").exists)


async def test_the_clip_folder_sink_keeps_only_the_newest_clips(tmp_path: Path) -> None:
    import io

    from lipcast.commands.run import FolderSink
    from pipeline.clips import Clip, TurnInfo
    from tests.conversation_support import say

    sink = FolderSink(
        tmp_path, out=io.StringIO(), limits=ClipFolderLimits(max_clips=2, max_bytes=10_000)
    )
    for n in range(4):
        turn = TurnInfo(
            turn_id=f"t{n:010x}", utterance=say("hi"), viewer_name="ada", language="en",
            mode="reply",
        )  # fmt: skip
        clip = Clip(
            turn=turn, seq=0, text="Hello!", media=b"MP4", content_type="video/mp4",
            duration_s=1.0, timings={},
        )  # fmt: skip
        assert await sink.clip_ready(clip)
        await asyncio.sleep(0.01)  # distinct modification times
    left = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.iterdir()))
    assert left == ["t0000000002-00.mp4", "t0000000003-00.mp4"]
