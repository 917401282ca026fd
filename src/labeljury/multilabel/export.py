"""A multi-label run's model: the final one-vs-rest heads kept in the run directory as plain data, and what
`labeljury export-model` writes from them (the arrays, the TF-IDF vocabulary, labels.json and a model card).

Nothing is pickled: `arrays.npz` holds each head's weights, intercepts and constant labels and the TF-IDF
idf; `set_model.json` the labels, the views (the encoder's name, the TF-IDF parameters and vocabulary), the
decision rule (per label the larger of the heads' probabilities, in at 0.5, the likeliest label where none
is and the task allows no empty set), the calibration and the score measured out of fold. `SetModel`
loads it back and labels texts; the model card shows the same steps in plain numpy and scikit-learn.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..labelsets import multilabel_scores
from . import vote
from .heads import OneVsRestHead

SET_MODEL = Path("checkpoints") / "sets"  # inside the run directory
ARRAYS, META = "arrays.npz", "set_model.json"
ENCODER = "sentence-transformers/all-MiniLM-L6-v2"  # the run store's embeddings (normalized, 256 tokens)
TFIDF_PARAMS = ("analyzer", "ngram_range", "lowercase", "token_pattern", "sublinear_tf", "norm", "use_idf",
                "smooth_idf", "strip_accents")


def save_set_model(run_dir: Path, labels: Sequence[str], heads: list[tuple[str, OneVsRestHead]], tfidf: Any,
                   allow_empty: bool, combine: str, trained_rows: int, calibration: dict[str, Any],
                   score: dict[str, Any] | None) -> Path:
    """Write the final heads under RUN_DIR/checkpoints/sets (a new folder renamed into place: never half-written)."""
    folder = run_dir / SET_MODEL
    tmp = folder.with_name(".sets.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays: dict[str, np.ndarray] = {"tfidf_idf": np.asarray(tfidf.idf_, np.float64)}
    for name, head in heads:
        arrays[f"{name}_coef"] = np.asarray(head.coef_, np.float32)
        arrays[f"{name}_intercept"] = np.asarray(head.intercept_, np.float64)
        arrays[f"{name}_constant"] = np.asarray(head.constant_, np.float64)
    np.savez_compressed(tmp / ARRAYS, **arrays)
    params = {k: v for k, v in tfidf.get_params().items() if k in TFIDF_PARAMS}
    meta = {"format": 1, "labels": list(labels), "heads": [name for name, _ in heads],
            "encoder": ENCODER, "normalize_embeddings": True,
            "tfidf": {"params": params, "vocabulary": {t: int(i) for t, i in tfidf.vocabulary_.items()}},
            "combine": combine, "threshold": vote.THRESHOLD, "allow_empty": bool(allow_empty),
            "trained_rows": int(trained_rows), "calibration": calibration, "score": score}
    (tmp / META).write_text(json.dumps(meta, ensure_ascii=False))
    old = folder.with_name(".sets.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


@dataclass
class SetModel:
    """A saved multi-label model: `predict_proba(embeddings, texts)` and `predict` of label sets."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @classmethod
    def load(cls, folder: str | Path) -> SetModel:
        folder = Path(folder)
        meta = json.loads((folder / META).read_text())
        with np.load(folder / ARRAYS) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(meta, arrays)

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    def vectorizer(self) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        params = dict(self.meta["tfidf"]["params"])
        params["ngram_range"] = tuple(params["ngram_range"])
        vec = TfidfVectorizer(**params)
        vec.vocabulary_ = dict(self.meta["tfidf"]["vocabulary"])
        vec.idf_ = self.arrays["tfidf_idf"]
        return vec

    def predict_proba(self, embeddings: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """(rows, labels) P(label in the set), from the texts' all-MiniLM-L6-v2 embeddings (normalized) and
        the texts themselves (the TF-IDF view)."""
        views = {"embedding": np.asarray(embeddings, np.float32), "tfidf": self.vectorizer().transform(list(texts))}
        return vote.combine([self.head(name).predict_proba(views[name]) for name in self.meta["heads"]],
                            self.meta["combine"])

    def head(self, name: str) -> OneVsRestHead:
        """The saved head `name`, as the run fitted it."""
        head = OneVsRestHead(self.labels)
        head.classes_ = np.array(self.labels)
        head.coef_ = self.arrays[f"{name}_coef"]
        head.intercept_ = self.arrays[f"{name}_intercept"]
        head.constant_ = self.arrays[f"{name}_constant"]
        return head

    def predict(self, embeddings: np.ndarray, texts: Sequence[str]) -> list[tuple[str, ...]]:
        S = vote.decide(self.predict_proba(embeddings, texts), self.meta["allow_empty"], self.meta["threshold"])  # noqa: N806
        return [tuple(self.labels[j] for j in np.flatnonzero(row)) for row in S]


def set_model_card(meta: dict[str, Any], task: dict[str, Any], folder_name: str, run_dir: Path) -> str:
    """The model card (README.md) of an exported multi-label model."""
    labels = meta["labels"]
    score = meta.get("score")
    if score:
        measured = (f"- **Measured**: micro-F1 {score['micro_f1']:.3f}, macro-F1 {score['macro_f1']:.3f}, exact-set "
                    f"accuracy {score['exact']:.1%} on {score['rows']} audit rows (drawn at random, answered by the "
                    f"{score['reviewer']} reviewer) that no stage picked, each predicted by heads fitted without "
                    "its fifth of the audit (out of fold: this model learned from those rows, so it is measured "
                    "by copies that did not)" + (f"; {score['against']}" if score.get("against") else ""))
    else:
        measured = "- **Not measured**: the run had too small an audit (under 30 answered rows no stage picked)"
    empty = "may be empty" if meta["allow_empty"] else "holds at least one label (the likeliest where none reaches 0.5)"
    return "\n".join([
        f"# {task.get('name') or 'labeljury'}: multi-label model", "",
        f"Trained by labeljury (run `{run_dir.name}`) on {meta['trained_rows']} reviewed rows, the audit's included. "
        f"{len(labels)} labels; a text's set {empty}.", "",
        measured, "",
        "## Labels", "", ", ".join(f"`{lab}`" for lab in labels), "",
        "## How it decides", "",
        "Two one-vs-rest logistic-regression heads, each giving every label a probability: one on the text's "
        f"`{meta['encoder']}` embedding (normalized), one on word 1-2-gram TF-IDF (vocabulary and idf in "
        "this folder). Per label the larger of the two probabilities; a label is in the set at "
        f"{meta['threshold']}.", "",
        "## Use it", "",
        "```python",
        "import json, numpy as np",
        "from sentence_transformers import SentenceTransformer",
        "from sklearn.feature_extraction.text import TfidfVectorizer",
        "",
        f"folder = {folder_name!r}",
        f"meta = json.load(open(f'{{folder}}/{META}'))",
        f"arrays = np.load(f'{{folder}}/{ARRAYS}')",
        "params = dict(meta['tfidf']['params'], ngram_range=tuple(meta['tfidf']['params']['ngram_range']))",
        "tfidf = TfidfVectorizer(**params)",
        "tfidf.vocabulary_, tfidf.idf_ = meta['tfidf']['vocabulary'], arrays['tfidf_idf']",
        "",
        "def label_sets(texts):",
        "    views = {'embedding': SentenceTransformer(meta['encoder']).encode(texts, normalize_embeddings=True),",
        "             'tfidf': tfidf.transform(texts)}",
        "    P = 0",
        "    for h in meta['heads']:",
        "        p = 1 / (1 + np.exp(-(np.asarray(views[h] @ arrays[h + '_coef']) + arrays[h + '_intercept'])))",
        "        fixed = ~np.isnan(arrays[h + '_constant'])  # a label training never varied: its constant",
        "        p[:, fixed] = arrays[h + '_constant'][fixed]",
        "        P = np.maximum(P, p)",
        "    S = P >= meta['threshold']",
        "    if not meta['allow_empty']:",
        "        none = ~S.any(axis=1)",
        "        S[none, P[none].argmax(axis=1)] = True",
        "    return [[meta['labels'][j] for j in np.flatnonzero(row)] for row in S]",
        "```", "",
        "`labels.json` lists the labels in the order of the arrays' columns. The probabilities are the vote's own; the "
        "calibration the run fitted on its audit (isotonic, pooled over labels) is in `set_model.json` "
        "(`calibration`).", ""])


def score_of(P: np.ndarray, T: np.ndarray, allow_empty: bool, reviewer: str, against: str | None) -> dict[str, Any]:  # noqa: N803
    """The model's micro- and macro-F1 and exact-set accuracy of its sets for probabilities `P` on rows whose
    reviewed sets are `T` (out-of-fold predictions of the audit rows no stage picked)."""
    scores = multilabel_scores(T, vote.decide(P, allow_empty))
    return {"micro_f1": float(scores["micro_f1"]), "macro_f1": float(scores["macro_f1"]),
            "exact": float(scores["exact_set_accuracy"]), "rows": int(len(T)), "reviewer": reviewer, "against": against}
