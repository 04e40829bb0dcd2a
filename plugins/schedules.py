"""The built-in time schedules (`harness.core.schedules`), registered through the same
hook as a third party's."""

from __future__ import annotations

from harness import SCHEDULES, hookimpl

harness_api_version = 1


@hookimpl
def harness_register_schedules(register):
    for schedule in SCHEDULES.values():
        register(schedule)
