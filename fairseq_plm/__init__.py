"""fairseq_plm: pre-trained multilingual LMs for translation and cross-lingual understanding,
as fairseq models, tasks and criterions (load with ``--user-dir`` or the fairseq-plm-* commands).

_fairseq_plm_package_marker (lets every copy of this package count as one --user-dir module)
"""

import sys as _sys

__version__ = "0.1.0"

from . import compat as _compat  # noqa: E402

_compat.apply()
_compat.make_package_path_unique(_sys.modules[__name__])

from .plm import vocab as _vocab  # noqa: E402,F401  (registers --bpe wordpiece)
from .data import text_processing as _text  # noqa: E402,F401  (registers --tokenizer plm_text)
from . import criterions, models, tasks  # noqa: E402,F401
from .api import Translator  # noqa: E402,F401  (the Python API: prompt sets on one frozen PLM)
