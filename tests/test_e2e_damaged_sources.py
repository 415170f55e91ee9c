"""Property: whatever damage a source file has (truncated, bytes flipped, random garbage), the
commands that read sources (``inspect``, ``export``, ``convert``) answer with a documented exit
code, never 70 and never a traceback, within a time limit (no hang); a refused conversion
leaves neither a target nor a run directory behind. Real files, real subprocesses."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

Damage = tuple[str, object]
DAMAGES = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("flip"), st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
        min_size=1, max_size=16)),
    st.tuples(st.just("garbage"), st.binary(max_size=4096)),
)


def damaged(good: bytes, damage: Damage) -> bytes:
    kind, how = damage
    if kind == "truncate":
        assert isinstance(how, float)
        return good[: int(len(good) * how)]
    if kind == "flip":
        assert isinstance(how, list)
        out = bytearray(good)
        for where, mask in how:
            out[int(len(out) * where)] ^= mask
        return bytes(out)
    assert isinstance(how, bytes)
    return how


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small generated source in each format (paths: a failing example's report shows its
    arguments, and the files' bytes would make it 400 kB long)."""
    root = tmp_path_factory.mktemp("sources")
    out = {}
    for fmt in ("parquet", "jsonl"):
        path = root / f"m.{fmt}"
        done = subprocess.run([sys.executable, "-m", "dualmem_bulk", "generate", str(path),
                               "--nodes", "20", "--format", fmt], capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr
        out[fmt] = path
    return out


@settings(max_examples=15, deadline=None)
@given(fmt=st.sampled_from(["parquet", "jsonl"]), damage=DAMAGES,
       command=st.sampled_from(["inspect", "export", "convert"]))
def test_damaged_source_never_exits_70(sources: dict[str, Path], fmt: str, damage: Damage,
                                       command: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        source = root / f"in.{fmt}"
        source.write_bytes(damaged(sources[fmt].read_bytes(), damage))
        target, snapshot = root / "n.lance", root / "s.parquet"
        args = {"inspect": [source], "export": [source, snapshot],
                "convert": [source, target]}[command]
        done = subprocess.run([sys.executable, "-m", "dualmem_bulk", command, *map(str, args),
                               "--quiet"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=120)
        assert done.returncode in (0, 1, 2, 3, 4), done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        if done.returncode == 3:
            assert done.stderr.startswith("error: "), done.stderr
            assert sorted(p.name for p in root.iterdir()) == [source.name], done.stderr
