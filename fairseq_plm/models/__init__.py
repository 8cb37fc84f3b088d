from . import gpt_deep_prompt  # noqa: F401  (registers gpt_deep_prompt)
