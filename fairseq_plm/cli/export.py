"""``fairseq-plm-export``: write a trained prompt set as a prompt adapter directory.

    fairseq-plm-export --checkpoint ckpt/checkpoint_best.pt --output msp-en-de [--fp16]

The directory follows the convention of peft adapters: ``adapter_model.safetensors`` holds the
trained tensors and nothing else (no optimizer state, no pickle), ``adapter_config.json`` the
method, the architecture and its options (the training run's fairseq config), the PLM's path
and weights fingerprint, the identity of the data dictionaries (sha256, size, entries) and
the fairseq / fairseq_plm versions. Give the directory to ``--path`` of fairseq-plm-generate,
-interactive, -validate (or to fairseq's ``load_model_ensemble_and_task``) exactly as a
checkpoint file; on another machine point it at the PLM with
``--model-overrides "{'plm': '/path/to/plm'}"``. See ``fairseq_plm/checkpoints.py``.
"""

import argparse
import os
import sys

from ..plm.errors import FairseqPLMError, command


@command("fairseq-plm-export")
def main(argv=None):
    p = argparse.ArgumentParser(prog="fairseq-plm-export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by fairseq-train (e.g. checkpoint_best.pt)")
    p.add_argument("--output", required=True, help="the adapter directory to write")
    p.add_argument("--fp16", action="store_true", help="store floating-point tensors as float16 (half the size); "
                                                       "they are cast back to their training dtype when loaded")
    p.add_argument("--data", help="the data directory the prompts were trained on, if it moved (default: the "
                                  "checkpoint's --data); its dict.*.txt files are fingerprinted into the config")
    args = p.parse_args(argv)

    import fairseq_plm  # noqa: F401  (registers the models: the config names the method of the arch)
    from ..checkpoints import ADAPTER_CONFIG, ADAPTER_WEIGHTS, write_adapter

    try:
        config = write_adapter(args.checkpoint, args.output, fp16=args.fp16, data=args.data)
    except FairseqPLMError as e:
        sys.exit(f"fairseq-plm-export: error: {e}")
    trained = config["trained"]
    size = os.path.getsize(os.path.join(args.output, ADAPTER_WEIGHTS))
    print(f"wrote {args.output}: {config['method']} ({config['arch']}), {trained['tensors']} tensors, "
          f"{trained['parameters']:,} trained parameters; {ADAPTER_WEIGHTS} {size:,} bytes, "
          f"{ADAPTER_CONFIG} {os.path.getsize(os.path.join(args.output, ADAPTER_CONFIG)):,} bytes")


if __name__ == "__main__":
    main()
