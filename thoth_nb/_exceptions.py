"""Exceptions raised to users of thoth_nb."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from thoth_nb._models import EnforcementDecision

__all__ = ["EnforcerError", "PolicyError", "ThothConfigError", "ThothPolicyViolation"]


class ThothPolicyViolation(Exception):
    """A governed tool call was not allowed to run (BLOCK, denied or timed-out STEP_UP, DEFER,
    or an enforcer failure while failing closed). The tool body never ran."""

    def __init__(
        self,
        tool_name: str,
        reason: str,
        violation_id: str | None = None,
        *,
        decision: EnforcementDecision | None = None,
    ) -> None:
        super().__init__(f"{tool_name}: {reason}" + (f" (violation {violation_id})" if violation_id else ""))
        self.tool_name = tool_name
        self.reason = reason
        self.violation_id = violation_id
        self.decision = decision
        self.explainer: Callable[[], dict[str, Any] | None] | None = None
        self._explained: dict[str, Any] | None = None

    def explain(self) -> dict[str, Any] | None:
        """Ask the enforcer why (PROTOCOL §6): what happened, why, what would have passed, what to do next.
        None if unavailable. Asked once; the card and later calls reuse the answer."""
        if self._explained is None and self.explainer is not None:
            self._explained = self.explainer()
        return self._explained

    @property
    def decision_reason_code(self) -> str:
        return self.decision.decision_reason_code if self.decision is not None else ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.tool_name, self.reason, self.violation_id))

    def _repr_html_(self) -> str:
        from thoth_nb._render import violation_html

        return violation_html(self)


class ThothConfigError(ValueError):
    """Bad configuration, reported at `instrument()` time with what to change."""


class PolicyError(ThothConfigError):
    """A policy file or document that cannot be used; says the line and field when known."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        where = ""
        if source:
            where += source
        if line is not None:
            where += f"{':' if where else 'line '}{line}"
        if field:
            where += f"{' ' if where else ''}({field})"
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.line = line
        self.field = field
        self.message = message


class EnforcerError(Exception):
    """The enforcer could not give a decision. `kind` is network, timeout, status or decode."""

    def __init__(self, kind: str, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message
        self.retry_after = retry_after
