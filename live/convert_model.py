"""Convert a GGUF model to a Hugging Face folder vLLM can load (run as a subprocess).

``python -m live.convert_model GGUF_DIR GGUF_FILE OUT_DIR``. The weights are dequantized to
bfloat16 (saving quantized GGUF tensors is not supported by transformers).
"""

import sys


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    source, gguf_file, target = sys.argv[1:4]
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        source,
        gguf_file=gguf_file,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    tokenizer.save_pretrained(target)
    model.save_pretrained(target)


if __name__ == "__main__":
    main()
