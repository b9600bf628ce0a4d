"""`from thoth_nb.anthropic import wrap_anthropic_tools` (the seed's `@atensec/thoth/anthropic`)."""

from thoth_nb._instrument import wrap_anthropic_tools

__all__ = ["wrap_anthropic_tools"]
