"""Real-browser test helpers: Debian's Chromium driven by Playwright (async API).

Playwright's own browser download (`playwright install`) cannot work on this project's machines,
so the tests launch the system Chromium that `.ci/browser` (run by `make test`) installs.

    from browser import artifact_path, check_accessibility, launch_chromium

    async with launch_chromium() as browser:
        page = await browser.new_page()
        await page.goto(url)
        await check_accessibility(page)
        await page.screenshot(path=artifact_path("page.png"))
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
DEFAULT_CHROMIUM = "/usr/bin/chromium"

#: Without the background-networking flags, Chromium's own connections (updates, sync, field
#: trials, ...) are refused by the machine's closed network, many at a time.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

#: Launching takes well under a second here; this only bounds a hung start.
LAUNCH_TIMEOUT_MS = 60_000


def chromium_executable() -> str:
    """The Chromium to drive: $MELDBOT_CHROMIUM, else Debian's /usr/bin/chromium."""
    return os.environ.get("MELDBOT_CHROMIUM", "").strip() or DEFAULT_CHROMIUM


@contextlib.asynccontextmanager
async def launch_chromium(*, extra_args: Sequence[str] = ()) -> AsyncIterator[Browser]:
    """A headless Chromium with a fresh, empty profile, closed on exit. Fails (never skips) when
    the executable is missing."""
    executable = chromium_executable()
    if not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
        pytest.fail(
            f"Chromium is not installed at {executable}: the browser tests need it. Run `make test` "
            "(it runs `bash .ci/browser`), or install it by hand with `apt-get update && "
            "apt-get install -y chromium`, or point MELDBOT_CHROMIUM at a Chromium executable. "
            "(`playwright install` cannot download a browser on these machines.)",
            pytrace=False,
        )
    args = list(CHROMIUM_FLAGS)
    with contextlib.suppress(OSError):
        # Playwright already passes --disable-dev-shm-usage on Linux; say so explicitly where a
        # small /dev/shm (a container's 64 MB) would otherwise crash the renderer.
        if shutil.disk_usage("/dev/shm").free < 1 << 30:
            args.append("--disable-dev-shm-usage")
    args.extend(extra_args)
    async with async_playwright() as playwright:
        # launch() starts every browser with a new, empty --user-data-dir and removes it on close.
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=args, timeout=LAUNCH_TIMEOUT_MS,
        )
        try:
            yield browser
        finally:
            await browser.close()


def artifact_path(name: str) -> Path:
    """Where a test keeps a file for people to look at (a screenshot): <repo>/test-artifacts/NAME.
    The folder is made on demand; it is ignored by git and removed by `make clean`."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ValueError(f"an artifact name must be a relative path inside test-artifacts/: {name!r}")
    path = ARTIFACTS / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# One pass over the page in the browser; returns a list of human-readable problems.
_ACCESSIBILITY_JS = r"""
() => {
  const problems = [];
  const describe = (el) => {
    const html = el.outerHTML.replace(/\s+/g, " ");
    return html.length > 160 ? html.slice(0, 157) + "..." : html;
  };
  // Rendered and exposed to assistive technology: not display:none / hidden / visibility:hidden,
  // and not inside aria-hidden="true".
  const exposed = (el) => {
    const rendered = typeof el.checkVisibility === "function"
      ? el.checkVisibility({visibilityProperty: true})
      : el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
    return rendered && !el.closest('[aria-hidden="true"]');
  };
  const textOf = (el) => {
    const copy = el.cloneNode(true);
    copy.querySelectorAll("input, select, textarea").forEach((c) => c.remove());
    copy.querySelectorAll("img[alt]").forEach((img) => img.replaceWith(img.getAttribute("alt")));
    return copy.textContent.replace(/\s+/g, " ").trim();
  };

  // (a) Every visible form control has a non-empty accessible label.
  const unlabelledTypes = new Set(["hidden", "submit", "button", "reset", "image"]);
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.tagName === "INPUT" && unlabelledTypes.has((el.getAttribute("type") || "text").toLowerCase())) continue;
    if (!exposed(el)) continue;
    const byLabel = Array.from(el.labels || []).some((label) => textOf(label) !== "");
    const byAriaLabel = (el.getAttribute("aria-label") || "").trim() !== "";
    const byLabelledBy = (el.getAttribute("aria-labelledby") || "").split(/\s+/).filter(Boolean)
      .some((id) => { const ref = document.getElementById(id); return ref && textOf(ref) !== ""; });
    if (!(byLabel || byAriaLabel || byLabelledBy)) {
      problems.push(`form control without an accessible label: ${describe(el)}`);
    }
  }

  // (b) Exactly one h1, and headings never skip a level going down (h1 then h3).
  const headings = Array.from(document.querySelectorAll("h1, h2, h3, h4, h5, h6")).filter(exposed);
  const h1s = headings.filter((h) => h.tagName === "H1");
  if (h1s.length !== 1) {
    problems.push(`expected exactly one h1, found ${h1s.length}` +
      (h1s.length ? ": " + h1s.map(describe).join(" | ") : ""));
  }
  let previous = null;
  for (const h of headings) {
    const level = Number(h.tagName[1]);
    if (previous !== null && level > previous.level + 1) {
      problems.push(`heading level skipped, h${previous.level} then h${level}: ${describe(h)}`);
    }
    previous = {level};
  }

  // (c) Every image has an alt attribute (alt="" for a decorative one).
  for (const img of document.querySelectorAll("img")) {
    if (!img.hasAttribute("alt")) problems.push(`img without alt: ${describe(img)}`);
  }
  return problems;
}
"""


async def check_accessibility(page: Page) -> None:
    """Fails with an AssertionError listing the offenders when the page has a visible form control
    without an accessible label (<label for>, a wrapping <label>, aria-label or aria-labelledby),
    not exactly one h1, a heading level skipped going down, or an img without alt."""
    problems = await page.evaluate(_ACCESSIBILITY_JS)
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise AssertionError(f"accessibility problems on {page.url}:\n{listing}")
