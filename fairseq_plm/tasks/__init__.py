from . import fusion_translation, plm_translation  # noqa: F401  (registers fusion_translation, plm_translation)
from . import mpt_nli  # noqa: F401  (registers mpt_nli)
