"""Shared helpers of the benchmark scripts: the datasets, task files, and one measurement per fresh
child process (so wall time and peak RSS of one configuration never mix with another's).

Not a benchmark itself. The data is read from ``../shared/data`` relative to the repository root and
never copied into the repository: a `--limit`ed input, the run directories and the labeled outputs
live in a temporary folder outside the repository; only metrics (JSON) go to ``benchmarks/results/``.

    python benchmarks/benchlib.py worker SPEC.json RESULT.json   # internal: one measurement
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = (REPO / ".." / "shared" / "data").resolve()
RESULTS_DIR = REPO / "benchmarks" / "results"


@dataclass(frozen=True)
class Dataset:
    name: str
    split: str
    text_column: str = "text"
    label_column: str = "label"

    @property
    def path(self) -> Path:
        return DATA_DIR / self.name / f"{self.split}.csv"


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("financial-sentiment", "annotate"),
        Dataset("tweet-sentiment", "annotate"),
        Dataset("offensive", "train"),
        Dataset("hate", "train"),
        Dataset("emotion", "train"),
        Dataset("tweeteval-sentiment", "test"),
        Dataset("ag-news", "test"),
    )
}

# The paper's rows (../shared/docs/paper.md, "Results to beat"), accuracy %. The paper gives no review
# rate for the human-reviewer row; its LLM runs sent about 26% of the sentiment rows for review.
PAPER_ROWS: dict[str, dict[str, float]] = {
    "best single SLM": {"tweet-sentiment": 70.43, "financial-sentiment": 70.31},
    "GPT-3.5-turbo zero-shot, every row": {"tweet-sentiment": 65.14, "financial-sentiment": 72.91},
    "AutoAnnotator + GPT-3.5-turbo (26% reviewed)": {"tweet-sentiment": 67.89, "financial-sentiment": 78.56},
    "AutoAnnotator + Minimax": {"tweet-sentiment": 67.78, "financial-sentiment": 81.20},
    "AutoAnnotator + human reviewer": {"tweet-sentiment": 78.33, "financial-sentiment": 82.83},
}


def pick_datasets(names: str | None, default: list[str]) -> list[Dataset]:
    """The named datasets that are present; absent ones are skipped with a note on stderr."""
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else default
    out = []
    for n in wanted:
        if n not in DATASETS:
            sys.exit(f"unknown dataset {n!r}; choose from {', '.join(DATASETS)}")
        if not DATASETS[n].path.is_file():
            print(f"skipping {n}: {DATASETS[n].path} is absent", file=sys.stderr)
            continue
        out.append(DATASETS[n])
    return out


def parse_percents(text: str) -> list[float]:
    """'5,10,20,26' -> [5.0, 10.0, 20.0, 26.0] (percent of the rows)."""
    vals = [float(x) for x in text.split(",") if x.strip()]
    for v in vals:
        if not 0 <= v <= 100:
            sys.exit(f"budget {v} is not a percentage in [0, 100]")
    return vals


def budget_value(percent: float) -> float | int:
    """The task file's `review.budget` for a percentage: a fraction, or the count 0 for no review."""
    return 0 if percent == 0 else round(percent / 100.0, 6)


def read_frame(ds: Dataset, limit: int | None):
    import pandas as pd

    df = pd.read_csv(ds.path)
    return df.head(limit).reset_index(drop=True) if limit else df


def prepare_input(ds: Dataset, limit: int | None, workdir: Path) -> Path:
    """The dataset's file itself, or its first `limit` rows written to `workdir` (outside the repo)."""
    if not limit:
        return ds.path
    out = workdir / f"{ds.name}-{limit}.csv"
    if not out.exists():
        read_frame(ds, limit).to_csv(out, index=False)
    return out


def labels_of(ds: Dataset) -> list[str]:
    """The label set of the whole dataset file (a `--limit`ed head may lack a label: the financial set
    is stored in runs of one label, so its first 300 rows hold no `neutral`)."""
    import pandas as pd

    return sorted(pd.read_csv(ds.path, usecols=[ds.label_column])[ds.label_column].dropna().astype(str).unique())


def task_dict(ds: Dataset, labels: list[str], budget: float | int, voting: str = "soft",
              continual: bool | None = None, seed: int = 0) -> dict[str, Any]:
    """A task file for `ds`: labels from the data, specialists auto, the gold reviewer."""
    task: dict[str, Any] = {
        "name": f"bench-{ds.name}",
        "labels": labels,
        "text_column": ds.text_column,
        "specialists": "auto",
        "voting": voting,
        "reviewer": {"kind": "gold", "column": ds.label_column},
        "review": {"budget": budget},
        "seed": seed,
    }
    if continual is not None:
        task["continual"] = {"enabled": continual}
    return task


def make_workdir(keep: bool) -> Path:
    d = Path(tempfile.mkdtemp(prefix="labeljury-bench-"))
    if keep:
        print(f"run directories and outputs are kept in {d}", file=sys.stderr)
    return d


def cleanup(workdir: Path, keep: bool) -> None:
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)


def write_results(name: str, payload: dict[str, Any], out: str | None) -> Path:
    path = Path(out) if out else RESULTS_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def limit_suffix(limit: int | None) -> str:
    return f"-limit{limit}" if limit else ""


# -- one measurement in a fresh child process ------------------------------------------------------------
def measure(spec: dict[str, Any], workdir: Path, timeout: float | None = None) -> dict[str, Any]:
    """Run `spec` (see `_worker`) in a fresh Python process; add that child's peak RSS (MB, from
    wait4, so it is this child's alone) and its process wall time (imports included)."""
    tag = f"{spec['kind']}-{time.monotonic_ns()}"
    spec_path, result_path = workdir / f"{tag}.spec.json", workdir / f"{tag}.result.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"),
               TOKENIZERS_PARALLELISM="false")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "worker", str(spec_path), str(result_path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    err_text = proc.stderr.read()  # the child's stderr (progress bars, warnings, tracebacks)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - t0
    result: dict[str, Any] = {}
    if result_path.exists():
        result = json.loads(result_path.read_text())
    if proc.returncode != 0 or "error" in result or not result:
        tail = err_text.strip().splitlines()[-5:]
        result.setdefault("error", " | ".join(tail) or f"exit code {proc.returncode}")
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux: kilobytes
    result["process_seconds"] = round(elapsed, 2)
    result["returncode"] = proc.returncode
    return result


def _self_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _encode_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One encoder pass over the unique non-empty texts (what the pipeline encodes), timed."""
    import pandas as pd

    t0 = time.perf_counter()
    from labeljury.specialists import DEFAULT_ENCODER, get_encoder

    col = spec["text_column"]
    texts = pd.read_csv(spec["input"], usecols=[col])[col]
    texts = [t for t in dict.fromkeys(texts.tolist()) if isinstance(t, str) and t.strip()]
    t1 = time.perf_counter()
    enc = get_encoder(spec.get("encoder") or DEFAULT_ENCODER)
    t2 = time.perf_counter()
    emb = enc.encode(texts)
    t3 = time.perf_counter()
    if spec.get("save"):
        import numpy as np

        np.save(spec["save"], emb)
    return {"texts": len(texts), "dim": int(emb.shape[1]), "import_read_seconds": round(t1 - t0, 3),
            "load_seconds": round(t2 - t1, 3), "encode_seconds": round(t3 - t2, 3),
            "texts_per_second": round(len(texts) / max(t3 - t2, 1e-9), 1), "self_rss_mb": _self_rss_mb()}


def _pipeline_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import labeljury
    from labeljury.store import RunStore

    if spec.get("emb_cache"):
        _use_cached_embeddings(spec["input"], spec["text_column"] if "text_column" in spec else "text",
                               spec["emb_cache"])
    t_import = time.perf_counter()
    task_path = Path(spec["task_path"])
    task = labeljury.load_task(task_path)
    out, run_dir = Path(spec["output"]), Path(spec["run_dir"])
    t0 = time.perf_counter()
    reviewer = None
    from labeljury.context import Tuning

    tuning = Tuning(**spec.get("tuning", {}))  # settings measured again (bench_audit.py --tilt)
    if spec.get("simulated"):  # a reviewer that is often wrong (benchmarks/simulated_reviewer.py)
        from simulated_reviewer import SimulatedReviewer

        sim = spec["simulated"]
        reviewer = SimulatedReviewer(spec["input"], spec["gold_column"], task.label_names, sim["accuracy"],
                                     sim.get("variant", "uniform"), sim.get("seed", 0), sim.get("weigh", True))
        # settings that were measured and lost, passed to the run as typed fields (labeljury.context.Tuning)
        tuning = Tuning(train_weights=bool(sim.get("train_weights")),
                        corrected_vote_weights=bool(sim.get("corrected_vote_weights")),
                        trust_correction=sim.get("trust_correction", True),
                        second_look=sim.get("second_look", True))
        if sim.get("oracle_training"):  # a bound, not a method: specialists learn the truth of each answer
            truth, learned = reviewer.truth, RunStore.learned_labels

            def truthful(self: RunStore, start: int = 0, stop: int | None = None) -> tuple[Any, list[str]]:
                ids, labels = learned(self, start, stop)
                return ids, [truth.get(t, lab) for t, lab in zip(ids.tolist(), labels, strict=True)]

            RunStore.learned_labels = truthful  # type: ignore[method-assign]
        if sim.get("then_gold"):  # a cascade: the noisy reviewer, then people (scripted from gold)
            from labeljury.review.cascade import CascadeReviewer
            from labeljury.review.gold import GoldReviewer

            reviewer = CascadeReviewer([(reviewer, None),
                                        (GoldReviewer(spec["input"], spec["gold_column"], task.label_names), None)])
    report = labeljury.run(task, spec["input"], out, run_dir, details=True, reviewer=reviewer, tuning=tuning)
    wall = time.perf_counter() - t0
    rss_after_run = _self_rss_mb()
    result: dict[str, Any] = {"status": report.status, "rows": report.rows, "texts": report.texts,
                              "wall_seconds": round(wall, 2), "rows_per_second": round(report.rows / max(wall, 1e-9), 1),
                              "reviews": report.reviews, "budget_rows": report.budget, "sources": report.sources,
                              "specialists": report.specialists, "self_rss_mb": rss_after_run,
                              "task_setup_seconds": round(t0 - t_import, 3)}
    if report.status != "complete":
        result["error"] = f"run ended with status {report.status!r} ({report.pending} pending reviews)"
        return result
    ev = labeljury.evaluate(out, spec["gold_column"], run_dir)
    result.update(accuracy=ev.accuracy, macro_f1=ev.macro_f1, coverage=ev.coverage, review_rate=ev.review_rate,
                  vote_accuracy=ev.vote_accuracy, specialist_accuracy=ev.specialist_accuracy,
                  by_source=ev.by_source, labeled_accuracy=ev.labeled_accuracy, ece=ev.ece,
                  estimated_accuracy=ev.estimated_accuracy, estimated_low=ev.estimated_accuracy_low,
                  estimated_high=ev.estimated_accuracy_high, covered=ev.estimate_covers_truth,
                  audit_rows=ev.audit_rows, ece_raw=_raw_ece(out, spec["gold_column"]))
    # What the run store keeps stage by stage (may be empty: no trainable specialist, or no continual).
    with RunStore.existing(run_dir) as store:
        stages = store.stages()
        result["budget_plan"] = store.get_meta("budget_plan")
        result["audit_bought"] = store.get_meta("audit_bought")  # what the audit cost and fixed
    result["stages"] = stages
    if spec.get("simulated"):
        result["reviewer"] = _reviewer_metrics(out, spec["gold_column"])
        with RunStore.existing(run_dir) as store:
            result["weighing"] = store.get_meta("weighing")
        from labeljury.status import run_status

        result["second_looks"] = run_status(run_dir)["second_looks"]
    verdicts = [m["promoted"] for st in stages if not st.get("final") for m in st["specialists"].values()
                if "promoted" in m]
    result["rollbacks"] = [sum(not v for v in verdicts), len(verdicts)]
    return result


def _reviewer_metrics(output: Path, gold_column: str) -> dict[str, Any]:
    """How right the reviewer's own answers were, how right the rows it answered came out, how right the
    rest, and the flags against the reviewer's actual mistakes."""
    import pandas as pd

    df = pd.read_csv(output, keep_default_na=False, dtype=str)
    asked = df[df["annotation_review"] != ""]
    rest = df[(df["annotation_review"] == "") & (df["annotation"] != "")]
    wrong = asked["annotation_review"] != asked[gold_column]
    flagged = asked["annotation_flag"] != ""
    over = asked["annotation_source"].str.startswith("vote:over-")
    return {"rows": int(len(asked)), "answers_right": float((~wrong).mean()) if len(asked) else None,
            "reviewed_rows_right": float((asked["annotation"] == asked[gold_column]).mean()) if len(asked) else None,
            "other_rows_right": float((rest["annotation"] == rest[gold_column]).mean()) if len(rest) else None,
            "overruled": int(over.sum()),
            "overruled_right": float((asked["annotation"][over] == asked[gold_column][over]).mean()) if over.any() else None,
            "flagged": int(flagged.sum()),
            "flag_precision": float(wrong[flagged].mean()) if flagged.any() else None,
            "flag_recall": float(flagged[wrong].mean()) if wrong.any() else None}


def _raw_ece(output: Path, gold_column: str) -> float:
    """ECE of the vote's own confidence (before calibration) on the rows the vote labeled."""
    import pandas as pd

    from labeljury.trust import ece

    df = pd.read_csv(output, keep_default_na=False, dtype=str)
    voted = df[df["annotation_source"].isin(["consensus", "vote"])]
    return ece(voted["annotation_vote_confidence"].astype(float).to_numpy(),
               (voted["annotation"] == voted[gold_column]).to_numpy(dtype=float))


def _use_cached_embeddings(input_path: str, text_column: str, npy: str) -> None:
    """Serve the encoder from embeddings computed earlier by labeljury's own encoder over the same
    file (row order), so configurations that differ only after encoding do not each pay the pass."""
    import numpy as np
    import pandas as pd

    import labeljury.pipeline.encode as encode_step
    from labeljury.specialists.base import bounded
    from labeljury.specialists.encoder import Encoder, get_encoder

    # the rows `_encode_worker` encoded: the file's distinct non-empty texts, in order of first appearance
    column = pd.read_csv(input_path, usecols=[text_column])[text_column].tolist()
    texts = [t for t in dict.fromkeys(column) if isinstance(t, str) and t.strip()]
    E = np.load(npy)
    if len(E) != len(texts):
        raise ValueError(f"{npy} has {len(E)} rows, {input_path} {len(texts)} distinct texts")
    lookup: dict[str, np.ndarray] = {}
    for t, e in zip(texts, E):
        lookup.setdefault(bounded(t), e)

    class CachedEncoder(Encoder):
        id, dim = "minilm", int(E.shape[1])

        def _encode(self, batch: list[str], batch_size: int) -> np.ndarray:
            missing = [t for t in batch if t not in lookup]
            if missing:  # not in the cache (e.g. label descriptions for zero-shot): the real model
                for t, e in zip(missing, get_encoder("minilm").encode(missing)):
                    lookup[t] = e
            return np.stack([lookup[t] for t in batch])

    cached = CachedEncoder()
    encode_step.get_encoder = lambda encoder_id: cached  # the run's one encoder pass reads the cache


def _worker(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    try:
        if "module" in spec:  # another benchmark's own worker (its module sits beside this one)
            import importlib

            work = importlib.import_module(spec["module"]).worker
        else:
            work = {"encode": _encode_worker, "pipeline": _pipeline_worker}[spec["kind"]]
        result = work(spec)
    except Exception as err:  # noqa: BLE001 - reported in the results, the benchmark goes on
        import traceback

        traceback.print_exc()
        result = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    Path(result_path).write_text(json.dumps(result, default=str))
    return 0 if "error" not in result else 1


def fmt(v: Any, pct: bool = False, digits: int = 1) -> str:
    if v is None:
        return "—"
    if pct:
        return f"{100 * v:.{digits}f}"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        sys.exit(_worker(sys.argv[2], sys.argv[3]))
    sys.exit(__doc__)
