"""Writes 01_quickstart.ipynb and 02_auditing_events.ipynb (without outputs). Edit the cells here, then
run `python notebooks/_make_notebooks.py`; tests/notebook/test_notebooks.py executes both notebooks."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook, new_markdown_cell as md, new_code_cell as code

SETUP = '''import os, tempfile
# A private THOTH_HOME so this demo's store and policy never mix with your own (~/.thoth_nb).
os.environ.setdefault("THOTH_HOME", tempfile.mkdtemp(prefix="thoth-nb-demo-"))
os.makedirs(os.environ["THOTH_HOME"], exist_ok=True)
import thoth_nb
print("events go to", os.environ["THOTH_HOME"])'''

AGENT = '''from thoth_nb import ThothPolicyViolation


class Tool:
    """The generic tool shape: a name, a description and a .run callable."""

    def __init__(self, name, fn, description=""):
        self.name, self.run, self.description = name, fn, description


def web_search(query):
    return f"3 results for {query!r}"


def read_file(path):
    return f"<contents of {path}>"


def delete_file(path):
    return f"deleted {path}"


class ScriptedAgent:
    """Stands in for an LLM agent: a fixed plan of tool calls (no model, no network, no API key).
    Like real agent frameworks, it turns a refused call into a tool result and carries on."""

    def __init__(self, plan):
        self.tools = [Tool("web_search", web_search, "Search the web."),
                      Tool("read_file", read_file, "Read a file."),
                      Tool("delete_file", delete_file, "Delete a file.")]
        self.plan = plan

    def run(self):
        by_name = {t.name: t for t in self.tools}
        transcript = []
        for tool_name, args in self.plan:
            try:
                transcript.append((tool_name, by_name[tool_name].run(**args)))
            except ThothPolicyViolation as refused:
                transcript.append((tool_name, f"REFUSED: {refused.reason}"))
        return transcript


agent = ScriptedAgent([
    ("web_search", {"query": "quarterly report"}),
    ("read_file", {"path": "/home/demo/report.md"}),
    ("delete_file", {"path": "/home/demo/report.md"}),   # not in the approved scope
    ("read_file", {"path": "/etc/shadow"}),             # the built-in policy blocks system paths
])'''

quick = new_notebook(cells=[
    md("# thoth_nb quickstart\n\nGovern an agent's tool calls from a notebook: every call is checked against "
       "policy **before** it runs (ALLOW, STEP_UP or BLOCK), shown live under the cell, and recorded as events "
       "you can audit with pandas. Everything here runs offline: the agent is scripted and the enforcer is "
       "embedded (SQLite under `$THOTH_HOME`)."),
    code(SETUP),
    code("%load_ext thoth_nb"),
    md("## A scripted agent\n\nAny object with a `.tools` list whose items have `.run` can be governed "
       "(LangChain, LangGraph, OpenAI Agents, MCP and others have integrations)."),
    code(AGENT),
    md("## Instrument it\n\n`%thoth instrument` governs the object named `agent` in place. Only `web_search` and "
       "`read_file` are in its approved scope; `block` mode refuses everything else."),
    code("%thoth instrument agent --agent-id quickstart --scope web_search,read_file --mode block"),
    md("Run it. The live feed under the cell lists each governed call as it happens: decision, reason, risk "
       "and duration (in JupyterLab it updates while the cell runs; saved notebooks keep a static copy)."),
    code("agent.run()"),
    md("## Observe mode\n\nIn `observe` mode nothing is refused: calls run and the feed shows what enforcement "
       "*would* have done. Useful to roll a policy out before enforcing it."),
    code("%thoth mode quickstart observe\nagent.run()"),
    md("## `%%thoth`: govern one cell\n\nObjects with `.tools` created in a `%%thoth` cell are governed with the "
       "cell's options before the next statement runs."),
    code("%%thoth --agent-id cell-agent --scope web_search --mode block\n"
         "helper = ScriptedAgent([(\"web_search\", {\"query\": \"thoth\"}), (\"read_file\", {\"path\": \"notes.md\"})])\n"
         "helper.run()"),
    md("## Events as a DataFrame\n\n`%thoth events` (or `thoth_nb.events()`) returns a pandas DataFrame with UTC "
       "timestamps, categorical labels and the tool arguments as dicts."),
    code("events = %thoth events\nevents[[\"occurred_at\", \"agent_id\", \"tool_name\", \"event_type\", \"decision\", "
         "\"reason\", \"tool_args\"]]"),
    code("%thoth violations"),
    md("Why was a call blocked? `%thoth explain` answers from the rule that decided it."),
    code("vid = thoth_nb.violations(agent_id=\"quickstart\")[\"violation_id\"].iloc[0]\n%thoth explain $vid"),
    code("%thoth status"),
    md("Next: `02_auditing_events.ipynb` audits a larger workload with pandas and the `df.thoth` accessor."),
])

AUDIT_SETUP = '''import random
from pathlib import Path

import pandas as pd

POLICY = """
version: 1
default: allow
scope_violation: {decision: block, severity: high}
rules:
  - id: no-system-files
    tool: read_file
    when: {path: {regex: "^/(etc|root|proc)/"}}
    decision: block
    reason: system files are off limits
    severity: critical
  - id: no-bulk-export
    tool: run_sql
    when: {query: {regex: "(?i)select [*] from customers"}}
    decision: block
    reason: bulk export of customer data
    severity: high
"""
policy = Path(os.environ["THOTH_HOME"]) / "audit-policy.yaml"
policy.write_text(POLICY)


def make_tools():
    def web_search(query): return f"results for {query}"
    def read_file(path): return f"<{path}>"
    def run_sql(query): return "42 rows"
    def send_email(to, subject): return "sent"
    return {f.__name__: f for f in (web_search, read_file, run_sql, send_email)}


rng = random.Random(7)
TEAMS = {  # agent: (users, approved scope, mode)
    "research": (["alice", "bob"], ["web_search", "read_file"], "block"),
    "analytics": (["carol"], ["run_sql", "read_file"], "block"),
    "support": (["dan", "erin"], ["web_search", "send_email"], "observe"),
}
CALLS = [("web_search", {"query": "pricing"}), ("read_file", {"path": "/data/q3.csv"}),
         ("read_file", {"path": "/etc/passwd"}), ("run_sql", {"query": "select count(*) from orders"}),
         ("run_sql", {"query": "SELECT * FROM customers"}), ("send_email", {"to": "x@example.com", "subject": "hi"})]

for agent_id, (users, scope, mode) in TEAMS.items():
    for user in users:
        for session in range(3):
            tools = thoth_nb.wrap_openai_tools(make_tools(), agent_id=agent_id, user_id=user, tenant_id="local",
                                               approved_scope=scope, enforcement=mode, policy=str(policy))
            for _ in range(8):
                name, args = rng.choice(CALLS)
                try:
                    tools[name](**args)
                except thoth_nb.ThothPolicyViolation:
                    pass
print("workload recorded")'''

audit = new_notebook(cells=[
    md("# Auditing agent events with pandas\n\nA scripted workload (three agents, five users, block and observe "
       "modes) is recorded in the embedded store; then we audit it with pandas and the `df.thoth` accessor. "
       "Offline, no API keys."),
    code(SETUP),
    code(AUDIT_SETUP),
    md("## Load the events\n\nOne row per event (PRE, POST, BLOCK). Timestamps are tz-aware UTC; agent, user, "
       "session, tool, event type and decision are categoricals; `tool_args` holds dicts."),
    code("events = thoth_nb.events()\nprint(len(events), \"events\")\nevents.dtypes"),
    md("## Decisions\n\nOne decision per completed or refused call. Observe-mode calls are ALLOW (with the "
       "would-be decision in `reason`)."),
    code("events.thoth.decision_counts()"),
    code("events.thoth.decision_counts(by=\"agent_id\")"),
    code("events.thoth.top_blocked_tools(5)"),
    code("events.thoth.calls_by_user()"),
    md("## One session, step by step"),
    code("busiest = events.groupby(\"session_id\", observed=True).size().idxmax()\n"
         "events.thoth.timeline(busiest)"),
    md("## What observe mode would have blocked\n\nThe support agent runs in observe mode: its calls ran, but "
       "violations were recorded."),
    code("v = thoth_nb.violations()\nv.groupby([\"agent_id\", \"observed\"], observed=True).size()"),
    md("## Arguments, lazily\n\nOn big stores, load events without arguments (fast: no JSON parsing) and add them "
       "for the rows you keep. Expand dicts into columns only for that subset."),
    code("lean = thoth_nb.events(tool_args=False)\n"
         "sql = lean[lean[\"tool_name\"] == \"run_sql\"].thoth.with_args()\n"
         "pd.json_normalize(sql[\"tool_args\"].tolist()).value_counts()"),
    md("## Sessions"),
    code("sessions = thoth_nb.sessions()\nsessions.sort_values(\"blocked\", ascending=False).head()"),
    code("%load_ext thoth_nb\n%thoth sessions --agent research"),
])

for nb, name in ((quick, "01_quickstart.ipynb"), (audit, "02_auditing_events.ipynb")):
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, Path(__file__).parent / name)

