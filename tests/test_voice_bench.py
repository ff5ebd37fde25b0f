"""``lipcast bench voice`` runs the whole voice path and prints the figures the issue names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_voice_prints_its_figures(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lipcast", "bench", "voice", "--sentences", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    for key in (
        "end_of_speech_to_first_audio_s",
        "vad_s",
        "stt_s",
        "llm_first_sentence_s",
        "tts_s",
        "wer",
        "barge_in_s",
    ):
        assert isinstance(figures[key], float), key
    assert figures["wer"] <= 0.2
    assert figures["per_sentence"][0]["transcript"]
