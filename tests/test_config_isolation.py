"""Building several models in one process must not leak configuration between them."""

from fairseq.models.transformer import TransformerConfig


def test_mutating_a_fairseq_nested_config_leaks_within_a_test():
    # This is the fairseq-fixed behaviour the autouse fixture guards against.
    a = TransformerConfig()
    a.encoder.layers = 3
    assert TransformerConfig().encoder.layers == 3


def test_previous_test_did_not_leak():
    assert TransformerConfig().encoder.layers == 6
    assert TransformerConfig().decoder.layers == 6


def test_our_model_configs_are_independent():
    from fairseq_plm.models.msp import MSPConfig

    a, b = MSPConfig(), MSPConfig()
    a.prompt_length = 3
    assert b.prompt_length == 128 and MSPConfig().prompt_length == 128
