"""Runnable recipes (quickstart, tiny PLM pre-training). Each is ``python -m fairseq_plm.recipes.<name>``."""
