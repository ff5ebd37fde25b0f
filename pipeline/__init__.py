"""The conversation pipeline: utterances, backends (LLM, STT, TTS), jobs and the render worker."""
