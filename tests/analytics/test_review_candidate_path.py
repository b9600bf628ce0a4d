"""A candidate policy named by a path that does not exist says the file was not found, whatever the
file name's ending (was: read as YAML text, 'a policy must be a mapping with `rules:`')."""

from __future__ import annotations

import pytest

from thoth_nb._exceptions import PolicyError
from thoth_nb.analytics.replay import load_candidate


@pytest.mark.parametrize("path", ["policies/stricter", "stricter.policy", "missing.yaml"])
def test_a_missing_policy_file_is_reported_as_not_found(path: str) -> None:
    with pytest.raises(PolicyError, match="not found"):
        load_candidate(path)


def test_one_line_yaml_text_is_still_a_policy() -> None:
    assert load_candidate("{rules: [{id: r, tool: t, decision: block}]}").rule("r") is not None
    assert load_candidate("rules: [{id: r, tool: t, decision: block}]").rule("r") is not None
