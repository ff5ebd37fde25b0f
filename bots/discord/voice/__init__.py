"""Discord voice channels as a spoken conversation, under DAVE end-to-end encryption.

* :mod:`~bots.discord.voice.rtp` and :mod:`~bots.discord.voice.receive`: lipcast's own
  receiver (discord.py sends but does not receive);
* :mod:`~bots.discord.voice.playback`: the persona's speech as a discord.py ``AudioSource``,
  with barge-in;
* :mod:`~bots.discord.voice.feature`: ``/join`` and ``/leave``, listening, transcribing and
  speaking, as a feature of the Discord adapter;
* :mod:`~bots.discord.voice.messages`: Discord voice messages to text.

Nothing here imports discord.py at import time of the package.
"""
