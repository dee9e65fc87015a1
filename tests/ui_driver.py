"""Drive the Prefect UI (prefect 3.9, both UIs) in the system's headless Chromium: a small page-object layer for tests.

Selectors are roles and visible text, checked against prefect 3.9.1's UI v2 with Debian chromium 156 and Python
playwright 1.65:

- run page ``/v2/runs/flow-run/<id>``: the state is a badge next to the breadcrumb (navigation "breadcrumb");
  the kebab is button "Open menu" -> menuitem "Resume" -> dialog "Resume Flow Run";
- in the dialog, the run input's description is rendered as Markdown; a ``Literal`` field is a popover: button
  "Select <Field>" -> option "<value>"; a ``str`` field is a textbox named after its title ("Feedback (Optional)"
  when it has a default); submit with button "Resume"; the UI then shows the notice "Flow run resumed";
- run page tab "Artifacts": one link per artifact (named after its key) -> ``/v2/artifacts/artifact/<id>``, where a
  Markdown artifact is rendered (tables included).

and against the classic UI (``/runs/flow-run/<id>``, the link in Prefect's own "View at" log lines): Resume is a
button in the page header; the dialog shows the description in a scroll box (``article.markdown-renderer``, about
350-450 px tall depending on the window) above the form; each field is a ``.schema-form-property`` block with its
title in a label; a ``Literal`` field is a select button that opens (focus + Space) a listbox of options; a ``str``
field is a textarea; submit with button "Submit".

The browser is ``$UI_TEST_CHROMIUM`` when set, else ``chromium`` or ``chromium-browser`` on PATH (``find_chromium``);
``scripts/install-chromium`` installs Debian's where it can and says why where it cannot.
Playwright is imported lazily by ``require_chromium()`` / ``launch()`` so a missing package fails the test with a
clear message instead of breaking collection. The browser never leaves 127.0.0.1: every other request is aborted
(the UI tries to reach an analytics host even with analytics off). Nothing waits for ``networkidle`` (the UI polls
the API forever); every wait is for a role or text.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Locator, Page, Playwright, Request

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "CHROMIUM_ENV", "CHROMIUM_NAMES", "ArtifactPage", "Browser", "ClassicResumeDialog", "ClassicRunPage",
           "ResumeDialog", "RunPage", "Screenshots", "find_chromium", "require_chromium", "submit_resume", "until"]

CHROMIUM_ENV = "UI_TEST_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser")  # Debian's package, Ubuntu's; scripts/install-chromium looks for both
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run")
LOOPBACK = {"127.0.0.1"}
WAIT_MS = 60_000  # generous: a 2-core machine running a server, a runner and a browser at once


def find_chromium(environ: Mapping[str, str] = os.environ) -> str | None:
    """The browser to drive: $UI_TEST_CHROMIUM if set (checked by require_chromium), else the first of
    CHROMIUM_NAMES on PATH; None when there is none."""
    if override := environ.get(CHROMIUM_ENV, "").strip():
        return override
    path = environ.get("PATH", os.defpath)
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name, path=path))), None)


CHROMIUM = find_chromium()  # what this test process found


def require_chromium(chromium: str | None = CHROMIUM) -> str:
    """The problem with the browser set-up, or "" when Chromium and playwright are both there."""
    problems = []
    if chromium is None:
        problems.append(f"no Chromium found (none of {', '.join(CHROMIUM_NAMES)} on PATH, {CHROMIUM_ENV} unset): "
                        "run scripts/install-chromium as root (or `apt-get install -y chromium`), or set "
                        f"{CHROMIUM_ENV}=/path/to/chromium")
    elif not (Path(chromium).is_file() and os.access(chromium, os.X_OK)):
        problems.append(f"{CHROMIUM_ENV}={chromium} is not an executable file: point it at a Chromium binary, or "
                        "unset it to use chromium from PATH")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the Python package `playwright` is not installed: `pip install playwright` (never run "
                        "`playwright install`; the test uses the system Chromium)")
    return "; ".join(problems)


class Screenshots:
    """Numbered PNGs of each step in one directory; a failing step leaves a FAILED-... shot."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0
        self.taken: list[Path] = []
        self.timings: list[tuple[str, float, float]] = []

    def path(self, name: str) -> Path:
        self.count += 1
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        return self.directory / f"{self.count:02d}-{slug}.png"

    def take(self, page: Page, name: str, element: Locator | None = None) -> Path:
        path = self.path(name)
        page.screenshot(path=str(path))
        self.taken.append(path)
        if element is not None:  # a dialog scrolls inside itself: a full-page shot shows only part of it
            with contextlib.suppress(Exception):
                element_path = path.with_name(path.stem + "-dialog.png")
                element.screenshot(path=str(element_path))
                self.taken.append(element_path)
        return path

    @contextlib.contextmanager
    def step(self, page: Page, name: str, element: Callable[[], Locator | None] = lambda: None) -> Iterator[None]:
        """Run a step; screenshot it when it succeeded, and as FAILED-<name> (then re-raise) when it did not."""
        started = time.monotonic()
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self.take(page, f"FAILED-{name}", element())
            raise
        taken = time.monotonic()
        self.take(page, name, element())
        self.timings.append((name, round(taken - started, 2), round(time.monotonic() - taken, 2)))


class Browser:
    """Headless system Chromium with a fresh profile; only 127.0.0.1 is reachable."""

    def __init__(self, user_data_dir: Path, *, viewport: tuple[int, int] = (1366, 768)) -> None:  # a laptop
        self.user_data_dir, self.viewport = user_data_dir, viewport
        self.blocked: list[str] = []
        self._playwright: Playwright | None = None
        self.context: BrowserContext | None = None

    def launch(self) -> Browser:
        if problem := require_chromium():  # never let playwright fall back to a browser of its own
            raise RuntimeError(f"cannot launch the browser: {problem}")
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        try:
            self.context = self._playwright.chromium.launch_persistent_context(
                self.user_data_dir, executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True,
                viewport={"width": self.viewport[0], "height": self.viewport[1]}, service_workers="block",
            )
            self.context.set_default_timeout(WAIT_MS)
            self.context.route("**/*", self._only_loopback)
        except BaseException:
            self.close()
            raise
        return self

    def _only_loopback(self, route: Any) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def new_page(self) -> Page:
        assert self.context is not None, "launch() first"
        return self.context.new_page()

    def close(self) -> None:
        """Close the browser (its processes end with it) and stop Playwright's driver process. Idempotent."""
        context, self.context = self.context, None
        playwright, self._playwright = self._playwright, None
        try:
            if context is not None:
                context.close()
        finally:
            if playwright is not None:
                playwright.stop()


def until(check: Callable[[], Any], what: str, timeout: float = 60, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; its last exception or a TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
            error: BaseException | None = None
        except Exception as err:  # noqa: BLE001
            error = err
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not true after {timeout:.0f} s" + (f" (last error: {error})" if error else ""))
        time.sleep(interval)


class ResumeDialog:
    """The "Resume Flow Run" dialog: the rendered description and the form built from the run input's schema."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.root = page.get_by_role("dialog", name="Resume Flow Run")
        self.retries = 0  # submits refused with 502/503/504 and clicked again

    def proposal_heading(self) -> str:
        """Text of the Markdown heading that says what the agent proposes (waits for it to render)."""
        heading = self.root.get_by_role("heading", name="proposes")
        heading.first.wait_for()
        return heading.first.inner_text()

    def textbox(self, field: str) -> Locator:
        """A `str` field: its accessible name is the field title, plus " (Optional)" when it has a default."""
        return self.root.get_by_role("textbox", name=re.compile(rf"^{re.escape(field)}( \(Optional\))?$"))

    def choose(self, field: str, value: str) -> None:
        """A `Literal` field: button "Select <Field>" opens a listbox of options."""
        select = self.root.get_by_role("button", name=f"Select {field}")
        select.click()
        self.page.get_by_role("option", name=value, exact=True).click()
        until(lambda: value in select.inner_text(), f"{field} shows {value!r}", timeout=10)

    def fill(self, field: str, value: str) -> None:
        box = self.textbox(field)
        box.fill(value)
        until(lambda: box.input_value() == value, f"{field} holds {value!r}", timeout=10)

    def value(self, field: str) -> str:
        return self.textbox(field).input_value()

    def show_form_end(self) -> None:
        """Scroll the dialog so the filled form and the submit button are in its screenshot."""
        self.root.get_by_role("button", name="Resume", exact=True).scroll_into_view_if_needed()

    def submit(self) -> dict[str, Any]:
        sent, retries = submit_resume(self.page, self.root.get_by_role("button", name="Resume", exact=True))
        self.retries += retries
        return sent


def submit_resume(page: Page, button: Locator, attempts: int = 5) -> tuple[dict[str, Any], int]:
    """Click the form's submit button; return (the run_input the UI POSTed, retries) once the server accepted it.

    A SQLite-backed server answers 503 when its database is locked (the runner, the UI's polling and the server's
    services all write); the resume transaction is then rolled back, the UI says "Failed to resume flow run" and
    keeps the dialog open with the form filled in. A person clicks again; so do we.
    """
    def is_resume(request: Request) -> bool:
        return request.method == "POST" and urlsplit(request.url).path.endswith("/resume")

    for attempt in range(1, attempts + 1):
        with page.expect_response(lambda r: is_resume(r.request)) as answered:
            button.click()
        response = answered.value
        if response.status in (502, 503, 504) and attempt < attempts:
            page.get_by_text("Failed to resume flow run").first.wait_for()
            time.sleep(0.5 * attempt)
            continue
        assert response.ok, f"resume POST failed: HTTP {response.status} {response.text()[:300]}"
        body = response.json()
        assert body.get("status") == "ACCEPT", f"the server refused the UI's input: {body}"
        page.get_by_text("Flow run resumed").first.wait_for()
        return json.loads(response.request.post_data or "{}")["run_input"], attempt - 1
    raise AssertionError("unreachable")


class RunPage:
    """The flow run page of UI v2, opened at `url` exactly as a message printed it."""

    def __init__(self, page: Page, url: str) -> None:
        self.page, self.url = page, url

    def header(self) -> Locator:
        """The innermost block holding the breadcrumb and the state badge."""
        return self.page.locator("div", has=self.page.get_by_role("navigation", name="breadcrumb")).last

    def state_badge(self, state: str) -> Locator:
        return self.header().get_by_text(state, exact=True)

    def open(self, state: str | None = None) -> RunPage:
        self.page.goto(self.url, wait_until="domcontentloaded")
        self.page.get_by_role("button", name="Open menu").first.wait_for()
        if state is not None:
            self.wait_for_state(state)
        return self

    def wait_for_state(self, state: str, timeout: float = 60, reload_every: float = 20) -> None:
        """Wait for the header's state badge; the UI polls, but reload now and then in case a poll was missed."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                self.state_badge(state).wait_for(timeout=max(1.0, min(reload_every, remaining)) * 1000)
                return
            except Exception:
                if time.monotonic() >= deadline:
                    raise
                self.page.reload(wait_until="domcontentloaded")

    def resume_dialog(self) -> ResumeDialog:
        self.page.get_by_role("button", name="Open menu").first.click()
        self.page.get_by_role("menuitem", name="Resume").click()
        dialog = ResumeDialog(self.page)
        dialog.root.wait_for()
        return dialog

    def artifacts_tab(self) -> Locator:
        self.page.get_by_role("tab", name="Artifacts").click()
        return self.page.get_by_role("tabpanel")

    def open_artifact(self, key: str, artifact_id: str) -> ArtifactPage:
        """From the Artifacts tab, follow the link of artifact `artifact_id` (one version of `key`)."""
        panel = self.artifacts_tab()
        link = panel.get_by_role("link", name=key).and_(panel.locator(f'a[href$="/{artifact_id}"]'))
        link.wait_for()
        link.click()
        self.page.wait_for_url(re.compile(rf"/artifacts/artifact/{re.escape(artifact_id)}"))
        return ArtifactPage(self.page)


class ArtifactPage:
    """A Markdown artifact rendered by the UI (``/v2/artifacts/artifact/<id>``)."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def heading(self, text: str) -> Locator:
        heading = self.page.get_by_role("heading", name=text)
        heading.first.wait_for()
        return heading.first

    def rows(self, kind: str, count: int, timeout_s: float = 30.0) -> list[str]:
        """Texts of the rendered table's rows whose cell is exactly `kind` (e.g. "decision"), once `count` are shown.

        The UI renders the artifact more than once (the page first, then its fetched content), so a row seen once may
        be gone at the next read: re-read until `count` rows are there, and return what was last read after
        `timeout_s` so the caller's assertion shows it.
        """
        rows = self.page.get_by_role("row").filter(has=self.page.get_by_role("cell", name=kind, exact=True))
        deadline = time.monotonic() + timeout_s
        while True:
            texts = [" ".join(t.split()) for t in rows.all_inner_texts()]
            if len(texts) == count or time.monotonic() > deadline:
                return texts
            self.page.wait_for_timeout(250)


class ClassicResumeDialog:
    """The classic UI's "Resume Flow Run" dialog."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.root = page.get_by_role("dialog").filter(has_text="Resume Flow Run")
        self.retries = 0

    def description_box(self) -> Locator:
        """The scroll box that holds the rendered description."""
        return self.root.locator("article.markdown-renderer").first

    def first_view(self, *elements: Locator) -> list[bool]:
        """For each element: is it inside the description box's visible part before any scrolling?"""
        box = self.description_box()
        box.evaluate("e => e.scrollTo(0, 0)")
        top, height = box.evaluate("e => [e.getBoundingClientRect().top, e.clientHeight]")
        seen = []
        for element in elements:
            rect = element.evaluate("e => [e.getBoundingClientRect().top, e.getBoundingClientRect().bottom]")
            seen.append(rect[0] >= top - 1 and rect[1] <= top + height + 1)
        return seen

    def field(self, title: str) -> Locator:
        label = self.page.locator("label", has_text=re.compile(rf"^\s*{re.escape(title)}( \(Optional\))?\s*$"))
        return self.root.locator(".schema-form-property").filter(has=label).first

    def choose(self, title: str, value: str) -> None:
        control = self.field(title).locator("button.p-select-button__control")
        option = self.page.get_by_role("option", name=value, exact=True)

        def opened() -> bool:
            if not option.is_visible():
                control.focus()
                self.page.keyboard.press(" ")  # a click does not always open it; Space does
                option.wait_for(timeout=3000)
            return option.is_visible()

        until(opened, f"{title} options shown", timeout=30, interval=0.5)
        option.click()
        until(lambda: value in control.inner_text(), f"{title} shows {value!r}", timeout=10)

    def fill(self, title: str, value: str) -> None:
        box = self.field(title).locator("textarea")
        box.fill(value)
        until(lambda: box.input_value() == value, f"{title} holds {value!r}", timeout=10)

    def submit(self) -> dict[str, Any]:
        sent, retries = submit_resume(self.page, self.root.get_by_role("button", name="Submit", exact=True))
        self.retries += retries
        return sent


class ClassicRunPage:
    """The classic UI's flow run page, opened at `url` exactly as Prefect's log line printed it."""

    def __init__(self, page: Page, url: str) -> None:
        self.page, self.url = page, url

    def open(self, state: str) -> ClassicRunPage:
        self.page.goto(self.url, wait_until="domcontentloaded")
        self.page.get_by_text(state, exact=True).first.wait_for()
        return self

    def resume_dialog(self) -> ClassicResumeDialog:
        self.page.get_by_role("button", name="Resume").first.click()
        dialog = ClassicResumeDialog(self.page)
        dialog.root.get_by_text("proposes").first.wait_for()
        return dialog
