"""Find, read and validate persona folders.

A persona is a folder holding ``persona.toml``, the prompt template it names and its avatar
image. The built-in personas live next to this module; a user's persona is any folder with a
``persona.toml`` (given by path, or found in the ``personas.dirs`` of bot.toml).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lipcast_base.errors import PersonaError
from lipcast_base.validation import describe_validation_error

BUILTIN_DIR = Path(__file__).resolve().parent
PERSONA_FILE = "persona.toml"
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")

Color = Annotated[str, Field(pattern=_HEX_COLOR.pattern, description="#rrggbb")]
Point = tuple[int, int]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AvatarSpec(_Strict):
    """The avatar image and, for drawn avatars, where its features are (pixels of the image)."""

    image: str = "avatar.png"
    background: Color = "#00b140"  # behind a transparent avatar in the MP4 (chroma green)
    mouth: Point | None = None  # centre of the closed mouth
    mouth_width: int | None = Field(default=None, gt=0)  # corner to corner
    eyes: tuple[Point, Point] | None = None  # centres of the left and right eye
    eye_size: Point | None = None  # width and height of one open eye
    skin: Color | None = None  # skin around mouth and eyes (eyelids are drawn in it)
    lip: Color | None = None

    @model_validator(mode="after")
    def _geometry_complete(self) -> AvatarSpec:
        given = {
            "mouth": self.mouth,
            "mouth_width": self.mouth_width,
            "eyes": self.eyes,
            "eye_size": self.eye_size,
        }
        present = [key for key, value in given.items() if value is not None]
        if present and len(present) != len(given):
            missing = [key for key, value in given.items() if value is None]
            raise ValueError(
                f"avatar geometry is partial: give all of mouth, mouth_width, eyes and eye_size "
                f"(missing {', '.join(missing)}) or none of them to detect the face"
            )
        return self

    @property
    def has_geometry(self) -> bool:
        return self.mouth is not None


VoiceChoice = str | dict[str, str]  # one voice, or one per language


class ReplySpec(_Strict):
    """How long the persona's replies are."""

    max_sentences: int = Field(default=3, ge=1, le=20)
    max_chars: int = Field(default=400, ge=20, le=4000)


class LLMSpec(_Strict):
    """Per-persona overrides of the ``[llm]`` settings in bot.toml."""

    model: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=16, le=8192)


class SafetySpec(_Strict):
    """Words and phrases this persona must never say (matched in every disguise), and how it
    changes the built-in list."""

    blocked_phrases: list[str] = Field(default_factory=list)
    default_lists: list[str] | None = None  # None: bot.toml's [safety] default_lists
    unblocked: list[str] = Field(default_factory=list)  # built-in entries it may say
    allowed_words: list[str] = Field(default_factory=list)  # words never blocked for it


class PersonaFile(_Strict):
    """The schema of persona.toml."""

    name: str = Field(min_length=1, max_length=60)
    description: str = ""
    language: str = "en"
    languages: list[str] = Field(default_factory=list)  # languages it may be asked to speak
    style: str = ""
    prompt: str = "prompt.md"
    voice: dict[str, VoiceChoice] = Field(default_factory=dict)  # per TTS backend
    reply: ReplySpec = ReplySpec()
    llm: LLMSpec = LLMSpec()
    safety: SafetySpec = SafetySpec()
    avatar: AvatarSpec = AvatarSpec()

    @field_validator("language")
    @classmethod
    def _check_language(cls, value: str) -> str:
        if not _LANGUAGE.match(value):
            raise ValueError("expected a 2- or 3-letter ISO 639 language code such as 'en'")
        return value

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, value: list[str]) -> list[str]:
        for code in value:
            if not _LANGUAGE.match(code):
                raise ValueError(f"{code!r} is not a 2- or 3-letter ISO 639 language code")
        return value


class Persona(_Strict):
    """A loaded persona, with the language it speaks in this session."""

    id: str  # the folder name, used on the command line
    folder: Path
    spec: PersonaFile
    language: str
    prompt_template: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def avatar_path(self) -> Path:
        return self.folder / self.spec.avatar.image

    def voice_for(self, backend: str) -> str | None:
        """The voice id this persona uses with a TTS backend, in its current language."""
        choice = self.spec.voice.get(backend)
        if choice is None or isinstance(choice, str):
            return choice
        return choice.get(self.language)


def builtin_persona_dir() -> Path:
    return BUILTIN_DIR


def _candidate_dirs(search_dirs: list[Path]) -> list[Path]:
    return [*search_dirs, BUILTIN_DIR]


def _resolve(name_or_path: str, search_dirs: list[Path]) -> Path:
    as_path = Path(name_or_path).expanduser()
    if (as_path / PERSONA_FILE).is_file():
        return as_path.resolve()
    if "/" not in name_or_path and "\\" not in name_or_path and name_or_path not in ("", ".", ".."):
        for folder in _candidate_dirs(search_dirs):
            if (folder / name_or_path / PERSONA_FILE).is_file():
                return (folder / name_or_path).resolve()
    known = ", ".join(p.id for p in list_personas(search_dirs)) or "none"
    raise PersonaError(
        f"unknown persona {name_or_path!r}: give a persona name ({known}) "
        f"or the path of a folder holding {PERSONA_FILE}"
    )


def read_persona_file(folder: Path) -> PersonaFile:
    """Parse and validate ``folder/persona.toml``."""
    path = folder / PERSONA_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise PersonaError(f"{path}: cannot be read: {err.strerror or err}") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise PersonaError(f"{path}: not valid TOML: {err}") from err
    try:
        return PersonaFile.model_validate(raw)
    except ValidationError as err:
        raise PersonaError(describe_validation_error(err, source=str(path))) from err


def _check_image(path: Path) -> None:
    """Refuse a missing avatar, or one whose header no image format recognises."""
    if not path.is_file():
        raise PersonaError(f"{path}: the persona's avatar image is missing")
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise PersonaError(
            f"{path}: the avatar is not a readable image (PNG, JPEG or WebP expected)"
        ) from err


def load_persona(
    name_or_path: str, *, language: str | None = None, search_dirs: list[Path] | None = None
) -> Persona:
    """Load a persona by name or folder, speaking ``language`` (default: its own)."""
    folder = _resolve(name_or_path, search_dirs or [])
    spec = read_persona_file(folder)
    chosen = language or spec.language
    allowed = spec.languages or [spec.language]
    if chosen not in allowed:
        raise PersonaError(
            f"persona {folder.name!r} does not speak {chosen!r}: choose one of {', '.join(allowed)}"
        )
    prompt_path = folder / spec.prompt
    try:
        prompt = prompt_path.read_text(encoding="utf-8")
    except OSError as err:
        raise PersonaError(f"{prompt_path}: the persona's prompt cannot be read: {err}") from err
    _check_image(folder / spec.avatar.image)
    return Persona(
        id=folder.name, folder=folder, spec=spec, language=chosen, prompt_template=prompt
    )


def scan_personas(
    search_dirs: list[Path] | None = None,
) -> list[tuple[Path, Persona | PersonaError]]:
    """Every persona folder in the search folders and the built-in ones, loaded or not.

    A name found in an earlier folder hides the same name later (a user's folder wins over the
    built-in one). Broken personas are returned with their error so they can be reported.
    """
    found: dict[str, tuple[Path, Persona | PersonaError]] = {}
    for folder in _candidate_dirs(search_dirs or []):
        if not folder.is_dir():
            continue
        for child in sorted(folder.iterdir()):
            if child.name in found or not (child / PERSONA_FILE).is_file():
                continue
            try:
                found[child.name] = (child, load_persona(str(child)))
            except PersonaError as err:
                found[child.name] = (child, err)
    return list(found.values())


def list_personas(search_dirs: list[Path] | None = None) -> list[Persona]:
    """The personas that load (see :func:`scan_personas` for the broken ones too)."""
    return [result for _, result in scan_personas(search_dirs) if isinstance(result, Persona)]
