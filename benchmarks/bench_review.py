"""People in the loop, measured: the review page and its API, several reviewers at once, and a cascade
`[llm, human]` whose LLM fails some requests, against the gold-reviewer run on the same data.

    python benchmarks/bench_review.py [--dataset financial-sentiment] [--budget 20] [--reviewers 4]
                                      [--page-rows 60] [--out benchmarks/results/review.json]

What it does, on the dataset's whole file (from ../shared/data, never copied into the repository):
1. the gold-reviewer run at the budget: its accuracy is the target;
2. the same task with `reviewer: [{kind: llm, min_confidence: 0.5, weigh: false}, {kind: human}]`, where the LLM is a
   local OpenAI-compatible test server (tests/llm_fakes.py) that answers from gold but fails a seeded
   third of the texts with HTTP 500, injects 429s and truncated JSON into 10% of the other requests,
   and states a confidence under 0.5 on a tenth of its answers; the person is scripted from gold:
   - in the first round, `--page-rows` rows are answered in headless Chromium on the real page (the key
     of the gold label), and the page's own keypress-to-next-row timings are read back;
   - then `--reviewers` threads answer the rest through `GET /api/next` / `POST /api/answer` at once;
     every answer the server accepted must be in the run store once (no double, no lost answers);
   - the run is rerun until it is complete, the threads answering each round's queue.
Measured: page latency (median, p95), API answers per minute, double/lost answers, accuracy of both
runs, and the share of reviewed rows whose source is `reviewed:*` (none may stay `queued:*`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from benchlib import DATASETS, budget_value, cleanup, labels_of, make_workdir, task_dict, write_results  # noqa: E402
from llm_fakes import OracleLLMServer  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class FaultyOracle(OracleLLMServer):
    """The oracle LLM server with transport faults on top: 429s and truncated JSON on a share of the
    requests it would otherwise answer (the client retries those)."""

    def respond(self, body: dict[str, Any], auth: str) -> tuple[int, dict[str, str], bytes]:
        fault = self._pick_fault()
        if fault is not None:
            with self._lock:
                self.counts[f"injected {fault}"] += 1
        if fault == "429":
            return 429, {"retry-after-ms": "20"}, json.dumps({"error": {"message": "Rate limit reached"}}).encode()
        status, headers, payload = super().respond(body, auth)
        if status == 500:
            with self._lock:
                self.counts["500 (a text that always fails)"] += 1
        if fault == "malformed" and status == 200:
            answer = json.loads(payload)
            content = answer["choices"][0]["message"]["content"]
            answer["choices"][0]["message"]["content"] = content[: len(content) // 2]
            payload = json.dumps(answer).encode()
        return status, headers, payload


def _digest(text: str) -> int:
    return hashlib.md5(text.encode()).digest()[0]


def accuracy(output: Path, label_column: str) -> tuple[float, dict[str, int]]:
    import pandas as pd

    df = pd.read_csv(output, keep_default_na=False)
    acc = float((df.annotation.astype(str) == df[label_column].astype(str)).mean())
    return acc, df.annotation_source.value_counts().to_dict()


def call(base: str, token: str, path: str, who: str, body: object = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", "X-Reviewer": who}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    req = urllib.request.Request(base + path, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            raw = res.read()
            return res.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        return err.code, None


def start_server(run_dir: Path) -> tuple[subprocess.Popen, str, str]:
    proc = subprocess.Popen([sys.executable, "-m", "labeljury.cli", "review", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
        if m:
            return proc, m.group(1), m.group(2)
    raise SystemExit(f"labeljury review did not start: {proc.stderr.read() if proc.stderr else ''}")


def answer_by_page(url: str, labels: list[str], gold: dict[str, str], rows: int) -> list[float]:
    """Answer `rows` rows in headless Chromium by the gold label's key; the page's keypress-to-next-row
    timings (ms), as it records them in `window.labeljuryTimings`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page()
        page.goto(url)
        for i in range(rows):
            page.wait_for_function("() => document.getElementById('row').style.display !== 'none' || "
                                   "document.getElementById('done').style.display === 'block'")
            if page.locator("#done").is_visible():
                break
            text = page.locator("#text").text_content() or ""
            page.keyboard.press(str(labels.index(gold[text]) + 1))
            page.wait_for_function("n => window.labeljuryTimings.length > n", arg=i)
        timings = page.evaluate("window.labeljuryTimings")
        page.close()  # the page hands back the row it holds
        browser.close()
    return [float(t) for t in timings]


def answer_by_api(base: str, token: str, gold: dict[str, str], reviewers: int) -> dict[str, Any]:
    """`reviewers` threads answer everything left, from gold; what the server accepted, per thread."""
    accepted: dict[str, list[int]] = {f"r{i}": [] for i in range(reviewers)}
    conflicts = [0]
    lock = threading.Lock()

    def work(who: str) -> None:
        while True:
            status, row = call(base, token, "/api/next", who)
            if status == 204:
                return
            assert status == 200, status
            status, _ = call(base, token, "/api/answer", who, {"id": row["id"], "label": gold[row["text"]]})
            if status == 200:
                accepted[who].append(row["id"])
            else:
                with lock:
                    conflicts[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(who,)) for who in accepted]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    return {"accepted": accepted, "seconds": seconds, "refused": conflicts[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="financial-sentiment", choices=list(DATASETS))
    ap.add_argument("--budget", type=float, default=20.0, help="percent of rows to review")
    ap.add_argument("--reviewers", type=int, default=4)
    ap.add_argument("--page-rows", type=int, default=60)
    ap.add_argument("--out")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--gold-from", help="a workdir of an earlier run of this script: reuse its gold-reviewer run")
    args = ap.parse_args()

    import pandas as pd
    import yaml

    from labeljury import load_task, run
    from labeljury.store import RunStore

    ds = DATASETS[args.dataset]
    if not ds.path.is_file():
        sys.exit(f"{ds.path} is absent")
    work = make_workdir(args.keep)
    frame = pd.read_csv(ds.path)
    gold = dict(zip(frame[ds.text_column].astype(str), frame[ds.label_column].astype(str)))
    labels = labels_of(ds)
    result: dict[str, Any] = {"dataset": ds.name, "rows": len(frame), "budget_percent": args.budget}

    base_task = task_dict(ds, labels, budget_value(args.budget))
    (work / "gold.yaml").write_text(yaml.safe_dump(base_task))
    t0 = time.perf_counter()
    if args.gold_from:
        shutil.copy(Path(args.gold_from) / "gold.csv", work / "gold.csv")
        shutil.copytree(Path(args.gold_from) / "gold.csv.run", work / "gold.csv.run")
    else:
        run(load_task(work / "gold.yaml"), ds.path, work / "gold.csv")
    result["gold_run"] = dict(zip(("accuracy", "sources"), accuracy(work / "gold.csv", ds.label_column)),
                              seconds=round(time.perf_counter() - t0, 1))
    print("gold reviewer:", result["gold_run"], file=sys.stderr)
    with RunStore.existing(work / "gold.csv.run") as s:  # the same specialists (with an `llm:` section,
        specialists = [e["spec"] for e in s.specialists()]  # `auto` would let the LLM choose others)

    def decide(text: str) -> tuple[str, float] | None:
        d = _digest(text)
        if d % 3 == 0:
            return None  # this text always fails: it must go on to the person
        return gold[text], 0.3 if d % 10 == 1 else 0.9

    with FaultyOracle(decide, fault_rate=0.1, faults=("429", "malformed")) as llm:
        task = dict(base_task, specialists=specialists,
                    # the oracle LLM answers from gold: obeyed, so the run can be compared with the gold run
                    reviewer=[{"kind": "llm", "min_confidence": 0.5, "weigh": False}, {"kind": "human"}],
                    llm={"model": "gpt-4o-mini", "base_url": llm.base_url, "api_key_env": None, "timeout": 5.0,
                         "max_retries": 2, "concurrency": 8, "budget_usd": None})
        (work / "cascade.yaml").write_text(yaml.safe_dump(task))
        out, run_dir = work / "cascade.csv", work / "cascade.csv.run"
        rounds, api_rounds, page_timings = 0, [], []
        proc = None
        t0 = time.perf_counter()
        try:
            while (report := run(load_task(work / "cascade.yaml"), ds.path, out)).status == "waiting":
                rounds += 1
                if proc is None:
                    proc, base, token = start_server(run_dir)
                    if CHROMIUM and args.page_rows:
                        page_timings = answer_by_page(f"{base}/?token={token}", labels, gold, args.page_rows)
                api_rounds.append(answer_by_api(base, token, gold, args.reviewers))
                if not any(api_rounds[-1]["accepted"].values()):
                    time.sleep(5)  # nothing for people yet: the LLM's failed rows wait out their backoff
                if time.perf_counter() - t0 > 3600:
                    sys.exit(f"the cascade run did not finish in an hour ({rounds} rounds)")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
        seconds = time.perf_counter() - t0
        asked = len(set(llm.asked))
    acc, sources = accuracy(out, ds.label_column)
    with RunStore.existing(run_dir) as s:
        reviews = s.reviews()
    accepted = [i for r in api_rounds for ids in r["accepted"].values() for i in ids]
    double = len(accepted) - len(set(accepted))
    lost = sum(1 for i in set(accepted) if i not in reviews or reviews[i].source != "reviewed:human")
    api_seconds = sum(r["seconds"] for r in api_rounds)
    queued = sum(v for k, v in sources.items() if k.startswith("queued:"))
    result["cascade_run"] = {
        "accuracy": acc, "sources": sources, "queued_rows": queued, "rounds": rounds,
        "seconds_with_scripted_people": round(seconds, 1), "texts_asked_of_the_llm": asked,
        "llm_requests": dict(llm.counts),
        "equal_to_gold_run": round(acc, 6) == round(result["gold_run"]["accuracy"], 6),
    }
    result["api"] = {
        "reviewers": args.reviewers, "answers_accepted": len(accepted), "double_answers": double,
        "lost_answers": lost, "refused_as_already_answered": sum(r["refused"] for r in api_rounds),
        "answers_per_minute": round(len(accepted) / api_seconds * 60, 1) if api_seconds else None,
    }
    if page_timings:
        q = statistics.quantiles(page_timings, n=20)
        result["page"] = {"rows": len(page_timings), "median_ms": round(statistics.median(page_timings), 1),
                          "p95_ms": round(q[18], 1), "max_ms": round(max(page_timings), 1)}
    result["machine"] = f"{sys.platform}, {__import__('os').cpu_count()} CPUs"
    path = write_results(f"review-{ds.name}.json", result, args.out)
    print(json.dumps(result, indent=2))
    print(f"wrote {path}", file=sys.stderr)
    cleanup(work, args.keep)


if __name__ == "__main__":
    main()
