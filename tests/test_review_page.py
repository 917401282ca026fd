"""People in the loop: the review page and its API against a real server (uvicorn on loopback), in a
real browser (Debian's chromium, driven by Playwright) where one is installed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from labeljury import load_task, run
from labeljury.review.queue import HumanQueue
from labeljury.store import RunStore

from .conftest import CHROMIUM, make_rows, require, write_task

EVIL = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> wonderful great'


def human_task(tmp: Path, budget: float = 0.2, reviewer: str = "{kind: human}", extra: str = "") -> Path:
    task = write_task(tmp / "task.yaml", budget=budget, extra=extra)
    task.write_text(task.read_text().replace("{kind: gold, column: label}", reviewer))
    return task


@pytest.fixture
def waiting_run(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    """A run waiting for people on its bootstrap and audit rows; one of the texts is hostile markup."""
    rows = make_rows(300, seed=8)
    data = tmp_path / "in.csv"
    rows.to_csv(data, index=False)
    task = human_task(tmp_path)
    report = run(load_task(task), data, tmp_path / "out.csv")
    assert report.status == "waiting" and report.pending > 0 and "labeljury review" in report.summary()
    run_dir = tmp_path / "out.csv.run"
    with RunStore(run_dir) as s:  # make a waiting row hostile: it must show as text
        first = s.conn.execute("SELECT text_id FROM human_queue ORDER BY text_id LIMIT 1").fetchone()[0]
        s.conn.execute("UPDATE human_queue SET text=? WHERE text_id=?", (EVIL, first))
    return data, task, run_dir, dict(zip(rows.text, rows.label))


def serve_review(run_dir: Path) -> Iterator[str]:
    """`labeljury review RUN_DIR` in a child process; yields its URL (with the token), then stops it."""
    proc = subprocess.Popen([sys.executable, "-m", "labeljury.cli", "review", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = None
    for line in proc.stdout:  # type: ignore[union-attr]
        m = re.search(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", line)
        if m:
            url = m.group(1)
            break
    assert url, proc.stderr.read()  # type: ignore[union-attr]
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def server(waiting_run):
    """The review page of the waiting run; yields its URL."""
    yield from serve_review(waiting_run[2])


def call(url: str, path: str, method: str = "GET", body: object = None, token: str | None = "", who: str = "t",
         headers: dict[str, str] | None = None) -> tuple[int, object]:
    base, tok = url.split("/?token=")
    h = {"X-Reviewer": who, **(headers or {})}
    if token == "":
        token = tok
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(base + path, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            raw = res.read()
            return res.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else None


def test_every_call_needs_the_token(server) -> None:
    base, tok = server.split("/?token=")
    assert call(server, "/api/next", token=None)[0] == 401
    assert call(server, "/api/next", token="wrong")[0] == 403
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "/")
    assert err.value.code == 401
    with urllib.request.urlopen(f"{base}/api/next?token={tok}") as res:  # the token as a query parameter
        assert res.status == 200
    assert call(server, "/api/next", headers={"Host": "evil.example:80"})[0] == 403  # no DNS rebinding


def test_answers_through_the_api_and_the_run_goes_on(server, waiting_run) -> None:
    data, task, run_dir, gold = waiting_run
    status, row = call(server, "/api/next")
    assert status == 200 and {"id", "text", "suggestion", "labels", "why"} <= set(row)
    assert call(server, "/api/answer", "POST", {"id": row["id"], "label": "meh"})[0] == 400
    assert call(server, "/api/answer", "POST", {"id": 987654, "label": "neutral"})[0] == 404
    assert call(server, "/api/answer", "POST", {"id": row["id"], "label": "neutral"})[0] == 200
    assert call(server, "/api/answer", "POST", {"id": row["id"], "label": "positive"}, who="other")[0] == 409
    with RunStore.existing(run_dir) as s:  # stored the moment it was given
        assert s.reviews()[row["id"]].label == "neutral" and s.reviews()[row["id"]].source == "reviewed:human"
    answered = 1
    while True:
        status, row = call(server, "/api/next")
        if status == 204:
            break
        text = row["text"]
        assert call(server, "/api/answer", "POST", {"id": row["id"], "label": gold.get(text, "positive")})[0] == 200
        answered += 1
    report = run(load_task(task), data, Path(str(run_dir)[: -len(".run")]))
    assert report.status in ("waiting", "complete") and report.reviews >= answered


def test_ids_from_outside_get_a_client_error_never_a_500(server) -> None:
    """Untrusted JSON: an id no row can have is 404 (a huge one used to overflow SQLite: HTTP 500), one of
    the wrong type 400; skipping a row that does not exist is 404, not 200."""
    for path in ("/api/answer", "/api/skip", "/api/undo"):
        for row_id in (2**70, -1, 10**9):
            status, _ = call(server, path, "POST", {"id": row_id, "label": "neutral"})
            # undo of a possible but unknown id: 409 ("cannot be taken back"); of an impossible one: 404
            assert status == (409 if path == "/api/undo" and 0 <= row_id < 2**63 else 404), (path, row_id, status)
        for row_id in ("7", None, True, 1.5):
            assert call(server, path, "POST", {"id": row_id, "label": "neutral"})[0] == 400, (path, row_id)
        for bad in ([1, 2], "x", {"label": "neutral"}):
            assert call(server, path, "POST", bad)[0] == 400, (path, bad)


def test_state_changes_are_not_forgeable_from_another_origin(server) -> None:
    _, row = call(server, "/api/next")
    forged = call(server, "/api/answer", "POST", {"id": row["id"], "label": "neutral"},
                  headers={"Origin": "http://evil.example"})
    assert forged[0] == 403
    form = call(server, "/api/answer", "POST", {"id": row["id"], "label": "neutral"},
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form[0] == 415
    assert call(server, "/api/answer", "POST", {"id": row["id"], "label": "neutral"},
                headers={"Sec-Fetch-Site": "cross-site"})[0] == 403


def test_four_reviewers_at_once_get_different_rows_and_lose_nothing(server, waiting_run) -> None:
    run_dir = waiting_run[2]
    given: dict[str, list[int]] = {}
    errors: list[object] = []

    def work(who: str) -> None:
        mine = given.setdefault(who, [])
        while True:
            status, row = call(server, "/api/next", who=who)
            if status == 204:
                return
            code, _ = call(server, "/api/answer", "POST", {"id": row["id"], "label": "neutral"}, who=who)
            if code == 200:
                mine.append(row["id"])
            elif code != 409:
                errors.append((who, code))

    threads = [threading.Thread(target=work, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    every = [i for ids in given.values() for i in ids]
    assert not errors and len(every) == len(set(every))  # no row answered twice
    with RunStore.existing(run_dir) as s:
        stored = {t for t, r in s.reviews().items() if r.source == "reviewed:human"}
        left = s.conn.execute("SELECT COUNT(*) FROM human_queue WHERE label IS NULL").fetchone()[0]
    assert stored == set(every) and left == 0  # and none lost
    assert sum(1 for ids in given.values() if ids) >= 2


def test_undo_takes_back_only_your_own_answer_before_a_run_uses_it(waiting_run) -> None:
    data, task, run_dir, gold = waiting_run
    q = HumanQueue(run_dir)
    a = q.lease("alice")
    b = q.lease("bob")
    assert a.id != b.id  # each person holds a different row
    assert q.answer(a.id, "neutral", "alice") and q.answer(b.id, "positive", "bob")
    assert not q.undo(a.id, "bob") and q.undo(a.id, "alice")
    with RunStore.existing(run_dir) as s:
        assert s.reviews(include_pending=True)[a.id].pending
    assert q.lease("alice").id == a.id  # the row comes back to whoever took the answer back
    q.close()
    run(load_task(task), data, Path(str(run_dir)[: -len(".run")]))  # a run uses bob's answer...
    q = HumanQueue(run_dir)
    assert not q.undo(b.id, "bob")  # ...so it cannot be taken back any more
    q.close()


def test_released_rows_go_to_the_next_person_at_once(server) -> None:
    _, a = call(server, "/api/next", who="alice")
    _, b = call(server, "/api/next", who="bob")
    assert a["id"] != b["id"]
    assert call(server, "/api/release", "POST", {}, who="alice") == (200, {"ok": True, "released": 1})
    assert call(server, "/api/next", who="carol")[1]["id"] == a["id"]  # not after the lease expires
    assert call(server, "/api/next", who="dave")[1]["id"] not in (a["id"], b["id"])  # bob still holds his
    assert call(server, "/api/release", "POST", {}, who="alice",
                headers={"Origin": "http://evil.example"})[0] == 403


@pytest.fixture
def browser():
    require(Path(CHROMIUM).exists(), "Debian's chromium")
    sync = pytest.importorskip("playwright.sync_api")
    with sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        yield b
        b.close()


def _page(browser, url: str):
    page = browser.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("#labels button")
    return page


def test_label_rows_by_keyboard_and_undo_in_a_browser(server, browser, waiting_run) -> None:
    run_dir = waiting_run[2]
    page = _page(browser, server)
    assert page.locator("#labels button").first.text_content().startswith("1")  # the key is on the button
    shown = []
    for key in ("1", "3", "2"):
        shown.append(page.locator("#text").text_content())
        page.keyboard.press(key)
        page.wait_for_function("t => document.getElementById('text').textContent !== t", arg=shown[-1])
    page.keyboard.press("u")  # undo the last answer: its row comes back
    page.wait_for_function("t => document.getElementById('text').textContent === t", arg=shown[-1])
    page.wait_for_function("window.labeljuryTimings.length >= 3")
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()

    def answered() -> list[str]:
        with RunStore.existing(run_dir) as s:
            return sorted(r.label for r in s.reviews().values() if r.source == "reviewed:human")

    deadline = time.monotonic() + 10  # the undo's request may still be on its way when the row is back
    while answered() != ["negative", "positive"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert answered() == ["negative", "positive"]  # three answers, the last one taken back
    assert page.errors == [] and page.evaluate("window.labeljuryTimings.length") >= 3


def test_two_pages_at_once_show_different_rows(server, browser) -> None:
    one, two = _page(browser, server), _page(browser, server)
    assert one.locator("#text").text_content() != two.locator("#text").text_content()


def test_closing_a_page_hands_its_row_to_the_next_person(server, browser) -> None:
    page = _page(browser, server)
    shown = page.locator("#text").text_content()
    status, row = call(server, "/api/next", who="other")
    assert status == 200 and row["text"] != shown  # the open page holds its row
    call(server, "/api/skip", "POST", {"id": row["id"]}, who="other")
    page.close()
    for _ in range(50):
        status, row = call(server, "/api/next", who="third")
        if row["text"] == shown:
            break
        call(server, "/api/skip", "POST", {"id": row["id"]}, who="third")
        time.sleep(0.1)
    assert row["text"] == shown


def test_a_hostile_text_shows_as_text(server, browser, waiting_run) -> None:
    page = _page(browser, server)
    for _ in range(40):  # find the hostile row
        if "<script>" in (page.locator("#text").text_content() or ""):
            break
        before = page.locator("#text").text_content()
        page.keyboard.press("s")
        page.wait_for_function("t => document.getElementById('text').textContent !== t", arg=before)
    assert page.locator("#text").text_content() == EVIL  # shown, character for character
    assert page.evaluate("window.pwned") is None and page.locator("#text img").count() == 0
    assert page.errors == []


def test_a_page_without_its_token_shows_nothing(server, browser) -> None:
    base = server.split("/?token=")[0]
    page = browser.new_page()
    response = page.goto(base + "/")
    assert response.status == 401 and "access token" in page.content()
    assert page.locator("#labels").count() == 0
