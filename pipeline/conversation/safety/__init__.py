"""On-air safety: what the persona would say is checked before a voice ever says it.

Three checks, cheap enough to run on every sentence before text-to-speech, and layers a
streamer can add:

* **Blocked phrases** (:class:`PhraseMatcher`): the default list (slurs and the worst insults
  in English, German, French and Spanish, from glin-profanity's dictionaries), the streamer's
  and the persona's own phrases, matched on the viewer's message and on every sentence of the
  reply, in every disguise: look-alike letters of any script, styled and full-width letters,
  invisible characters, leetspeak, letters spread out by any separator, run together, stretched,
  inflected, backwards, or spelled with letter names (:mod:`.folding`, :mod:`.matcher`).
* **Secrets and private details** (:class:`SecretGuard`): no run of 10 characters of an API
  key, token, password or configured private detail is said, in any spoken form (:mod:`.secrets`).
* **Moderation layers** (:class:`ModerationLayer`): the OpenAI moderation endpoint
  (:class:`OpenAIModeration`), the Twitch channel's AutoMod, run after the local checks.

A sentence that fails is never rendered; :class:`SafetyGuard` says why, and the conversation
logs the event for the moderators on the ``lipcast.moderation`` logger.
"""

from pipeline.conversation.safety.folding import fold
from pipeline.conversation.safety.guard import SafetyGuard, blocked_phrases, moderation_log
from pipeline.conversation.safety.layers import ModerationLayer, ModerationResult, OpenAIModeration
from pipeline.conversation.safety.lexicon import DEFAULT_LANGUAGES, default_phrases, load_word_data
from pipeline.conversation.safety.matcher import PhraseMatcher
from pipeline.conversation.safety.secrets import SecretGuard, secrets_from_environment
from pipeline.conversation.safety.verdict import ALLOWED, Verdict

__all__ = [
    "ALLOWED",
    "DEFAULT_LANGUAGES",
    "ModerationLayer",
    "ModerationResult",
    "OpenAIModeration",
    "PhraseMatcher",
    "SafetyGuard",
    "SecretGuard",
    "Verdict",
    "blocked_phrases",
    "default_phrases",
    "fold",
    "load_word_data",
    "moderation_log",
    "secrets_from_environment",
]
