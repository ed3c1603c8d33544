"""Write the JSON Schema of every model to ``schemas/json/`` (``python -m schemas.export``).

Other languages (an Orthanc Lua/Python script, a scanner-side hook) validate against these.
A test fails when the files are stale, so regenerate them after changing a model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, cast

from pydantic import TypeAdapter

from schemas.dataset import DatasetRecord
from schemas.job import JobSpec, Resources
from schemas.manifest import Manifest
from schemas.messages import (
    AnalysisRequested,
    BatchClosed,
    DatasetCreated,
    DatasetIndexed,
    InstanceReceived,
    JobRequested,
    JobStatus,
    Message,
)
from schemas.processor import Processor
from schemas.series import SeriesSummary

JSON_DIR = Path(__file__).parent / "json"

MODELS: dict[str, Any] = {
    "dataset.schema.json": DatasetRecord,
    "manifest.schema.json": Manifest,
    "job-spec.schema.json": JobSpec,
    "resources.schema.json": Resources,
    "message.schema.json": TypeAdapter(cast(Any, Message)),
    "message.instance-received.schema.json": InstanceReceived,
    "message.batch-closed.schema.json": BatchClosed,
    "series.schema.json": SeriesSummary,
    "message.dataset-created.schema.json": DatasetCreated,
    "message.dataset-indexed.schema.json": DatasetIndexed,
    "processor.schema.json": Processor,
    "message.job-requested.schema.json": JobRequested,
    "message.job-status.schema.json": JobStatus,
    "message.analysis-requested.schema.json": AnalysisRequested,
}


def render() -> dict[str, str]:
    """File name -> JSON Schema text, exactly as stored in the repository."""
    out = {}
    for name, model in MODELS.items():
        adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
        schema = adapter.json_schema(by_alias=True, mode="validation")
        schema["$id"] = f"https://nps.invalid/schemas/{name}"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[name] = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return out


def main(argv: list[str]) -> int:
    """Write every schema file and print what changed; with ``--check``, only report staleness."""
    check = "--check" in argv
    JSON_DIR.mkdir(exist_ok=True)
    stale = []
    for name, text in render().items():
        path = JSON_DIR / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
            if not check:
                path.write_text(text, encoding="utf-8")
                print(f"wrote {path}")
    if check and stale:
        print(f"stale JSON Schema files: {', '.join(stale)}; run `make schemas`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
