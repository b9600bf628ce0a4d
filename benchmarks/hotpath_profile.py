"""Where the time of an embedded governed ALLOW call goes: `python -m benchmarks.hotpath_profile`.

Two views. (1) Component costs: each stage of the call timed on its own (best of several repeats of
thread CPU time, so a busy shared machine disturbs it least); stages nest, see the indentation.
(2) cProfile of the whole call, by own time (cProfile inflates Python-call overhead, so use it for
proportions, not for absolute cost). The emitter is paused, so this is the calling thread's cost.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections.abc import Callable
from typing import Any

from benchmarks import reference as ref
from benchmarks.embedded import governed_tool, paused_emitter, thoth_home


def _best(fn: Callable[[], Any], number: int = 2000, repeat: int = 7, after: Callable[[], Any] | None = None) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time_ns()
        for _ in range(number):
            fn()
        best = min(best, (time.thread_time_ns() - t0) / number / 1000)
        if after is not None:
            after()
    return best


def components() -> list[tuple[str, float]]:
    from thoth_nb._flow import Call
    from thoth_nb._instrument import _NO_KWARGS, _decide_sync

    with thoth_home() as home:
        tool = governed_tool(home)
        tool(*ref.ARGS)
        emitter = paused_emitter(tool)
        binding = tool.__thoth_binding__  # type: ignore[attr-defined]
        gov = binding.governor
        engine = gov.transport.engine
        call = binding.begin(ref.ARGS, {})
        body = gov.request(call)
        policy = engine.default_policy
        state = engine._session(body["tenant_id"], body["session_id"])
        plan = policy.plan_for(body["agent_id"], "read_file")
        args = body["tool_args"]
        check = gov.allow_check
        flush = emitter.flush
        kwargs: dict[str, object] = {}
        out = [
            ("reference wrapper call (the baseline, total)", _best(lambda: ref.reference_call(*ref.ARGS),
                                                                   after=ref.EVENTS.clear)),
            ("governed call (total)", _best(lambda: tool(*ref.ARGS), after=flush)),
            ("  Binding.tool_args: name the positional arguments", _best(lambda: binding.tool_args(ref.ARGS, kwargs))),
            ("  Call(): the call record", _best(lambda: Call(gov, "read_file", (), _NO_KWARGS, args))),
            ("  Emitter.emit (one event; PRE and POST each queue one)", _best(lambda: gov.emitter.emit(call),
                                                                               after=flush)),
            ("  Governor.allow_check → Engine.plain_allow_check's check (the ALLOW shortcut)", _best(
                lambda: check("read_file", args))),
            ("    Plan.candidates: the generated prefilter (startswith/in; a regex only for other patterns)", _best(
                lambda: plan.candidates(args))),
            ("  Governor.finished: clock, session, queue POST", _best(lambda: gov.finished(call, 1), after=flush)),
            ("for comparison, not on the shortcut:", float("nan")),
            ("  _decide_sync: begin + request + enforce (the path without the shortcut)", _best(
                lambda: _decide_sync(binding, ref.ARGS, {}), after=flush)),
            ("    Governor.request: the §3.1 body", _best(lambda: gov.request(call))),
            ("    EmbeddedTransport.enforce → Engine._decide", _best(lambda: gov.transport.enforce(body))),
            ("    Engine._policy_verdict (a call some rule may match)", _best(
                lambda: engine._policy_verdict(policy, body, state, body["agent_id"], "read_file", args))),
        ]
        emitter.shutdown()
    return out


def profile(calls: int = 20_000) -> str:
    with thoth_home() as home:
        tool = governed_tool(home)
        tool(*ref.ARGS)
        emitter = paused_emitter(tool)
        path, mode = ref.ARGS
        profiler = cProfile.Profile()
        for _ in range(calls // 1000):
            profiler.enable()
            for _ in range(1000):
                tool(path, mode)
            profiler.disable()
            emitter.flush()
        emitter.shutdown()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("tottime").print_stats(18)
    return stream.getvalue()


def main() -> None:
    print("| stage | µs (best of 7, thread CPU time) |\n|---|---|")
    for name, value in components():
        shown = "" if value != value else f"{value:.2f}"  # NaN: a heading row
        print(f"| {name.replace(' ', '&nbsp;', len(name) - len(name.lstrip()))} | {shown} |")
    print()
    print(profile())


if __name__ == "__main__":
    main()
