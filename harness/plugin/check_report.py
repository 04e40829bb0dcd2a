"""What a conformance kit reports: one result per check, in order (samplers and metrics)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # "passed", "warning" (passed, with a remark), "failed" or "skipped"
    message: str
    seconds: float = 0.0


class CheckReport:
    """Verdicts over `self.results` (a list of `CheckResult`), shared by the kits' reports;
    a subclass names what was checked (`KIND`) and where its name is (`subject`)."""

    KIND = ""
    results: list[CheckResult]

    @property
    def subject(self) -> str:
        raise NotImplementedError

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.results)

    def result(self, name: str) -> CheckResult:
        return next(r for r in self.results if r.name == name)

    def __str__(self) -> str:
        lines = [f"conformance of {self.KIND} {self.subject!r} ({self.seconds:.1f} s):"]
        lines += [f"  {r.status:<7} {r.name:<13} {r.message} ({r.seconds:.2f} s)"
                  for r in self.results]
        return "\n".join(lines)


class KitFailure(AssertionError):
    """A plugin failed its conformance kit: the message names each failed check, and
    `report` holds every check's result."""

    def __init__(self, report: CheckReport):
        self.report = report
        lines = [f"{report.KIND} {report.subject!r} fails the conformance kit:"]
        lines += [f"  [{r.name}] {r.message}" for r in report.failures]
        super().__init__("\n".join(lines))
