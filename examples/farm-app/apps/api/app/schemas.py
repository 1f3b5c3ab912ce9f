"""Request and response models; they are what the OpenAPI schema exposes."""

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str


class NoteIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(default="", max_length=10_000)


class Note(BaseModel):
    id: int
    title: str
    body: str
    words: int


class ModelList(BaseModel):
    provider: str
    url: str
    default: str
    models: list[str]
