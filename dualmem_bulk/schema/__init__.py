"""Arrow schemas of the legacy ``Memory`` and the ``DualMemoryNode``, with fingerprints.

The legacy schema is the snapshot format (what every source is conformed to); the dual schema
is the target format. Both carry their name and version in the schema metadata so a file can
say what it is (see ``inspect``).
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

__all__ = [
    "CARRIED",
    "DECAY_FUNCTION_TYPE",
    "DIM",
    "DUAL_NAME",
    "DUAL_SCHEMA",
    "DUAL_VERSION",
    "EMBEDDING_TYPE",
    "EPISODE_TYPE",
    "LEGACY_NAME",
    "LEGACY_SCHEMA",
    "LEGACY_VERSION",
    "NODE_TYPE_TYPE",
    "PROVENANCE_TYPE",
    "QUARANTINE_SCHEMA",
    "SCHEMA_NAME_KEY",
    "SCHEMA_VERSION_KEY",
    "SNAPSHOT_SCHEMA",
    "TIMESTAMP_TYPE",
    "fingerprint",
    "schema_identity",
]

DIM = 768
"""Embedding dimension of every Engram memory."""

SCHEMA_NAME_KEY = b"dualmem.schema.name"
SCHEMA_VERSION_KEY = b"dualmem.schema.version"
LEGACY_NAME = "engram.Memory"
LEGACY_VERSION = "1"
DUAL_NAME = "engram.DualMemoryNode"
DUAL_VERSION = "1"

TIMESTAMP_TYPE = pa.timestamp("ns", tz="UTC")
EMBEDDING_TYPE = pa.list_(pa.field("item", pa.float32()), DIM)
METADATA_TYPE = pa.map_(pa.utf8(), pa.utf8())

PROVENANCE_TYPE = pa.struct(
    [
        pa.field("model_name", pa.utf8()),
        pa.field("model_version", pa.utf8()),
        pa.field("dimension", pa.uint64()),
        pa.field("language", pa.utf8()),
        pa.field("created_at", pa.uint64()),
        pa.field("quality_score", pa.float32()),
        pa.field("metadata", METADATA_TYPE),
    ]
)
"""Engram's ``EmbeddingProvenance``; ``created_at`` is unix seconds (``SystemTime``)."""

DECAY_FUNCTION_TYPE = pa.struct(
    [
        pa.field("variant", pa.utf8()),
        pa.field("tau_hours", pa.float32()),
        pa.field("beta", pa.float32()),
        pa.field("consolidation_threshold", pa.uint64()),
        pa.field("short_term_tau", pa.float32()),
        pa.field("long_term_beta", pa.float32()),
        pa.field("transition_point", pa.uint64()),
    ]
)
"""Engram's ``DecayFunction`` enum: ``variant`` names it, the fields of other variants are null."""

EPISODE_TYPE = pa.struct(
    [
        pa.field("where_location", pa.utf8()),
        pa.field("who", pa.list_(pa.utf8())),
        pa.field("vividness_confidence", pa.float32()),
        pa.field("reliability_confidence", pa.float32()),
        pa.field("decay_rate", pa.float32()),
        pa.field("decay_function", DECAY_FUNCTION_TYPE),
        pa.field("metadata", METADATA_TYPE),
    ]
)
"""Episode-only fields that ``Memory::from_episode`` drops; kept when the source is a WAL."""

NODE_TYPE_TYPE = pa.dictionary(pa.int8(), pa.utf8())
"""``node_type``: dictionary over {Episode, Concept}."""

_LEGACY_FIELDS = [
    pa.field("id", pa.utf8(), nullable=False),
    pa.field("embedding", EMBEDDING_TYPE, nullable=False),
    pa.field("activation", pa.float32(), nullable=False),
    pa.field("confidence", pa.float32(), nullable=False),
    pa.field("last_access", TIMESTAMP_TYPE, nullable=False),
    pa.field("access_count", pa.uint64(), nullable=False),
    pa.field("created_at", TIMESTAMP_TYPE, nullable=False),
    pa.field("decay_rate", pa.float32(), nullable=False),
    pa.field("content", pa.utf8()),
    pa.field("embedding_provenance", PROVENANCE_TYPE),
    pa.field("space", pa.utf8()),
    pa.field("episode", EPISODE_TYPE),
]


def _with_identity(fields: list[pa.Field], name: str, version: str) -> pa.Schema:
    return pa.schema(fields, metadata={SCHEMA_NAME_KEY: name, SCHEMA_VERSION_KEY: version})


LEGACY_SCHEMA = _with_identity(_LEGACY_FIELDS, LEGACY_NAME, LEGACY_VERSION)
"""The legacy ``Memory`` (snapshot) schema; ``space`` and ``episode`` are null unless the source
is an Engram WAL."""

CARRIED = (
    "embedding",
    "activation",
    "confidence",
    "last_access",
    "created_at",
    "access_count",
    "decay_rate",
    "content",
    "embedding_provenance",
    "space",
    "episode",
)
"""Legacy columns the DualMemoryNode carries unchanged (all but ``id``, which becomes
``episode_id``), in the dual schema's order."""

_BY_NAME = {f.name: f for f in _LEGACY_FIELDS}

DUAL_SCHEMA = _with_identity(
    [
        pa.field("id", pa.binary(16), nullable=False),
        pa.field("node_type", NODE_TYPE_TYPE, nullable=False),
        pa.field("episode_id", pa.utf8()),
        pa.field("strength", pa.float32()),
        pa.field("consolidation_score", pa.float32()),
        pa.field("centroid", EMBEDDING_TYPE),
        pa.field("coherence", pa.float32()),
        pa.field("instance_count", pa.uint32()),
        pa.field("formation_time", TIMESTAMP_TYPE),
        *(_BY_NAME[name] for name in CARRIED),
        pa.field("checksum", pa.binary(32), nullable=False),
    ],
    DUAL_NAME,
    DUAL_VERSION,
)
"""The ``DualMemoryNode`` (target) schema: typed node plus every carried legacy field."""

SNAPSHOT_SCHEMA = LEGACY_SCHEMA.append(pa.field("checksum", pa.binary(32), nullable=False))
"""The run's snapshot: the legacy schema plus each row's BLAKE3 checksum."""

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.utf8(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("id", pa.utf8()),
        pa.field("reason_code", pa.utf8(), nullable=False),
        pa.field("reason", pa.utf8(), nullable=False),
        pa.field("record", pa.utf8()),
    ],
    metadata={SCHEMA_NAME_KEY: "dualmem.Quarantine", SCHEMA_VERSION_KEY: "2"},
)
"""One rejected source row: where it was, why (stable codes, ``;``-separated, and text), and
the record in its source's representation (see :mod:`dualmem_bulk.quarantine`)."""


def schema_identity(schema: pa.Schema) -> tuple[str, str] | None:
    """Return ``(name, version)`` from a schema's metadata, or ``None`` if it carries none."""
    meta = schema.metadata or {}
    if SCHEMA_NAME_KEY not in meta:
        return None
    return meta[SCHEMA_NAME_KEY].decode(), meta.get(SCHEMA_VERSION_KEY, b"?").decode()


def fingerprint(schema: pa.Schema) -> str:
    """A short stable digest of a schema's fields and identity, for the run journal."""
    return hashlib.sha256(schema.serialize().to_pybytes()).hexdigest()[:16]
