"""Broken on purpose: fails while being imported, as a plugin with a missing dependency."""

from __future__ import annotations

import harness_no_such_dependency  # noqa: F401  (the failure under test)

harness_api_version = 1
