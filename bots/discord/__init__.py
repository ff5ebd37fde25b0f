"""The Discord adapter: slash commands, mentions, replies and direct messages in; the persona's
answer out as text plus one lip-synced MP4.

* :mod:`bots.discord.adapter` — :class:`~bots.discord.adapter.DiscordAdapter`, the
  :class:`~bots.base.ChatAdapter` that runs a discord.py client;
* :mod:`bots.discord.commands` — the slash commands (``/ask``, ``/persona``, ...);
* :mod:`bots.discord.messages` — platform events to utterances, and message splitting;
* :mod:`bots.discord.delivery` — posting a reply: text, then the clip within the upload limit;
* :mod:`bots.discord.invite` — the permissions and scopes lipcast asks for;
* :mod:`bots.discord.features` — the extension point voice plugs into.

Importing this package imports nothing of discord.py; its modules do, and only the adapter
table (:data:`bots.ADAPTERS`) loads them, when ``[discord] enabled`` is set.
"""
