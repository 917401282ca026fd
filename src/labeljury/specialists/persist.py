"""Fitted scikit-learn objects as plain data: JSON for parameters, a NumPy `.npz` for arrays.

Nothing is pickled, so loading a checkpoint (from a run directory, an exported model or `annotate.py`)
never runs code from the file: `np.load(..., allow_pickle=False)` reads numbers and strings only, and
only the classes listed in `KINDS` can be rebuilt. The rebuilt object predicts exactly as the saved one
(its fitted attributes are the same arrays).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SpecialistError

STATE_FILE = "head.json"
ARRAYS_FILE = "arrays.npz"
# fitted attributes each class needs to predict (arrays or plain values)
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "LogisticRegression": ("sklearn.linear_model", ("coef_", "intercept_", "classes_", "n_features_in_", "n_iter_")),
    "SGDClassifier": ("sklearn.linear_model", ("coef_", "intercept_", "classes_", "n_features_in_", "n_iter_", "t_")),
    "ComplementNB": ("sklearn.naive_bayes", ("classes_", "n_features_in_", "class_count_", "feature_count_",
                                             "feature_all_", "feature_log_prob_", "class_log_prior_")),
}
_DTYPES = {"float32": np.float32, "float64": np.float64}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, type) and value in _DTYPES.values():
        return np.dtype(value).name
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def dump(obj: Any, arrays: dict[str, np.ndarray], key: str) -> dict[str, Any]:
    """A JSON-able description of the fitted `obj`; its arrays go into `arrays` under `key`-prefixed names."""
    kind = type(obj).__name__
    if kind == "FeatureUnion":
        return {"kind": kind, "weights": obj.transformer_weights,
                "parts": [[name, dump(part, arrays, f"{key}.{name}")] for name, part in obj.transformer_list],
                "fingerprint": getattr(obj, "labeljury_fingerprint_", None)}
    if kind == "TfidfVectorizer":
        params = {k: _plain(v) for k, v in obj.get_params().items()}
        if any(callable(params[k]) for k in ("preprocessor", "tokenizer", "analyzer")):
            raise SpecialistError("a vectorizer with a custom callable cannot be saved as plain data")
        arrays[f"{key}.idf"] = np.asarray(obj.idf_)
        terms = sorted(obj.vocabulary_, key=obj.vocabulary_.get)
        if any("\n" in t for t in terms):  # (analyzers fold whitespace, so only a custom token_pattern)
            arrays[f"{key}.terms"] = np.array(terms, dtype=str)
            return {"kind": kind, "params": params, "terms": f"{key}.terms", "idf": f"{key}.idf"}
        # One UTF-8 blob, a line a term: a fixed-width string array pads every term to the longest one
        # (measured: 62 MB for 135k word n-grams, one of them 115 characters; 1.2 MB this way).
        arrays[f"{key}.terms_utf8"] = np.frombuffer("\n".join(terms).encode("utf-8"), dtype=np.uint8)
        return {"kind": kind, "params": params, "terms_utf8": f"{key}.terms_utf8", "idf": f"{key}.idf"}
    if kind in KINDS:
        attrs: dict[str, Any] = {}
        for name in KINDS[kind][1]:
            value = getattr(obj, name)
            if isinstance(value, np.ndarray):
                arrays[f"{key}.{name}"] = value
                attrs[name] = {"array": f"{key}.{name}"}
            else:
                attrs[name] = _plain(value)
        params = {k: _plain(v) for k, v in obj.get_params().items()}
        return {"kind": kind, "params": params, "attrs": attrs}
    raise SpecialistError(f"{kind} cannot be saved as plain data")


def vocabulary_terms(desc: dict[str, Any], arrays: Any) -> list[str]:
    """A saved vectorizer's terms, in column order (both layouts: a UTF-8 blob, or a string array)."""
    if "terms_utf8" in desc:
        blob = arrays[desc["terms_utf8"]].tobytes().decode("utf-8")
        return blob.split("\n") if blob else []
    return [str(t) for t in arrays[desc["terms"]].tolist()]


def load(desc: dict[str, Any], arrays: Any) -> Any:
    """Rebuild what `dump` described (arrays: the loaded `.npz`)."""
    import importlib

    kind = desc["kind"]
    if kind == "FeatureUnion":
        from sklearn.pipeline import FeatureUnion

        union = FeatureUnion([(name, load(part, arrays)) for name, part in desc["parts"]],
                             transformer_weights=desc["weights"])
        if desc.get("fingerprint"):
            union.labeljury_fingerprint_ = desc["fingerprint"]
        return union
    if kind == "TfidfVectorizer":
        from sklearn.feature_extraction.text import TfidfVectorizer

        params = dict(desc["params"])
        params["ngram_range"] = tuple(params["ngram_range"])
        params["dtype"] = _DTYPES[params["dtype"]]
        vec = TfidfVectorizer(**params)
        vec.vocabulary_ = {t: i for i, t in enumerate(vocabulary_terms(desc, arrays))}
        vec.idf_ = arrays[desc["idf"]]
        vec.fixed_vocabulary_ = False
        return vec
    if kind not in KINDS:
        raise SpecialistError(f"a checkpoint holds a {kind!r}, which labeljury does not load")
    module = importlib.import_module(KINDS[kind][0])
    obj = getattr(module, kind)(**desc["params"])
    for name, value in desc["attrs"].items():
        setattr(obj, name, arrays[value["array"]] if isinstance(value, dict) else value)
    return obj


def save_state(path: Path, state: dict[str, Any], objects: dict[str, Any]) -> None:
    """Write `state` (plain JSON) plus the fitted `objects` (name -> sklearn object or None) to
    `path/head.json` and `path/arrays.npz`."""
    arrays: dict[str, np.ndarray] = {}
    described = {}
    for name, obj in objects.items():
        if obj is None:
            described[name] = None
            continue
        described[name] = dump(obj, arrays, name)
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / ARRAYS_FILE, **arrays)
    (path / STATE_FILE).write_text(json.dumps({**state, "objects": described}, indent=1), encoding="utf-8")


def load_state(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, objects) as `save_state` wrote them."""
    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    with np.load(path / ARRAYS_FILE, allow_pickle=False) as arrays:
        objects = {name: None if d is None else load(d, arrays) for name, d in state.pop("objects").items()}
    return state, objects

