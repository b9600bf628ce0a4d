"""Shared by the notebook tests: the scripted agent and a shell wrapper whose cells raise."""

from __future__ import annotations

from typing import Any

AGENT_CODE = """
class Tool:
    def __init__(self, name, fn):
        self.name = name
        self.run = fn

def web_search(query):
    return "results for " + query

def delete_file(path):
    return "deleted " + path

class Agent:
    def __init__(self):
        self.tools = [Tool("web_search", web_search), Tool("delete_file", delete_file)]

agent = Agent()
originals = [t.run for t in agent.tools]
"""


class Shell:
    """Runs cells in a real InteractiveShell and raises their errors instead of printing them."""

    def __init__(self, ip: Any) -> None:
        self.ip = ip

    def cell(self, code: str) -> Any:
        result = self.ip.run_cell(code)
        result.raise_error()
        return result.result

    def magic(self, line: str) -> Any:
        name, _, rest = line.partition(" ")
        return self.ip.run_line_magic(name, rest)

    @property
    def ns(self) -> dict[str, Any]:
        ns: dict[str, Any] = self.ip.user_ns
        return ns
