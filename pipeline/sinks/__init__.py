"""Where a conversation's clips go, each sink on its own queue.

``queued`` wraps any :class:`~pipeline.conversation.turns.ClipSink` in a bounded queue and a
task of its own, so one slow or stalled sink (a Discord upload, a full disk) never delays
another sink or the next turn; ``replies`` sends each finished turn back to the platform it
came from. The overlay and clip-folder sinks live with what they drive (``lipcast run``).
"""
