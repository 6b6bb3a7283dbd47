"""The critic's model: a causal-LM backbone with a scalar value head, V(s) = sigmoid(head(h_last(s))).

Causal attention means one forward pass over a whole trajectory yields V at every step boundary. A saved
critic is an ordinary Hugging Face folder (the backbone, safetensors) plus `value_head.safetensors`, so it
loads back with one call and can seed the next iteration's critic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from dapo.core.alignment import tokenize_trajectory
from dapo.core.padding import pad_right, right_mask

VALUE_HEAD_FILE = "value_head.safetensors"


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
    def from_pretrained(cls, path: str | Path, **kwargs: object) -> ValueModel:
        """Load a backbone from any causal-LM or critic folder; the head too if the folder has one."""
        backbone = AutoModel.from_pretrained(str(path), **kwargs)
        model = cls(backbone)
        head_file = Path(path) / VALUE_HEAD_FILE
        if head_file.exists():
            model.head.load_state_dict(load_file(str(head_file)))
        model.head.to(backbone.device)  # a quantized backbone is placed at load time (device_map)
        return model

    def save_pretrained(self, path: str | Path) -> None:
        self.backbone.save_pretrained(str(path))
        save_file(
            {k: v.detach().contiguous() for k, v in self.head.state_dict().items()}, str(Path(path) / VALUE_HEAD_FILE)
        )

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
    def from_pretrained(cls, path: str | Path, batch_size: int = 16) -> StepScorer:
        return cls(ValueModel.from_pretrained(path), AutoTokenizer.from_pretrained(str(path)), batch_size)

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
