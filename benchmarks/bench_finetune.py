"""Fine-tuning time of the `finetune` specialist (all-MiniLM-L6-v2, full fine-tuning) on this CPU.

Trains on --rows random rows of financial-sentiment/annotate.csv for --epochs, then scores
--eval other rows; prints the training time, the update time on --update more rows (one continual
stage), and the accuracy on the unseen rows. Numbers depend on the machine's load: run it alone.

    python benchmarks/bench_finetune.py --rows 2000 --epochs 1 [--batch-size 16] [--lora]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from labeljury.specialists.finetune import FineTunedClassifier

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "financial-sentiment" / "annotate.csv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--update", type=int, default=500)
    ap.add_argument("--eval", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lora", action="store_true")
    args = ap.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} not found (the shared data sets are not on this machine)")
    df = pd.read_csv(DATA).sample(frac=1.0, random_state=0)  # the file is grouped by label: shuffle
    labels = sorted(df.label.unique())
    train = df.iloc[: args.rows]
    upd = df.iloc[args.rows : args.rows + args.update]
    test = df.iloc[args.rows + args.update : args.rows + args.update + args.eval]
    clf = FineTunedClassifier(labels, epochs=args.epochs, batch_size=args.batch_size,
                              max_length=args.max_length, lora=args.lora)
    t0 = time.perf_counter()
    clf.fit(list(train.text), list(train.label))
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    P = clf.predict_proba(list(test.text))
    predict_s = time.perf_counter() - t0
    acc_fit = float((np.array(labels)[P.argmax(1)] == test.label.to_numpy()).mean())
    t0 = time.perf_counter()
    clf.update(list(upd.text), list(upd.label))
    update_s = time.perf_counter() - t0
    P = clf.predict_proba(list(test.text))
    acc_upd = float((np.array(labels)[P.argmax(1)] == test.label.to_numpy()).mean())
    print(json.dumps({"rows": args.rows, "epochs": args.epochs, "batch_size": args.batch_size,
                      "lora": args.lora, "fit_s (incl. model load)": round(fit_s, 1),
                      "train_s": clf.history[0]["seconds"], "update_rows": len(upd),
                      "update_s": round(update_s, 1), f"predict_{len(test)}_s": round(predict_s, 1),
                      "accuracy_after_fit": round(acc_fit, 4), "accuracy_after_update": round(acc_upd, 4)}))


if __name__ == "__main__":
    main()
