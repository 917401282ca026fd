"""Recorded Hugging Face hub answers for offline tests (see fixtures/hub/README.md).

`FakeHfApi.list_models` returns `ModelInfo`s built from the hub API's JSON (as
`GET /api/models?pipeline_tag=text-classification&search=...&sort=downloads` returns it), and
`fake_download` stands in for `hf_hub_download`: a recorded config.json, or the error the real one
raises for a gated repository or a missing file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub.errors import EntryNotFoundError, GatedRepoError
from huggingface_hub.hf_api import ModelInfo

HUB = Path(__file__).parent / "fixtures" / "hub"


class FakeHfApi:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    def list_models(self, **kwargs: Any) -> list[ModelInfo]:
        self.calls.append(kwargs)
        if self.fail:
            raise ConnectionError("the hub cannot be reached")
        path = HUB / f"list_models-{kwargs.get('search')}.json"
        items = json.loads(path.read_text()) if path.exists() else []
        assert kwargs.get("pipeline_tag") == "text-classification" and kwargs.get("sort") == "downloads"
        return [ModelInfo(**item) for item in items][: kwargs.get("limit") or None]


class FakeDownload:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, repo_id: str, filename: str, **kwargs: Any) -> str:
        self.calls.append(repo_id)
        assert filename == "config.json"
        if "gated" in repo_id:
            raise GatedRepoError(f"Access to model {repo_id} is restricted.")
        path = HUB / "configs" / (repo_id.replace("/", "__") + ".json")
        if not path.exists():
            raise EntryNotFoundError(f"404 Client Error: Entry Not Found for url: .../{repo_id}/resolve/main/config.json")
        return str(path)


def patch_hub(monkeypatch: Any, *, fail: bool = False) -> tuple[FakeHfApi, FakeDownload]:
    """Replace the hub boundary of `labeljury.controller.candidates`."""
    import labeljury.controller.candidates as candidates

    api, download = FakeHfApi(fail=fail), FakeDownload()
    monkeypatch.setattr(candidates, "HfApi", lambda *a, **k: api)
    monkeypatch.setattr(candidates, "hf_hub_download", download)
    return api, download
