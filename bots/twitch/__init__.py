"""The Twitch adapter: EventSub chat in, replies in chat, the persona's clips in the overlay.

* :mod:`bots.twitch.adapter` — :class:`~bots.twitch.adapter.TwitchAdapter`, on twitchio 3.
* :mod:`bots.twitch.triggers` — which chat messages and redemptions the persona answers.
* :mod:`bots.twitch.pacing` — replies split at Twitch's 500 characters and paced to its limits.
* :mod:`bots.twitch.auth` — the scopes lipcast asks for and the token file
  ``lipcast twitch auth`` writes.
* :mod:`bots.twitch.automod` — the channel's own AutoMod as a check on what the persona says.

Only the adapter and AutoMod modules import twitchio, and only when they are used.
"""
