"""The app's pages, declared once: the entry point builds the navigation from it, Home links to it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PAGES_DIR = Path(__file__).resolve().parent.parent / "pages"


@dataclass(frozen=True)
class PageEntry:
    file: str  # file name in pages/
    title: str
    icon: str
    blurb: str  # one line for the Home page

    @property
    def path(self) -> Path:
        return PAGES_DIR / self.file


PAGES: tuple[PageEntry, ...] = (
    PageEntry(
        "home.py", "Home", ":material/home:", "What the app does, where the data came from, models and runs."
    ),
)


def available_pages() -> list[PageEntry]:
    """Pages whose file exists (pages still to be built are simply not listed)."""
    return [p for p in PAGES if p.path.is_file()]
