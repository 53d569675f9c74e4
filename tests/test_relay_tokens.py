"""Node tokens: stored hashed, verified in constant time, managed from the command line."""

import json
from pathlib import Path

import pytest

from relay.errors import TokenError
from relay.tokens import TokenStore


def test_add_verify_revoke(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    token_a = store.add("gpu-a")
    token_b = store.add("gpu-b")
    assert token_a != token_b
    assert len(token_a) >= 43  # 32 random bytes, url-safe base64
    assert store.verify(token_a) == "gpu-a"
    assert store.verify(token_b) == "gpu-b"
    assert store.verify("not-a-token") is None
    store.revoke("gpu-a")
    assert store.verify(token_a) is None
    assert [t.name for t in store.list()] == ["gpu-b"]


def test_only_hashes_are_stored_owner_readable(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    token = store.add("node1")
    text = store.path.read_text()
    assert token not in text
    assert len(json.loads(text)["node1"]["sha256"]) == 64
    assert store.path.stat().st_mode & 0o077 == 0


def test_duplicate_unknown_and_bad_names_are_refused(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.add("node1")
    with pytest.raises(TokenError, match="already has a token"):
        store.add("node1")
    with pytest.raises(TokenError, match="no node called"):
        store.revoke("ghost")
    with pytest.raises(TokenError, match="not allowed"):
        store.add("../etc/passwd")
