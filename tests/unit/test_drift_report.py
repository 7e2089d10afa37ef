"""The drift report's place in the monitoring package: it renders a result record and
knows nothing of the check that made it (the check and the report once imported each
other). The report's content is tested on a real check in `tests/integration/test_monitor.py`.
"""

from __future__ import annotations

import subprocess
import sys


def test_the_html_report_does_not_import_the_check() -> None:
    """One-way: the check renders the report; the report knows only the result record, so
    the two modules cannot import each other again."""
    code = "import sys, ctloop.monitoring.report; print('ctloop.monitoring.check' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"
