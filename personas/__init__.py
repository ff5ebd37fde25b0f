"""Persona definitions (a folder each: persona.toml, a prompt template, avatar assets)."""

from personas.loader import (
    AvatarSpec,
    Persona,
    builtin_persona_dir,
    list_personas,
    load_persona,
)

__all__ = ["AvatarSpec", "Persona", "builtin_persona_dir", "list_personas", "load_persona"]
