"""The slash commands, on discord.py's command tree.

``/ask question`` asks the persona; ``/persona name [language]`` switches the persona of this
place (the choices are the personas lipcast has; a teacher takes the language to teach),
``/language code`` sets the viewer's language, ``/forget`` erases what the persona remembers of
the viewer; moderators' ``/skip``, ``/clear``, ``/pause`` and ``/resume``. Discord shows the
moderator commands only to members who may manage messages (the listener checks again).

The callbacks only hand over to a :class:`SlashHandler` (the adapter), which answers within
Discord's three seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import discord
from discord import app_commands

from pipeline.utterance import ControlName

MODERATOR_COMMANDS: dict[str, str] = {
    "skip": "Stop the answer being given now",
    "clear": "Drop the questions waiting for an answer",
    "pause": "Stop answering until /resume",
    "resume": "Answer questions again",
}
MAX_CHOICES = 25  # Discord's limit on an option's choices


@dataclass(frozen=True, kw_only=True)
class PersonaChoice:
    """A persona ``/persona`` offers: its folder name and how people know it."""

    id: str
    label: str
    languages: tuple[str, ...] = ()  # what it can speak (a teacher: what it can teach)


class SlashHandler(Protocol):
    """What the commands call: the adapter."""

    async def ask(self, interaction: discord.Interaction[discord.Client], question: str) -> None:
        """``/ask``: a question for the persona."""
        ...

    async def command(
        self, interaction: discord.Interaction[discord.Client], name: ControlName, argument: str
    ) -> None:
        """Every other command, as the listener's :class:`~pipeline.utterance.Control`."""
        ...


def add_commands(
    tree: app_commands.CommandTree[discord.Client],
    handler: SlashHandler,
    personas: Sequence[PersonaChoice] = (),
) -> list[str]:
    """Put lipcast's slash commands on ``tree`` (global commands; syncing copies them to the
    configured servers). Returns their names."""

    @app_commands.describe(question="What you want to ask")
    async def ask(interaction: discord.Interaction[discord.Client], question: str) -> None:
        await handler.ask(interaction, question)

    @app_commands.describe(name="Who should speak here", language="The language to teach")
    async def persona(
        interaction: discord.Interaction[discord.Client],
        name: str,
        language: app_commands.Range[str, 2, 3] | None = None,
    ) -> None:
        argument = f"{name} {language}" if language else name
        await handler.command(interaction, "persona", argument)

    known = {choice.id: choice.languages for choice in personas}

    async def languages_of_persona(
        interaction: discord.Interaction[discord.Client], current: str
    ) -> list[app_commands.Choice[str]]:
        # The languages of the persona chosen in the same command, else of every persona.
        chosen = getattr(interaction.namespace, "name", None)
        codes = known.get(chosen, ()) if chosen else ()
        return _language_choices(codes or _all_languages(personas), current)

    if personas:
        persona = app_commands.choices(
            name=[
                app_commands.Choice(name=choice.label[:100], value=choice.id)
                for choice in personas[:MAX_CHOICES]
            ]
        )(persona)

    @app_commands.describe(code="A language code such as en, de or fr")
    async def language(
        interaction: discord.Interaction[discord.Client], code: app_commands.Range[str, 2, 3]
    ) -> None:
        await handler.command(interaction, "language", code)

    async def forget(interaction: discord.Interaction[discord.Client]) -> None:
        await handler.command(interaction, "forget", "")

    switch: app_commands.Command[app_commands.Group, ..., None] = app_commands.Command(
        name="persona", description="Switch the persona who answers here", callback=persona
    )
    switch.default_permissions = discord.Permissions(manage_messages=True)
    switch.autocomplete("language")(languages_of_persona)

    async def any_language(
        interaction: discord.Interaction[discord.Client], current: str
    ) -> list[app_commands.Choice[str]]:
        return _language_choices(_all_languages(personas), current)

    speak: app_commands.Command[app_commands.Group, ..., None] = app_commands.Command(
        name="language", description="The language the persona speaks with you", callback=language
    )
    speak.autocomplete("code")(any_language)
    commands: list[app_commands.Command[app_commands.Group, ..., None]] = [
        app_commands.Command(name="ask", description="Ask the persona", callback=ask),
        switch,
        speak,
        app_commands.Command(
            name="forget", description="Make the persona forget what you said", callback=forget
        ),
    ]
    for name, description in MODERATOR_COMMANDS.items():
        commands.append(_moderator_command(handler, name, description))
    for command in commands:
        tree.add_command(command)
    return [command.name for command in commands]


def _all_languages(personas: Sequence[PersonaChoice]) -> tuple[str, ...]:
    return tuple(sorted({code for choice in personas for code in choice.languages}))


def _language_choices(codes: Sequence[str], current: str) -> list[app_commands.Choice[str]]:
    """The codes that start with what the viewer typed so far, as Discord's suggestions."""
    typed = current.strip().lower()
    return [app_commands.Choice(name=code, value=code) for code in codes if code.startswith(typed)][
        :MAX_CHOICES
    ]


def _moderator_command(
    handler: SlashHandler, name: str, description: str
) -> app_commands.Command[app_commands.Group, ..., None]:
    control: ControlName = name  # type: ignore[assignment]  # one of MODERATOR_COMMANDS

    async def run(interaction: discord.Interaction[discord.Client]) -> None:
        await handler.command(interaction, control, "")

    command: app_commands.Command[app_commands.Group, ..., None] = app_commands.Command(
        name=name, description=description, callback=run
    )
    command.default_permissions = discord.Permissions(manage_messages=True)
    return command
