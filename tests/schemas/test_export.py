"""The JSON Schema files in the repository are what the models say."""

from schemas.export import JSON_DIR, render


def test_exported_json_schemas_are_current() -> None:
    stale = [name for name, text in render().items()
             if not (JSON_DIR / name).is_file() or (JSON_DIR / name).read_text(encoding="utf-8") != text]
    assert not stale, f"stale JSON Schema files {stale}: run `python -m schemas.export`"


def test_no_unexpected_schema_files_are_left_behind() -> None:
    assert {p.name for p in JSON_DIR.glob("*.json")} == set(render())
