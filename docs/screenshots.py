"""Make the README's overlay pictures: the persona idle and talking, over a stream scene.

Run by hand from the repository root (``.venv/bin/python docs/screenshots.py``); it needs
Chromium and Playwright, like the browser tests. The persona is the built-in cohost, drawn by
the real overlay page in headless Chromium from its real atlas, speaking a real eSpeak line;
the page's transparent screenshot is laid over a drawn game scene, as OBS composites it.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from lipcast.commands.overlay import publish_line, render_lines
from lipcast.config import Settings, load_secrets
from lipcast.wiring import build_clip_renderer, persona_atlas, persona_from_settings
from obs_overlay.server import OverlayServer

DOCS = Path(__file__).resolve().parent
SCENE = (1280, 720)
OVERLAY_PX = 420
LINE = "Welcome back, Ada! The final boss is next."


def scene() -> Image.Image:
    """A stand-in game scene: sky, hills, a path and a HUD, so transparency shows."""
    width, height = SCENE
    image = Image.new("RGB", SCENE)
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / height
        draw.line(
            [(0, y), (width, y)], fill=(int(40 + 90 * t), int(90 + 80 * t), int(170 - 40 * t))
        )
    draw.ellipse((-200, 380, 700, 900), fill=(58, 120, 70))
    draw.ellipse((400, 420, 1500, 1000), fill=(72, 140, 80))
    draw.polygon([(560, 720), (720, 720), (660, 470), (630, 470)], fill=(180, 150, 100))
    draw.ellipse((980, 80, 1100, 200), fill=(255, 236, 170))
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    hud = ImageDraw.Draw(image)
    hud.rounded_rectangle((24, 24, 340, 64), radius=10, fill=(20, 20, 30))
    hud.rectangle((34, 36, 250, 52), fill=(210, 60, 60))
    return image


def over_scene(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as shot:
        overlay = shot.convert("RGBA").resize((OVERLAY_PX, OVERLAY_PX), Image.Resampling.LANCZOS)
    picture = scene().convert("RGBA")
    picture.alpha_composite(overlay, (SCENE[0] - OVERLAY_PX - 24, SCENE[1] - OVERLAY_PX))
    return picture.convert("RGB")


async def main() -> None:
    from playwright.async_api import async_playwright

    settings = Settings()
    persona = persona_from_settings(settings, "cohost")
    atlas = persona_atlas(settings, persona)
    clips = build_clip_renderer(settings, load_secrets(None))
    lines = await render_lines(clips, persona, [LINE])
    await clips.tts.aclose()
    size = settings.render.size
    async with OverlayServer(port=0, atlas=atlas) as server:
        with tempfile.TemporaryDirectory(prefix="lipcast-docs-") as profile:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch_persistent_context(
                    profile,
                    executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                    args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"],
                    headless=True,
                    viewport={"width": size, "height": size},
                )
                page = browser.pages[0]
                await page.goto(server.url)
                await page.wait_for_function(
                    "() => window.lipcastOverlay && window.lipcastOverlay.state().persona"
                )
                await page.wait_for_timeout(300)
                idle = await page.screenshot(omit_background=True)
                await server.turn_started("docs-1", viewer="ada")
                await publish_line(server, turn_id="docs-1", seq=0, line=lines[0], viewer="ada")
                await page.wait_for_function(
                    "() => window.lipcastOverlay.log.some(e => e.event === 'first-frame')"
                )
                # A frame with the mouth well open: poll the drawn level.
                await page.wait_for_timeout(420)
                talking = await page.screenshot(omit_background=True)
                await browser.close()
    over_scene(idle).save(DOCS / "overlay-idle.png", optimize=True)
    over_scene(talking).save(DOCS / "overlay-talking.png", optimize=True)
    print(f"wrote {DOCS / 'overlay-idle.png'} and {DOCS / 'overlay-talking.png'}")


if __name__ == "__main__":
    asyncio.run(main())
