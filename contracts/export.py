"""Export the contracts as JSON Schema, one file per actor, for producers in other languages."""

from __future__ import annotations

import json
from pathlib import Path

from contracts.registry import all_contracts


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, contract in all_contracts().items():
        schema = contract.model.model_json_schema()
        # pydantic writes draft 2020-12 without saying so; validators need to know.
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"edujobs:{name}"
        schema["x-edujobs"] = {"actor_name": name, "queue": contract.queue, "priority": contract.priority}
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
