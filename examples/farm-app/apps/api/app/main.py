"""ASGI entry point: ``app.main:app``.

Environment:
- ``FARM_OLLAMA_MODEL``: the model the app uses (default ``farm-tiny:latest``).
- ``FARM_OLLAMA_URL``: where Ollama listens (default ``http://ollama:11434``, the compose service).
- ``FARM_STATIC_DIR``: a directory of built frontend files to serve at ``/`` (optional).
"""

import os
import threading
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .schemas import Health, ModelList, Note, NoteIn

DEFAULT_MODEL = "farm-tiny:latest"
DEFAULT_OLLAMA_URL = "http://ollama:11434"

app = FastAPI(title="farm-app", version="0.1.0")


class NoteStore:
    """In-memory notes with sequential ids, so the same requests give the same answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notes: list[Note] = []

    def add(self, note: NoteIn) -> Note:
        with self._lock:
            stored = Note(
                id=len(self._notes) + 1,
                title=note.title,
                body=note.body,
                words=len(note.body.split()),
            )
            self._notes.append(stored)
            return stored

    def all(self) -> list[Note]:
        with self._lock:
            return list(self._notes)


notes = NoteStore()


@app.get("/health", response_model=Health)
def health() -> Health:
    return Health(status="ok")


@app.post("/api/notes", response_model=Note, status_code=201)
def create_note(note: NoteIn) -> Note:
    return notes.add(note)


@app.get("/api/notes", response_model=list[Note])
def list_notes() -> list[Note]:
    return notes.all()


@app.get("/api/models", response_model=ModelList)
def list_models() -> ModelList:
    model = os.environ.get("FARM_OLLAMA_MODEL", DEFAULT_MODEL)
    return ModelList(
        provider="ollama",
        url=os.environ.get("FARM_OLLAMA_URL", DEFAULT_OLLAMA_URL),
        default=model,
        models=[model],
    )


def _mount_frontend(static_dir: str) -> None:
    # Mounted last: routes are matched in order, so the API above always wins over files.
    path = Path(static_dir)
    if not path.is_dir():
        raise RuntimeError(
            f"FARM_STATIC_DIR={static_dir!r}: expected a directory of built frontend files, found "
            f"{'a file' if path.exists() else 'nothing'}; hint: run `npm run build` in apps/web "
            "and point FARM_STATIC_DIR at its dist/ directory, or unset it"
        )
    app.mount("/", StaticFiles(directory=path, html=True), name="frontend")


if os.environ.get("FARM_STATIC_DIR"):
    _mount_frontend(os.environ["FARM_STATIC_DIR"])
