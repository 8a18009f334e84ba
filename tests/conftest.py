"""Suite-wide test settings.

Hypothesis explores new random examples on every developer run; under CI (``CI`` is set, as
``.ci/run`` has it) the examples are derandomized, so a landing never depends on the draw. A rare
failure found locally is a real finding: keep its example as an explicit test.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
