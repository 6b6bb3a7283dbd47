"""The critic's model: a causal-LM backbone with a scalar value head, V(s) = sigmoid(head(h_last(s))).

Causal attention means one forward pass over a whole trajectory yields V at every step boundary. A saved critic is
a standard Hugging Face `<Arch>ForTokenClassification` folder with one label: the value head is its `score` layer,
so plain transformers loads it (`AutoModelForTokenClassification`) and V(s) is the sigmoid of the logit at the
state's last token. dapo 0.1's format (a backbone folder plus `value_head.safetensors`) still loads. Loading never
invents a head: a folder without one (a causal LM) is an error unless the caller asks for a new head, as a critic
that starts from the policy does.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from dapo.core.alignment import tokenize_trajectory
from dapo.core.padding import pad_right, right_mask
from dapo.models.memory import AttnImplementation, load_with_attention

VALUE_HEAD_FILE = "value_head.safetensors"
"""dapo 0.1's critic head, beside a backbone folder (still read, no longer written)."""
VALUE_LABEL = "step_value"
"""The one label of an exported critic: its logit at a state's last token is the value's logit."""
MissingHead = Literal["error", "init"]

log = logging.getLogger(__name__)


class ValueModel(nn.Module):
    """Backbone + linear head; `forward` returns value logits for every token."""

    def __init__(self, backbone: PreTrainedModel, head: nn.Linear | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = head if head is not None else nn.Linear(hidden, 1)
        if head is None:
            nn.init.normal_(self.head.weight, std=1.0 / hidden)
            nn.init.zeros_(self.head.bias)

    @classmethod
    def from_pretrained(cls, path: str | Path, missing_head: MissingHead = "error", **kwargs: Any) -> ValueModel:
        """Load a critic from a folder or a Hub id, in the standard format or dapo 0.1's; `kwargs` go to
        `from_pretrained` (dtype, quantization_config, device_map). A model without a value head (a causal LM)
        raises, or with `missing_head="init"` gets a new head (a critic starting from the policy)."""
        config = AutoConfig.from_pretrained(str(path))
        if is_value_classifier(config):
            classifier = AutoModelForTokenClassification.from_pretrained(str(path), **_head_unquantized(kwargs))
            backbone = getattr(classifier, classifier.base_model_prefix)
            return cls(backbone, classifier.score.float())  # fp32 head, as trained
        head_file = _legacy_head_file(path)
        if head_file is None and missing_head == "error":
            raise ValueError(
                f"{path} has no value head: it is neither a critic exported by dapo (an "
                f"{{Arch}}ForTokenClassification with one label) nor a backbone with {VALUE_HEAD_FILE}; to start a "
                "critic from a causal LM, give it a new head (ValueModel.from_pretrained(..., missing_head='init'))"
            )
        backbone = AutoModel.from_pretrained(str(path), **kwargs)
        model = cls(backbone)
        if head_file is not None:
            model.head.load_state_dict(load_file(str(head_file)))
        model.head.to(backbone.device)  # a quantized backbone is placed at load time (device_map)
        return model

    def save_pretrained(self, path: str | Path) -> None:
        """Write the critic as `<Arch>ForTokenClassification` with one label (the head is its `score` layer) and a
        model card saying how to read values; an architecture transformers has no such class for is written in
        dapo 0.1's format instead, with a warning."""
        config = _value_classifier_config(self.backbone.config)
        try:
            with torch.device("meta"):  # no second copy of the weights: the real tensors are assigned below
                classifier = AutoModelForTokenClassification.from_config(config)
        except ValueError as error:  # transformers: "Unrecognized configuration class ... for this kind of AutoModel"
            log.warning("%s: writing the critic in dapo 0.1's format (backbone + %s)", error, VALUE_HEAD_FILE)
            self._save_legacy(path)
            return
        prefix = classifier.base_model_prefix
        state = {f"{prefix}.{k}": v for k, v in self.backbone.state_dict().items()}
        state |= {f"score.{k}": v for k, v in self.head.state_dict().items()}
        classifier.load_state_dict(state, strict=True, assign=True)
        classifier.save_pretrained(str(path))
        (Path(path) / "README.md").write_text(model_card(type(classifier).__name__))

    def _save_legacy(self, path: str | Path) -> None:
        """dapo 0.1's format: the backbone folder plus the head in its own file."""
        self.backbone.save_pretrained(str(path))
        head = {k: v.detach().contiguous() for k, v in self.head.state_dict().items()}
        save_file(head, str(Path(path) / VALUE_HEAD_FILE))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (b, s) -> value logits (b, s); attention_mask (b, s) or a 4D packing mask (dapo.core.packing)."""
        hidden = self.backbone(  # use_cache=False: a KV cache would only cost time and memory here
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (b, s, h)
        logits = self.head(hidden.to(self.head.weight.dtype))  # (b, s, 1)
        return logits[..., 0].clone()  # (b, s); a copy, not a view: FSDP2 hooks the root module's output


class StepScorer:
    """A loaded critic that scores (prompt, steps) pairs: V(s_0), ..., V(s_T) for each."""

    def __init__(self, model: ValueModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 16) -> None:
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size

    @classmethod
    def from_pretrained(
        cls, path: str | Path, batch_size: int = 16, attn_implementation: AttnImplementation = "sdpa"
    ) -> StepScorer:
        """A trained critic from a folder or a Hub id; one without a value head is an error, never a random head.
        `attn_implementation`: the attention kernel (`dapo.models.memory`)."""
        model = load_with_attention(ValueModel.from_pretrained, str(path), attn_implementation)
        return cls(model, AutoTokenizer.from_pretrained(str(path)), batch_size)

    @torch.inference_mode()
    def values(self, trajectories: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Per-state values of each (prompt, steps), one forward per batch of trajectories."""
        out: list[list[float]] = []
        for start in range(0, len(trajectories), self.batch_size):
            chunk = [
                tokenize_trajectory(self.tokenizer, p, s) for p, s in trajectories[start : start + self.batch_size]
            ]
            rows = [ids for ids, _ in chunk]
            probs = torch.sigmoid(self.model(pad_right(rows, 0), right_mask(rows)).float())  # (b, s)
            out += [probs[i, bounds].tolist() for i, (_, bounds) in enumerate(chunk)]
        return out


def is_value_classifier(config: PretrainedConfig) -> bool:
    """A token-classification model with one label: the standard form of a critic."""
    architectures = config.architectures or []
    return config.num_labels == 1 and any(a.endswith("ForTokenClassification") for a in architectures)


def _head_unquantized(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Loading kwargs whose bitsandbytes config (if any) leaves the one-output `score` layer in full precision (its
    kernels need more outputs, and the head is trained in fp32 anyway)."""
    quantization = kwargs.get("quantization_config")
    if quantization is None:
        return kwargs
    quantization = copy.deepcopy(quantization)
    quantization.llm_int8_skip_modules = [*(quantization.llm_int8_skip_modules or []), "score"]
    return {**kwargs, "quantization_config": quantization}


def _value_classifier_config(backbone_config: PretrainedConfig) -> PretrainedConfig:
    config = copy.deepcopy(backbone_config)
    config.num_labels = 1
    config.id2label, config.label2id = {0: VALUE_LABEL}, {VALUE_LABEL: 0}
    config.architectures = None  # save_pretrained writes the classifier's own
    return config


def _legacy_head_file(path: str | Path) -> Path | None:
    """dapo 0.1's head file of a local folder or a Hub repository, or None if it has none."""
    if Path(path).is_dir():
        local = Path(path) / VALUE_HEAD_FILE
        return local if local.exists() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(str(path), VALUE_HEAD_FILE))
    except EntryNotFoundError:
        return None


def model_card(architecture: str) -> str:
    """The README of an exported critic: what it predicts and how to read it without dapo."""
    return f"""---
library_name: transformers
tags: [dapo, value-model, process-reward-model]
---
# Step-value critic (dapo)

A critic trained by [dapo](https://arxiv.org/abs/2412.18279) (Direct Advantage Policy Optimization): for a prompt
followed by the first t reasoning steps of a solution, it predicts the probability that the reference policy,
continuing from there, finishes correctly (trained on Monte-Carlo rollout estimates).

It is a plain `{architecture}` with one label. The value of a state is the sigmoid of the logit at the state's
last token; one forward pass over a whole solution gives the value after every step (steps end with a newline):

```python
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

model = AutoModelForTokenClassification.from_pretrained(PATH).eval()
tokenizer = AutoTokenizer.from_pretrained(PATH)
prompt, steps = "Question: ...\\nSolution:\\n", ["first step\\n", "second step\\n", "Answer: 4"]
bounds = [len(prompt)]  # character position where each state ends: the prompt, then after every step
for step in steps:
    bounds.append(bounds[-1] + len(step))
encoded = tokenizer(prompt + "".join(steps), return_offsets_mapping=True)
spans = encoded["offset_mapping"]  # a state's value sits at the last text token that starts before its end
ends = [max(i for i, (a, b) in enumerate(spans) if b > a and a < end) for end in bounds]
with torch.no_grad():
    logits = model(torch.tensor([encoded["input_ids"]])).logits  # (1, tokens, 1)
values = torch.sigmoid(logits[0, ends, 0])  # V(prompt), V(prompt + step 1), ...
```

In dapo: `dapo.models.value.StepScorer.from_pretrained(PATH).values([(prompt, steps)])`.
"""
