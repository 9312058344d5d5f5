"""An accessibility smoke check, run inside the page: what axe-style tools flag first.

It is not a full audit. It catches the regressions that matter most on the console: caption
regions that screen readers would not announce, controls without a name, form fields without
a label, duplicate ids, and text below WCAG AA contrast (4.5:1, or 3:1 for large text) against
the background it is actually drawn on.
"""

from __future__ import annotations

from pathlib import Path

CHECK = (Path(__file__).with_name("a11y_check.js")).read_text()
