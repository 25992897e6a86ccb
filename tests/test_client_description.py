"""``latewise.store.client``: making Chroma clients, describing where one points, reopening it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from latewise import InvalidInputError
from latewise.store.client import client_from_description, describe_client, make_client


def test_embedded_folder_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client(tmp_path / "db")
    client.get_or_create_collection("kept", embedding_function=None)
    described = describe_client(client)
    assert described == {"type": "persistent", "path": str((tmp_path / "db").resolve())}
    again = client_from_description(json.loads(json.dumps(described)))  # JSON-ready
    assert [c.name for c in again.list_collections()] == ["kept"]
    # No path, server or ephemeral: the default folder ./.latewise, created on demand.
    monkeypatch.chdir(tmp_path)
    assert describe_client(make_client())["path"] == str((tmp_path / ".latewise").resolve())


def test_ephemeral_client() -> None:
    client = make_client(ephemeral=True)
    assert describe_client(client) == {"type": "ephemeral"}
    name = f"t-{uuid.uuid4().hex[:8]}"
    client.get_or_create_collection(name, embedding_function=None)
    # Chroma's in-memory clients share one database per process.
    assert name in [
        c.name for c in client_from_description({"type": "ephemeral"}).list_collections()
    ]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": "db", "ephemeral": True}, "not several"),
        ({"server": "localhost:8000", "path": "db"}, "not several"),
        ({"server": "localhost:notaport"}, "invalid port"),
        ({"server": "ftp://host:21"}, "host:port"),
        ({"server": "http://host:8000/api"}, "host:port"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        make_client(**kwargs)  # type: ignore[arg-type]


def test_bad_descriptions() -> None:
    with pytest.raises(InvalidInputError, match="unknown Chroma client type"):
        client_from_description({"type": "sqlite"})
    with pytest.raises(InvalidInputError, match="needs its 'path'"):
        client_from_description({"type": "persistent"})
    with pytest.raises(InvalidInputError, match="needs its 'host'"):
        client_from_description({"type": "http", "port": 8000})


@pytest.mark.server
def test_server_round_trips(chroma_server: tuple[str, int]) -> None:
    host, port = chroma_server
    client = make_client(server=f"{host}:{port}")
    name = f"t-{uuid.uuid4().hex[:8]}"
    client.get_or_create_collection(name, embedding_function=None)
    described = describe_client(client)
    assert described["type"] == "http"
    assert (described["host"], described["port"], described["ssl"]) == (host, port, False)
    again = client_from_description(described)
    assert name in [c.name for c in again.list_collections()]
    assert describe_client(make_client(server=f"http://{host}:{port}")) == described
    client.delete_collection(name)
