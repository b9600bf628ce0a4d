"""`from thoth_nb.openai import wrap_openai_tools` (the seed's `@atensec/thoth/openai`)."""

from thoth_nb._instrument import wrap_openai_tools

__all__ = ["wrap_openai_tools"]
