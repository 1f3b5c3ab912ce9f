"""Tests for the app's developers (not run by farm's CI): `pip install -r requirements-dev.txt && pytest`."""

import importlib

import pytest
from fastapi.testclient import TestClient

import app.main


@pytest.fixture
def client(monkeypatch):
    """A fresh app per test, so the note store and env-driven settings start clean."""
    monkeypatch.delenv("FARM_STATIC_DIR", raising=False)
    monkeypatch.delenv("FARM_OLLAMA_MODEL", raising=False)
    return TestClient(importlib.reload(app.main).app)


def test_health_reports_ok(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_create_note_counts_words_and_numbers_ids_sequentially(client):
    first = client.post("/api/notes", json={"title": "a", "body": "one two  three"})
    second = client.post("/api/notes", json={"title": "b", "body": ""})
    assert first.status_code == 201
    assert first.json() == {"id": 1, "title": "a", "body": "one two  three", "words": 3}
    assert second.json() == {"id": 2, "title": "b", "body": "", "words": 0}
    assert [n["id"] for n in client.get("/api/notes").json()] == [1, 2]


def test_create_note_rejects_empty_title(client):
    response = client.post("/api/notes", json={"title": "", "body": "x"})
    assert response.status_code == 422


def test_models_default_and_env_override(client, monkeypatch):
    assert client.get("/api/models").json()["default"] == "farm-tiny:latest"
    monkeypatch.setenv("FARM_OLLAMA_MODEL", "other:1b")
    assert client.get("/api/models").json()["models"] == ["other:1b"]


def test_openapi_lists_exactly_the_api_paths(client):
    assert sorted(client.app.openapi()["paths"]) == ["/api/models", "/api/notes", "/health"]


def test_static_dir_serves_index_without_shadowing_api(tmp_path, monkeypatch):
    (tmp_path / "index.html").write_text("<!doctype html><title>farm-app</title>")
    monkeypatch.setenv("FARM_STATIC_DIR", str(tmp_path))
    client = TestClient(importlib.reload(app.main).app)
    assert "farm-app" in client.get("/").text
    assert client.get("/health").json() == {"status": "ok"}


def test_static_dir_that_is_missing_fails_with_the_path(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    monkeypatch.setenv("FARM_STATIC_DIR", str(missing))
    with pytest.raises(RuntimeError, match="nope"):
        importlib.reload(app.main)
    monkeypatch.delenv("FARM_STATIC_DIR")
    importlib.reload(app.main)
