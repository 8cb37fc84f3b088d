from . import plm_translation  # noqa: F401  (registers plm_translation)
