"""The dashboard at ``/`` (pages come in the next commit)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
