"""Where the checkout's files are, so a test finds them from any tier's folder."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FEATURES_DIR = ROOT / "features"
EXAMPLE_VIEWS_DIR = ROOT / "examples" / "views"
DAGS_DIR = ROOT / "dags"
