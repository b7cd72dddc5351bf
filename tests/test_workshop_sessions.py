"""Workshop security, issue 24 items 2, 5, 6 and 7, on a real workshop server in Chromium.

2. An unauthenticated websocket `clear_cache` message (sent with Streamlit's own protobuf classes, no
   cookie, no XSRF token) resets no sign-in throttle and makes no second job manager.
5. Wrong passwords slow down only the client that sends them: the account's own browser still signs in.
6. Removing an account or setting its password ends its open sessions at their next click.
7. A reload or a new tab keeps the user signed in (a signed, expiring session cookie); the trainer can revoke it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.workshop_server import ARTIFACTS, PASSWORDS, launch_chromium, sign_in, wait_idle, workshop_server
from tl_core.server.sessions import SessionStore
from tl_core.server.sign_in_throttle import FREE_FAILURES, SignInThrottle

pytestmark = pytest.mark.slow


def clear_caches(url: str, times: int = 1) -> None:
    """What a hostile client can send without signing in: `BackMsg.clear_cache` on a fresh websocket."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from websockets.sync.client import connect

    message = BackMsg()
    message.clear_cache = True
    for _ in range(times):
        with connect(
            url.replace("http://", "ws://") + "/_stcore/stream", subprotocols=["streamlit"], open_timeout=20
        ) as socket:
            socket.send(message.SerializeToString())
            time.sleep(0.5)  # let the server handle it before the socket closes


def try_password(page, url: str, name: str, password: str) -> str:  # noqa: ANN001
    """Submit the password form once; returns the text of the page's alerts afterwards."""
    from playwright.sync_api import expect

    page.goto(url)
    page.get_by_label("User name", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    alerts = page.locator("[data-testid=stMain] [data-testid=stAlert]")
    expect(alerts.or_(page.get_by_text("Signed in as")).first).to_be_visible()
    wait_idle(page)
    return " ".join(alerts.all_inner_texts())


def is_signed_in(page) -> bool:  # noqa: ANN001
    return page.get_by_text("Signed in as").count() > 0


def click_somewhere(page) -> None:  # noqa: ANN001
    """A click that reruns the page (another page in the navigation)."""
    page.get_by_test_id("stSidebarNav").get_by_text("Runs", exact=True).click()
    wait_idle(page)


def standby_workers(server_pid: int) -> int:
    """Waiting workers (`python -m tl_core.jobs.worker --standby`) the server process started."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == server_pid and b"tl_core.jobs.worker" in command and b"--standby" in command:
            count += 1
    return count


def test_throttle_is_per_account_and_client_with_backoff() -> None:
    now = [1000.0]
    throttle = SignInThrottle(clock=lambda: now[0])
    for _ in range(FREE_FAILURES):
        assert throttle.wait_s("tara", "ip:attacker") == 0.0
        throttle.record_failure("tara", "ip:attacker")
    first = throttle.wait_s("tara", "ip:attacker")
    assert (
        first > 0
        and throttle.wait_s("tara", "device:taras-laptop") == 0.0
        and throttle.wait_s("alice", "ip:attacker") == 0.0
    )
    now[0] += first
    throttle.record_failure("Tara ", "ip:attacker")  # names are counted case- and space-insensitively
    assert throttle.wait_s("tara", "ip:attacker") == pytest.approx(2 * first), (
        "each failure past the free ones doubles the wait"
    )


def test_session_tokens_are_signed_expiring_and_end_with_the_account(tmp_path: Path) -> None:
    stamps = {"alice": "stamp-1"}
    store = SessionStore(tmp_path, lifetime_s=3600)
    token = store.start("alice", stamps["alice"])
    assert store.resolve(token, stamps.get) == "alice"
    session_id, expires, signature = token.split(".")
    assert store.resolve(f"{session_id}.{int(expires) + 3600}.{signature}", stamps.get) is None, (
        "a longer life needs a new signature"
    )
    assert store.resolve(f"{session_id}.{expires}.{'0' * len(signature)}", stamps.get) is None
    assert store.resolve(SessionStore(tmp_path / "other").start("alice", "stamp-1"), stamps.get) is None, (
        "another server's secret"
    )
    stamps["alice"] = "stamp-2"  # a new password
    assert store.resolve(token, stamps.get) is None and store.active_counts() == {}
    expired = SessionStore(tmp_path, lifetime_s=-1).start("alice", "stamp-2")
    assert store.resolve(expired, stamps.get) is None
    assert (tmp_path / "sessions.sqlite").stat().st_mode & 0o077 == 0 and (
        tmp_path / "session_secret"
    ).stat().st_mode & 0o077 == 0


def test_reload_and_new_tab_keep_the_session_until_the_trainer_revokes_it(workshop_server) -> None:  # noqa: ANN001
    from playwright.sync_api import expect, sync_playwright

    url = workshop_server.url
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        alice = browser.new_context(viewport={"width": 1280, "height": 900})
        page = alice.new_page()
        page.set_default_timeout(60_000)
        sign_in(page, url, "alice")
        page.reload()
        expect(page.get_by_text("Signed in as")).to_be_visible()
        tab = alice.new_page()
        tab.goto(url)
        expect(tab.get_by_text("Signed in as")).to_be_visible()
        tab.screenshot(path=str(ARTIFACTS / "security-session-new-tab.png"))

        trainer = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        trainer.set_default_timeout(60_000)
        sign_in(trainer, url, "tara")
        trainer.get_by_test_id("stSidebarNav").get_by_text("Trainer", exact=True).click()
        trainer.get_by_role("tab", name="Users").click()
        trainer.get_by_test_id("stSelectbox").filter(has_text="Signed-in user").click()
        trainer.get_by_role("option", name="alice (1 session(s))").click()
        trainer.get_by_role("button", name="Sign out everywhere").click()
        expect(trainer.get_by_text("Ended 1 session(s) of alice")).to_be_visible()

        click_somewhere(page)
        expect(page.get_by_text("Your session has ended")).to_be_visible()
        # The signed-in sidebar of the run before stays drawn (stale) until this run ends: wait for it to go.
        expect(page.get_by_text("Signed in as")).to_have_count(0)
        tab.reload()
        expect(tab.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
        expect(tab.get_by_text("Signed in as")).to_have_count(0)  # stale sidebar gone once the rerun ends
        browser.close()


def test_a_removed_or_repassworded_account_is_signed_out_at_its_next_click(workshop_server) -> None:  # noqa: ANN001
    from playwright.sync_api import expect, sync_playwright

    url = workshop_server.url
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        alice = browser.new_page(viewport={"width": 1280, "height": 900})
        bob = browser.new_context().new_page()
        for page, name in ((alice, "alice"), (bob, "bob")):
            page.set_default_timeout(60_000)
            sign_in(page, url, name)

        assert (
            workshop_server.cli(
                "users", "passwd", "alice", "--password-stdin", input_text="a new password\n"
            ).returncode
            == 0
        )
        click_somewhere(alice)
        expect(alice.get_by_text("Your session has ended")).to_be_visible()

        assert workshop_server.cli("users", "remove", "bob").returncode == 0
        bob.get_by_test_id("stSidebarNav").get_by_text("Data", exact=True).click()
        expect(
            bob.get_by_role("button", name="Sign in", exact=True)
        ).to_be_visible()  # waits for the rerun, not a fixed time
        expect(bob.get_by_text("Signed in as")).to_have_count(0)  # stale sidebar gone once the rerun ends
        assert bob.get_by_role("tab", name="Demo dataset").count() == 0, "a removed user can write no dataset"
        assert not list((workshop_server.user_root("bob") / "datasets").glob("*")), (
            "nothing was written for the removed user"
        )
        browser.close()


def test_guessing_slows_the_guesser_and_survives_clear_cache_messages(workshop_server) -> None:  # noqa: ANN001
    from playwright.sync_api import sync_playwright

    url = workshop_server.url
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        tara = browser.new_context().new_page()
        tara.set_default_timeout(60_000)
        sign_in(tara, url, "tara")  # the trainer's own browser, used before the attack
        tara.get_by_role("button", name="Sign out").click()
        wait_idle(tara)

        attacker = browser.new_context().new_page()
        attacker.set_default_timeout(60_000)
        for attempt in range(FREE_FAILURES):
            assert "Wrong user name or password" in try_password(attacker, url, "tara", f"guess {attempt}")
        clear_caches(url, times=3)  # once reset the lockout and made new job managers
        alerts = try_password(attacker, url, "tara", PASSWORDS["tara"])
        assert "Too many wrong passwords" in alerts and not is_signed_in(attacker), "the guesser stays slowed down"
        attacker.screenshot(path=str(ARTIFACTS / "security-throttle-attacker.png"))

        assert "Too many" not in try_password(tara, url, "tara", PASSWORDS["tara"])
        tara.screenshot(path=str(ARTIFACTS / "security-throttle-trainer.png"))
        assert is_signed_in(tara), "the trainer's own browser is not locked out by someone else's guesses"
        browser.close()


def test_clear_cache_messages_make_no_second_job_manager(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with workshop_server(tmp_path, extra_env={"TRANSFERLAB_WARM_WORKERS": "1"}, name="clear-cache") as server:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page()
            page.set_default_timeout(60_000)
            sign_in(page, server.url, "alice")
            click_somewhere(page)  # the Runs page asks for the job manager
            deadline = time.monotonic() + 60
            while standby_workers(server.process.pid) < 1 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert standby_workers(server.process.pid) == 1
            for _ in range(3):
                clear_caches(server.url)
                page.reload()
                click_somewhere(page)
            time.sleep(5)  # a second manager would start its waiting worker within a second or two
            assert is_signed_in(page), "a clear_cache message signs nobody out"
            assert standby_workers(server.process.pid) == 1, "one job manager, one waiting worker per idle device"
            browser.close()
