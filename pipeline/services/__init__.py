"""The model services the conversation and the workers call: the language model (``llm``),
text-to-speech (``tts``), and the OpenAI-compatible endpoint they share (``openai_client``)."""
