from . import msp  # noqa: F401  (registers msp, prefix_tuning, prompt_tuning)
