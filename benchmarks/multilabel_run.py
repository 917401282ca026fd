"""labeljury on multi-label tasks (issue "multi-label tasks"): `labeljury run` on GoEmotions and Reuters with the
gold reviewer, scored against every row's true set, beside the 30-line baseline (`multilabel_baseline.py`).

For each set, budget, seed and config the run is a real `pipeline.run` (run store, reviewer, stages, calibration,
estimate, export with `--details`); only the encoder pass is served from the embeddings `multilabel_baseline.py`
cached (the same all-MiniLM-L6-v2 over the same texts). Reported: micro-F1, macro-F1 and exact-set accuracy over
all rows; the run's own estimate of micro-F1 with its 95% interval and whether it covers the truth; the ECE of the
per-label confidences (`annotation_votes`) and of the row confidence (`annotation_confidence`, the chance the
set is right) on the rows the vote labeled; the reviews spent.

    python benchmarks/multilabel_run.py --sets goemotions,reuters --budgets 10,20 --seeds 0 --configs default,audit0

A config: `default` (the task file's defaults) or `audit0` (review.audit: 0, every review trains) or
`mean` (the heads' mean instead of their max) or `isotonic` (the row's confidence calibrated by an isotonic
map instead of a logistic curve), or the task's `voting:` (`soft`, `majority`, `dawid-skene`), or `zeroshot`
(the zero-shot specialist beside the two heads), `zeroshot-ds` (the same, voting by Dawid-Skene), or `cascade`:
a simulated LLM, then the gold reviewer (`SimulatedLLM`: its sets are right less often on texts with more
labels, its confidence only loosely tells; `min_confidence` 0.5): the honesty of the estimate when an LLM
decides some of the reviewed rows (reported: the rows it decided, how often they are right, the audit rows
that measured it). Results: benchmarks/results/multilabel_run.json; a table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import DATA_DIR, parse_percents, write_results  # noqa: E402
from multilabel_baseline import embeddings, read_sets  # noqa: E402

CONFIGS = {"default": {}, "audit0": {"audit": 0}, "mean": {}, "isotonic": {}}
THREE = ["embedding-head", "tfidf-head", "zeroshot"]
TASK: dict[str, dict[str, Any]] = {"soft": {"voting": "soft"}, "majority": {"voting": "majority"},
                                   "dawid-skene": {"voting": "dawid-skene"}, "zeroshot": {"specialists": THREE},
                                   "zeroshot-ds": {"specialists": THREE, "voting": "dawid-skene"}}
OPTIONS = {"mean": {"combine": "mean"}, "isotonic": {"set_calibration": "isotonic"}}


def serve_embeddings(texts: list[str], E: np.ndarray) -> None:  # noqa: N803
    """The encoder answers the cached texts from `E`, anything else (the labels' names) from the real model."""
    import labeljury.specialists as specialists
    from labeljury.specialists.base import bounded
    from labeljury.specialists.encoder import Encoder

    real = specialists.get_encoder
    lookup = {bounded(t): e for t, e in zip(texts, E, strict=True)}

    class Cached(Encoder):
        id, dim = "minilm", int(E.shape[1])

        def _encode(self, batch: list[str], batch_size: int) -> np.ndarray:
            missing = [t for t in batch if t not in lookup]
            if missing:
                lookup.update(zip(missing, real("minilm").encode(missing), strict=True))
            return np.stack([lookup[t] for t in batch])

    cached = Cached()
    specialists.get_encoder = lambda encoder_id: cached if encoder_id == "minilm" else real(encoder_id)


class SimulatedLLM:
    """An LLM reviewer of sets, simulated from the gold sets: right with probability 0.75 on a text with one
    label and 0.4 on one with more (the hard rows are where it errs); a wrong set swaps one true label for
    another or adds one. It says 0.9 confident on 85% of its right sets and 60% of its wrong ones, else 0.4."""

    kind = "llm"

    def __init__(self, texts: list[str], Y: np.ndarray, names: list[str], seed: int):  # noqa: N803
        self.truth = {t: [names[j] for j in np.flatnonzero(y)] for t, y in zip(texts, Y, strict=True)}
        self.names = names
        self.seed = seed

    def review(self, items: list[Any]) -> Any:
        from labeljury.review.base import ReviewResult

        for it in items:
            rng = np.random.default_rng([self.seed, it.key])
            right = list(self.truth[it.text])
            ok = rng.random() < (0.75 if len(right) <= 1 else 0.4)
            labels = right
            if not ok:
                other = [n for n in self.names if n not in right]
                if right and rng.random() < 0.5:
                    labels = sorted(set(right[1:]) | {other[rng.integers(len(other))]})
                else:
                    labels = sorted(set(right) | {other[rng.integers(len(other))]})
            sure = rng.random() < (0.85 if ok else 0.6)
            yield ReviewResult(it.key, "|".join(n for n in self.names if n in labels), "reviewed:llm",
                               0.9 if sure else 0.4)


def ece(conf: np.ndarray, right: np.ndarray, bins: int = 10) -> float:
    edges = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum(abs(conf[edges == b].mean() - right[edges == b].mean()) * (edges == b).sum()
                     for b in range(bins) if (edges == b).any()) / max(1, len(conf)))


def one_run(name: str, path: Path, names: list[str], Y: np.ndarray, budget: float, seed: int, config: str,  # noqa: N803
            workdir: Path) -> dict[str, Any]:
    import pandas as pd

    from labeljury import pipeline
    from labeljury.labelsets import multilabel_scores
    from labeljury.multilabel import SetAnnotator
    from labeljury.task import Task

    review: dict[str, Any] = {"budget": budget, **CONFIGS.get(config, {})}
    gold = {"kind": "gold", "column": "labels"}
    cascade = config == "cascade"
    task = Task.model_validate({"name": name, "labels": {n: "" for n in names}, "multi_label": True, "seed": seed,
                                "reviewer": [{"kind": "llm", "min_confidence": 0.5}, gold] if cascade else [gold],
                                "review": review, **TASK.get(config, {}),
                                **({"llm": {"model": "simulated", "api_key_env": None}} if cascade else {})})
    out = workdir / f"{name}-{budget}-{seed}-{config}.csv"
    t0 = time.perf_counter()
    if cascade:
        from labeljury.multilabel.run import make_set_reviewer
        from labeljury.review.cascade import CascadeReviewer

        texts = pd.read_csv(path, keep_default_na=False, dtype=str)["text"].tolist()
        gold_reviewer = make_set_reviewer(task.model_copy(update={"reviewer": task.reviewer[1:]}), path, workdir)
        reviewer = CascadeReviewer([(SimulatedLLM(texts, Y, names, seed), 0.5), (gold_reviewer, None)])
        report = SetAnnotator(task, path, pipeline.default_run_dir(out), reviewer=reviewer).run(out, details=True)
    elif config in OPTIONS:
        report = SetAnnotator(task, path, pipeline.default_run_dir(out), **OPTIONS[config]).run(out, details=True)
    else:
        report = pipeline.run(task, path, out, details=True)
    seconds = time.perf_counter() - t0
    df = pd.read_csv(out, keep_default_na=False, dtype=str)
    index = {n: j for j, n in enumerate(names)}
    pred = np.zeros_like(Y)
    for r, s in enumerate(df["annotation"]):
        for x in (s.split("|") if s and s != "[]" else []):
            pred[r, index[x]] = 1
    sc = multilabel_scores(Y, pred, names)
    vote = ~df["annotation_source"].str.startswith("reviewed").to_numpy()
    conf = df["annotation_confidence"].replace("", "nan").astype(float).to_numpy()
    per = np.zeros(Y.shape)
    for r, js in enumerate(df["annotation_votes"]):
        for lab, p in json.loads(js or "{}").items():
            per[r, index[lab]] = p
    from labeljury.store import RunStore

    with RunStore(pipeline.default_run_dir(out)) as s:
        meta = s.get_meta("set_estimate") or {}
    ests = {e["metric"]: e for e in meta.get("estimates") or []}
    est, ex = ests.get("micro_f1"), ests.get("exact_set_accuracy")
    by_llm = df["annotation_source"].eq("reviewed:llm").to_numpy()
    llm = None if not by_llm.any() else {
        "rows": int(by_llm.sum()), "exact_right": float((pred[by_llm] == Y[by_llm]).all(axis=1).mean()),
        "confidence_shown": float(conf[by_llm][0]), "measured_on": est and est.get("settled_measured")}
    return {"set": name, "budget": budget, "seed": seed, "config": config, "seconds": round(seconds, 1),
            "reviews": report.reviews, "micro_f1": sc["micro_f1"], "macro_f1": sc["macro_f1"],
            "exact": sc["exact_set_accuracy"],
            "estimate": est and [est["value"], est["low"], est["high"]],
            "covers": None if not est else bool(est["low"] <= sc["micro_f1"] <= est["high"]),
            "estimate_exact": ex and [ex["value"], ex["low"], ex["high"]],
            "covers_exact": None if not ex else bool(ex["low"] <= sc["exact_set_accuracy"] <= ex["high"]),
            "ece_labels": ece(per[vote].ravel(), Y[vote].ravel()) if vote.any() else None,
            "ece_rows": ece(conf[vote], (pred[vote] == Y[vote]).all(axis=1)) if vote.any() else None,
            "llm": llm, "why_no_estimate": meta.get("why")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="goemotions,reuters")
    ap.add_argument("--split", default="test")
    ap.add_argument("--budgets", default="10,20")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--configs", default="default,audit0")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    print("| set | budget | seed | config | micro-F1 | macro-F1 | exact set | estimate of micro-F1 [95%] | covers | "
          "exact-set estimate covers | ECE labels | ECE rows | reviews | s |\n"
          "|---|---:|---:|---|---:|---:|---:|---|---|---|---:|---:|---:|---:|")
    for name in args.sets.split(","):
        path = DATA_DIR / name / f"{args.split}.csv"
        if not path.is_file():
            print(f"skipping {name}: {path} is absent", file=sys.stderr)
            continue
        texts, Y, names = read_sets(path)  # noqa: N806
        serve_embeddings(texts, embeddings(name, args.split, texts))
        for b in parse_percents(args.budgets):
            for seed in [int(s) for s in args.seeds.split(",")]:
                for config in args.configs.split(","):
                    with tempfile.TemporaryDirectory() as tmp:
                        r = one_run(name, path, names, Y, b / 100, seed, config, Path(tmp))
                    rows.append(r)
                    e = r["estimate"]
                    shown = "-" if not e else f"{e[0]:.3f} [{e[1]:.3f}, {e[2]:.3f}]"
                    fmt = (lambda v: "-" if v is None else f"{v:.3f}")  # noqa: E731
                    print(f"| {name} | {b:g}% | {seed} | {config} | {r['micro_f1']:.3f} | {r['macro_f1']:.3f} | "
                          f"{r['exact']:.3f} | {shown} | {r['covers']} | {r['covers_exact']} | {fmt(r['ece_labels'])} | {fmt(r['ece_rows'])} | "
                          f"{r['reviews']} | {r['seconds']:.0f} |", flush=True)
    write_results("multilabel_run.json", {"when": dt.datetime.now().isoformat(timespec="seconds"), "split": args.split,
                                     "runs": rows}, args.out)


if __name__ == "__main__":
    main()
