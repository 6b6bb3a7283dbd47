"""The on-disk contract between stages: records (problems -> solutions -> states -> actions) with their schemas
and provenance (`store`), the checks every read applies (`checks`), local files of rows made elsewhere (`readers`),
and the atomic writes everything on disk goes through (`atomic`). Stages import from here."""

from dapo.records.atomic import (
    clear_leftovers,
    move_aside,
    recover_moved_aside,
    replace_dir,
    staged_dir,
    write_json,
    write_jsonl,
)
from dapo.records.checks import RecordError, SkipCounter
from dapo.records.store import (
    SCHEMAS,
    SHARD_PREFIX,
    Provenance,
    read_provenance,
    read_records,
    schema_of,
    shard_paths,
    validate_row,
    write_records,
)

__all__ = [
    "SCHEMAS",
    "SHARD_PREFIX",
    "Provenance",
    "RecordError",
    "SkipCounter",
    "clear_leftovers",
    "move_aside",
    "read_provenance",
    "read_records",
    "recover_moved_aside",
    "replace_dir",
    "schema_of",
    "shard_paths",
    "staged_dir",
    "validate_row",
    "write_json",
    "write_jsonl",
    "write_records",
]
