"""Built-in models shipped as chunk packages: found without importing, assembled once, checked."""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

import pytest

from mistudio.core.models import bundled
from mistudio.core.runtime.errors import CorruptedError, NotFoundError

CHUNKS = (b"GGUF" + bytes(range(256)) * 40, bytes(reversed(range(256))) * 30, b"tail")


def _fake_model(root: Path, chunks: tuple[bytes, ...] = CHUNKS,
                published: bytes | None = None) -> bundled.BundledModel:
    """Chunk packages ``fake_chunk_N`` on the path, each with ``data/fake.gguf.partNN``; their
    __init__ raises, so any import of them fails the test."""
    pieces = []
    for i, data in enumerate(chunks):
        pkg = root / f"fake_chunk_{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('never imported')\n")
        (pkg / "data" / f"fake.gguf.part{i:02d}").write_bytes(data)
        pieces.append((pkg.name, f"data/fake.gguf.part{i:02d}"))
    digest = hashlib.sha256(published if published is not None else b"".join(chunks))
    return bundled.BundledModel("fake", "a fake", "fake.gguf", tuple(pieces),
                                ("fake-chunk==1",), sha256=digest.hexdigest())


@pytest.fixture
def pkgs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("MISTUDIO_CACHE", str(tmp_path / "cache"))
    importlib.invalidate_caches()
    return root


def test_chunks_are_assembled_once_and_never_imported(pkgs: Path, tmp_path: Path) -> None:
    model = _fake_model(pkgs)
    assert bundled.is_installed(model)
    path = bundled.gguf_path(model)
    assert path == tmp_path / "cache" / "fake" / "fake.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    stamp = path.stat().st_mtime_ns
    assert bundled.gguf_path(model) == path and path.stat().st_mtime_ns == stamp  # kept
    assert not any(name.startswith("fake_chunk") for name in sys.modules)
    assert not list(path.parent.glob(".*partial"))


def test_a_truncated_assembly_is_made_again(pkgs: Path) -> None:
    model = _fake_model(pkgs)
    path = bundled.gguf_path(model)
    path.write_bytes(path.read_bytes()[:100])  # a copy cut short (a full disk, a kill)
    assert bundled.gguf_path(model).read_bytes() == b"".join(CHUNKS)


def test_chunks_that_do_not_match_the_published_sha256_are_refused(pkgs: Path) -> None:
    model = _fake_model(pkgs, published=b"something else")
    with pytest.raises(CorruptedError, match="sha256") as err:
        bundled.gguf_path(model)
    assert "fake-chunk==1" in str(err.value)  # how to reinstall it
    target = Path(bundled.cache_root()) / "fake"
    assert not (target / "fake.gguf").exists() and not list(target.glob(".*partial"))


def test_a_missing_chunk_package_says_what_to_install(pkgs: Path) -> None:
    model = _fake_model(pkgs)
    missing = bundled.BundledModel("fake", "a fake", "fake.gguf",
                                   (*model.pieces, ("no_such_chunk_pkg", "data/x")),
                                   model.requirements)
    assert not bundled.is_installed(missing)
    with pytest.raises(NotFoundError, match="not installed") as err:
        bundled.gguf_path(missing)
    assert "install its packages (fake-chunk==1" in str(err.value).lower()
