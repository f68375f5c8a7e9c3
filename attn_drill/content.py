"""Where the shipped content lives: starters, reference solutions, checks and data files.

In a clone (or an editable install) starters and solutions sit at the top of the
repository; a wheel carries them under ``attn_drill/_content``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKS_DIR = PACKAGE_DIR / "checks"
QUESTIONS_DIR = PACKAGE_DIR / "questions"
CATALOG_FILE = PACKAGE_DIR / "catalog.toml"


def _content_root() -> Path:
    packaged = PACKAGE_DIR / "_content"
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent


def starters_dir() -> Path:
    return _content_root() / "exercises"


def solutions_dir() -> Path:
    return _content_root() / "solutions"
