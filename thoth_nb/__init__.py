"""thoth_nb: notebook-first governance for AI agents.

Every tool call an agent makes is checked against policy before it runs: ALLOW (it runs), STEP_UP
(held until a human approves) or BLOCK (raises `ThothPolicyViolation`), and recorded as events.

    import thoth_nb
    agent = thoth_nb.instrument(agent, agent_id="research", tenant_id="acme",
                                approved_scope=["web_search", "read_file"])
"""

from __future__ import annotations

from typing import Any

# registers the framework adapters of instrument(); imports no framework
from thoth_nb import integrations as _integrations  # noqa: F401
from thoth_nb._approvals import approve, deny, holds
from thoth_nb._config import ThothConfig, configure_logging
from thoth_nb._exceptions import PolicyError, ThothConfigError, ThothPolicyViolation
from thoth_nb._instrument import (
    ThothClient,
    configure,
    governed,
    instrument,
    unwrap,
    wrap_anthropic_tools,
    wrap_openai_tools,
)
from thoth_nb._models import (
    BehavioralEvent,
    DecisionType,
    EnforcementDecision,
    EnforcementMode,
    EventType,
    SourceType,
)
from thoth_nb._runtime import flush, shutdown, status
from thoth_nb._version import __version__

__all__ = [
    "BehavioralEvent",
    "DecisionType",
    "EnforcementDecision",
    "EnforcementMode",
    "EventType",
    "PolicyError",
    "SourceType",
    "ThothClient",
    "ThothConfig",
    "ThothConfigError",
    "ThothPolicyViolation",
    "__version__",
    "anomaly_scores",
    "approvals",
    "approve",
    "arun_anthropic_tools",
    "arun_openai_tools",
    "baseline",
    "configure",
    "coverage",
    "deny",
    "drift",
    "events",
    "export_events",
    "flush",
    "governed",
    "holds",
    "instrument",
    "load_ipython_extension",
    "policy_test",
    "regression_cases",
    "replay",
    "run_anthropic_tools",
    "run_openai_tools",
    "session_scores",
    "sessions",
    "shutdown",
    "status",
    "unload_ipython_extension",
    "unwrap",
    "violations",
    "wrap_anthropic_tools",
    "wrap_openai_tools",
]

for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type) or callable(_obj):
        try:
            _obj.__module__ = "thoth_nb"
        except (AttributeError, TypeError):
            pass

configure_logging()


# DataFrames (pandas is imported only when one of these is called; see thoth_nb/analytics/frames.py)


def events(**filters: Any) -> Any:
    """Recorded events as a pandas DataFrame (agent_id=, session_id=, tool_name=, since=, limit=, ...)."""
    from thoth_nb.analytics.frames import events as frame

    return frame(**filters)


def sessions(**filters: Any) -> Any:
    """Sessions as a pandas DataFrame: calls, blocks, holds and violations per session."""
    from thoth_nb.analytics.frames import sessions as frame

    return frame(**filters)


def violations(**filters: Any) -> Any:
    """Violations as a pandas DataFrame (blocks, holds, observe-mode would-be blocks)."""
    from thoth_nb.analytics.frames import violations as frame

    return frame(**filters)


def approvals(status: str = "all", **filters: Any) -> Any:
    """Step-up holds as a pandas DataFrame (status pending, approved, denied, expired or all)."""
    from thoth_nb.analytics.frames import approvals as frame

    return frame(status, **filters)


# Behavioral analytics and what-if replay (thoth_nb/analytics/; pandas is imported when called)


def baseline(events: Any, **options: Any) -> Any:
    """Per-agent baseline (tool usage, argument shapes, bigrams, call rate) of an events frame."""
    from thoth_nb.analytics.baseline import baseline as learn

    return learn(events, **options)


def drift(events: Any, baseline: Any = None, **options: Any) -> Any:
    """Jensen-Shannon drift of each time window's tool usage from the baseline."""
    from thoth_nb.analytics.drift import drift as measure

    return measure(events, baseline, **options)


def anomaly_scores(events: Any, baseline: Any = None, **options: Any) -> Any:
    """Anomaly score (0-100) of every call, with its contributing factors."""
    from thoth_nb.analytics.anomaly import anomaly_scores as score

    return score(events, baseline, **options)


def session_scores(events: Any, baseline: Any = None, **options: Any) -> Any:
    """Anomaly score per session, most anomalous first."""
    from thoth_nb.analytics.anomaly import session_scores as score

    return score(events, baseline, **options)


def replay(events: Any, policy: Any, **options: Any) -> Any:
    """Re-decide recorded calls under a candidate policy (no tool runs); the calls that would change."""
    from thoth_nb.analytics.replay import replay as run

    return run(events, policy, **options)


def coverage(events: Any, policy: Any, **options: Any) -> Any:
    """Tools seen with no rule, rules that never fired, tools reviewers always approve (one frame)."""
    from thoth_nb.analytics.coverage import coverage as report

    return report(events, policy, **options)


def export_events(source: Any, path: Any, **options: Any) -> Any:
    """Events to Parquet or JSON lines, or as OpenInference spans to an OTLP/HTTP endpoint (format= or by suffix)."""
    from thoth_nb.analytics.export import export_events as write

    return write(source, path, **options)


def policy_test(policy: Any, cases: Any, **options: Any) -> Any:
    """Decide example calls under a policy and compare with the expected decisions (one row per case)."""
    from thoth_nb.analytics.policy_tests import policy_test as run

    return run(policy, cases, **options)


def regression_cases(frame: Any, **options: Any) -> Any:
    """Policy-test cases that expect what was recorded (from an events, violations or approvals frame)."""
    from thoth_nb.analytics.policy_tests import regression_cases as build

    return build(frame, **options)


# Tool loops for the provider SDKs (the SDK is imported only when one of these is called)


def _integration(name: str) -> Any:
    import importlib

    from thoth_nb.integrations import DidNotEnable

    try:
        return importlib.import_module(f"thoth_nb.integrations.{name}")
    except DidNotEnable as exc:
        raise ThothConfigError(f'{exc}. Install the integration with: pip install "thoth-nb[{name}]"') from None


def run_openai_tools(client: Any, **options: Any) -> Any:
    """Run an OpenAI tool-calling loop (chat or responses) with every tool call governed; see
    `thoth_nb.integrations.openai.run_openai_tools`."""
    return _integration("openai").run_openai_tools(client, **options)


async def arun_openai_tools(client: Any, **options: Any) -> Any:
    """`run_openai_tools` for `AsyncOpenAI`."""
    return await _integration("openai").arun_openai_tools(client, **options)


def run_anthropic_tools(client: Any, **options: Any) -> Any:
    """Run an Anthropic tool_use loop with every tool call governed; see
    `thoth_nb.integrations.anthropic.run_anthropic_tools`."""
    return _integration("anthropic").run_anthropic_tools(client, **options)


async def arun_anthropic_tools(client: Any, **options: Any) -> Any:
    """`run_anthropic_tools` for `AsyncAnthropic`."""
    return await _integration("anthropic").arun_anthropic_tools(client, **options)


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext thoth_nb`: registers the `%thoth` magics and the live feed."""
    from thoth_nb.notebook import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext thoth_nb`: removes magics and hooks, restores patched objects, flushes events."""
    from thoth_nb.notebook import unload_ipython_extension as unload

    unload(ipython)
