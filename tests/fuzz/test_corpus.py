"""Replay every input the fuzzer found a bug with: each now meets the untrusted-file contract.

The corpus (``tests/fuzz/corpus/<target>/``) holds the smallest inputs of each crash
signature found by ``benchmarks/fuzz_readers.py`` before the readers were fixed: single
files named ``<sha1 prefix>.<ext>``, or folders of that name for the multi-file targets
(EMPAD ``scan.raw`` + ``scan.xml``, Merlin ``scan.mib`` + ``scan.hdr``); files over 64 KiB
are gzip-compressed (``.gz`` appended). The contract is in :mod:`tests.fuzz._contract`.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.fuzz._contract import TARGETS, run_case

CORPUS = Path(__file__).parent / "corpus"


def _unpacked(source: Path) -> tuple[str, bytes]:
    """A corpus file's name and content (``.gz`` files unpacked, the suffix dropped)."""
    content = source.read_bytes()
    if source.name.endswith(".gz"):
        return source.name.removesuffix(".gz"), gzip.decompress(content)
    return source.name, content


def _entries() -> list[tuple[str, Path]]:
    return sorted(
        (folder.name, entry)
        for folder in CORPUS.iterdir()
        if folder.is_dir()
        for entry in folder.iterdir()
    )


def test_the_corpus_covers_the_fuzzed_formats() -> None:
    targets = {target for target, _ in _entries()}
    assert targets <= set(TARGETS)
    assert {"npy", "npz", "hdf5", "ptyscope-h5", "empad-raw", "inspect"} <= targets


@pytest.mark.parametrize(
    ("target", "entry"), _entries(), ids=[f"{t}/{e.name}" for t, e in _entries()]
)
def test_corpus_input_meets_the_contract(target: str, entry: Path, tmp_path: Path) -> None:
    case = tmp_path / "case"
    case.mkdir()
    if entry.is_dir():
        for item in entry.iterdir():
            name, content = _unpacked(item)
            (case / name).write_bytes(content)
    else:
        name, content = _unpacked(entry)
        (case / f"case{Path(name).suffix}").write_bytes(content)
    outcome = run_case(TARGETS[target], case)
    assert outcome.kind != "violation", f"{outcome.signature}: {outcome.message}"
