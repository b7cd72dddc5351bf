"""Links between pages by name: app.py hands this module the pages it registered, pages and ui link by name.

The pages are functions in `pages/` that app.py registers with `st.Page(function, url_path=...)`; linking to one
takes that `st.Page` object. Pages cannot build it themselves (app.py decides which pages a user gets) and ui never
imports pages, so app.py keeps this run's pages in the session (a fragment that reruns on its own, like the Train
page's live panel, links with the pages of the last full run):

    register_pages({"data": data, "model": model})  # in app.py, before page.run()
    page_link("model", "Choose a model", ":material/arrow_forward:")  # in a page
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import NoReturn

import streamlit as st

PAGES_KEY = "navigation_pages"
LAST_RUN_KEY = "navigation_last_run"  # (url_path, finished) of the last full run of this session
TYPED_COMMIT_KEY = "navigation_typed_commit"  # a typed box of the page left behind committed in this run
APP_FILE = Path(__file__).resolve().parents[1] / "app.py"


def register_pages(pages: dict[str, st.Page]) -> None:
    """Keep the pages app.py registered in this run, by name (their url_path), for `page_link` and `switch_to`."""
    st.session_state[PAGES_KEY] = dict(pages)


def registered_page(name: str) -> st.Page:
    """The page app.py registered as `name` in this session's last run.

    Raises:
        KeyError: no page of that name is registered for this user (the Trainer page for a student, any page before
            sign-in); the message names the pages that are.
    """
    pages: dict[str, st.Page] = st.session_state.get(PAGES_KEY, {})
    if name not in pages:
        raise KeyError(
            f"No page named {name!r} is registered for this user; registered: {', '.join(pages) or 'none'}. "
            "app.py registers the pages with ui.navigation.register_pages before running one."
        )
    return pages[name]


def page_link(name: str, label: str, icon: str) -> None:
    """Draw a link to the page registered as `name`."""
    st.page_link(registered_page(name), label=label, icon=icon)


def switch_to(name: str) -> NoReturn:
    """Open the page registered as `name` now (ends this script run)."""
    st.switch_page(registered_page(name))


def note_typed_commit() -> None:
    """Called by a typed box's on_change (see `follow_interrupted_navigation`)."""
    st.session_state[TYPED_COMMIT_KEY] = True


def follow_interrupted_navigation(page: st.Page) -> None:
    """Go on to the page the user clicked when a box they had typed in pulled them back (call before `page.run()`).

    Type in a number box, then click another page in the sidebar: Streamlit's frontend asks for the new page first
    and sends the box's value as it loses focus just after, with the old page's name. The second request stops the
    new page's run and draws the old page again, whose widgets the frontend has just forgotten: the click is undone
    and the boxes show their minimums (seen in Chromium, 3 times in 3). The box's on_change has kept its value (ui.
    setting_edits); this run carries that commit, and the run before it, of another page, did not finish: so this
    opens that page again. `page_finished` after `page.run()` says a run finished.
    """
    last = st.session_state.get(LAST_RUN_KEY)
    typed = st.session_state.pop(TYPED_COMMIT_KEY, False)
    st.session_state[LAST_RUN_KEY] = (page.url_path, False)
    if not typed or not last or last[1] or last[0] == page.url_path:
        return
    for candidate in st.session_state.get(PAGES_KEY, {}).values():
        if candidate.url_path == last[0]:
            st.switch_page(candidate)


def page_finished(page: st.Page) -> None:
    st.session_state[LAST_RUN_KEY] = (page.url_path, True)


def run_app_instead() -> None:
    """Run app.py, with its sign-in gate, for a request Streamlit answered by running a `pages/` file itself.

    Until some session has run app.py's `st.navigation`, Streamlit 1.67 answers a request for `/model` by running
    `pages/model.py` as the script (its v1 multipage mode, which AppTest also starts every run in), without app.py.
    A page module only defines its page, so on its own that run would draw a blank page under v1's list of files.
    Each page module calls this under `if __name__ == "__main__":` (true only in such a run, never on import), and
    app.py runs in its place, as Streamlit runs it for `/`: its `st.navigation` finds the requested page among the
    ones it registers (none but the sign-in screen before sign-in) and ends the v1 mode for every later session.
    """
    # Compiled and run in a fresh __main__ module, as Streamlit runs a page script (runpy would swap the process's
    # sys.argv and __main__ while other sessions' scripts run).
    module = types.ModuleType("__main__")
    module.__file__ = str(APP_FILE)
    code = compile(APP_FILE.read_text(encoding="utf-8"), str(APP_FILE), "exec")
    exec(code, module.__dict__)  # noqa: S102 - our own app.py
