"""StepDataModule: the one LightningDataModule both CriticModule and ActorModule train from.

mode="critic" reads a `states` dataset and yields trajectories with MC targets at every step boundary;
mode="actor" reads an `actions` dataset and yields states with all their candidate actions in one micro-batch,
packed as one row per state (the state's tokens once, then every action).
Batches are length-bucketed under a token budget (`max_tokens` padded tokens per micro-batch). With
`pack_prompts` the critic's training batches hold prompt trees: a problem's solutions in one row, their shared
prompt once (`collate_critic_trees`); validation batches stay one row per solution.
Validation data is `val_path`, or a `val_fraction` of the problems held out by a stable hash of their id.
"""

from __future__ import annotations

import hashlib
from functools import partial
from typing import Any, Literal

import lightning as L
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from dapo.core.errors import check_model_folder
from dapo.core.packing import packed_length
from dapo.core.padding import pad_id_of
from dapo.core.steps import DEFAULT_DELIMITER
from dapo.records import read_records

from .collate import collate_actor, collate_critic, collate_critic_trees
from .featurize import actor_items, critic_items, critic_trees
from .resumable import ResumableDataLoader
from .sampler import TokenBudgetBatchSampler

Mode = Literal["critic", "actor"]
_RECORD_KIND = {"critic": "states", "actor": "actions"}
_COLUMNS = {
    # n_rollouts tells a sample cut off inside its first step (no steps, rollouts from its prompt) from an empty
    # finished response (featurize.critic_items)
    "critic": ["solution_id", "problem_id", "t", "prompt", "steps", "mc_value", "n_rollouts"],
    "actor": [
        *("state_id", "problem_id", "prompt", "state_steps", "action"),
        *("advantage", "is_terminal", "ref_logprob", "weight"),
    ],
}


def held_out(problem_id: str, fraction: float, seed: int) -> bool:
    """Stable assignment of a problem to the validation split (same answer on every rank and run)."""
    digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


class StepDataModule(L.LightningDataModule):
    """Step-segmented batches for the critic or the actor, from on-disk records."""

    def __init__(
        self,
        mode: Mode,
        train_path: str,
        tokenizer: str,
        val_path: str | None = None,
        val_fraction: float = 0.0,
        max_length: int = 1024,
        max_tokens: int = 8192,
        bucket: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        strict: bool = True,
        delimiter: str = DEFAULT_DELIMITER,
        pack_prompts: bool = False,
    ) -> None:
        """
        Args:
            mode: "critic" (states -> trajectories) or "actor" (actions -> states with their candidates).
            train_path: records folder (`states` for critic, `actions` for actor), sharded or not.
            tokenizer: tokenizer folder or name; the CLI links it to the model's path.
            val_path: records folder for validation; if None, `val_fraction` of the problems is held out.
            val_fraction: share of problems held out for validation when `val_path` is None.
            max_length: longest sequence in tokens; longer groups raise (or are skipped if not strict).
            max_tokens: token budget of one micro-batch, counting padding.
            bucket: group items of similar length to keep padding small.
            num_workers: DataLoader worker processes.
            seed: shuffling and hold-out seed.
            strict: raise on malformed or overlong records (naming file, row and field); if False skip them and
                report the counts (see docs/reliability.md for every case).
            delimiter: the step delimiter the records were split with (every step but a solution's last ends
                with it).
            pack_prompts: critic only: train on prompt trees, each problem's solutions packed in one row with
                their shared prompt once and a 4D attention mask (the same values, fewer tokens; the model must
                honour 4D masks, which CriticModule checks at fit start). `max_tokens` then bounds packed rows.
        """
        super().__init__()
        check_model_folder(tokenizer, "tokenizer")
        if mode not in _RECORD_KIND:
            raise ValueError(f"mode must be 'critic' or 'actor', got {mode!r}")
        if pack_prompts and mode != "critic":
            raise ValueError("pack_prompts packs the critic's trajectories; the actor's batches are packed already")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self.mode, self.max_length, self.max_tokens, self.seed = mode, max_length, max_tokens, seed
        self.train_items: list[Any] = []
        self.val_items: list[Any] = []
        self.tokenizer: Any = None
        self._loaded = False
        self._train_sampler: TokenBudgetBatchSampler | None = None

    @property
    def pad_id(self) -> int:
        """Padding id; any id works because padding is masked, so fall back to eos when there is no pad."""
        return pad_id_of(self.tokenizer)

    def _featurize(self, rows: list[dict[str, Any]], what: str) -> list[Any]:
        featurize = critic_items if self.mode == "critic" else actor_items
        strict, delimiter = self.hparams["strict"], self.hparams["delimiter"]
        items, skipped = featurize(rows, self.tokenizer, self.max_length, strict, delimiter)
        skipped.report(f"{what} groups")
        if not items and rows:
            raise ValueError(f"no usable {what} items out of {len(rows)} records")
        return items

    def _rows(self, path: str) -> list[dict[str, Any]]:
        return (
            read_records(path, _RECORD_KIND[self.mode], self.hparams["strict"])
            .select_columns(_COLUMNS[self.mode])
            .to_list()
        )

    def setup(self, stage: str | None = None) -> None:
        """Load the tokenizer only: records are read on first use, after callbacks such as StepValueRollout
        (which runs at fit start) had the chance to produce them."""
        if self.tokenizer is None:
            self.tokenizer = AutoTokenizer.from_pretrained(self.hparams["tokenizer"])

    def load_items(self) -> None:
        """Read and tokenize the records (once)."""
        if self._loaded:
            return
        self.setup()
        rows = self._rows(self.hparams["train_path"])
        if self.hparams["val_path"]:
            train_rows, val_rows = rows, self._rows(self.hparams["val_path"])
        else:
            fraction = self.hparams["val_fraction"]
            is_val = [held_out(row["problem_id"], fraction, self.seed) for row in rows]
            train_rows = [row for row, v in zip(rows, is_val, strict=True) if not v]
            val_rows = [row for row, v in zip(rows, is_val, strict=True) if v]
        if not train_rows:
            raise ValueError(
                f"no {_RECORD_KIND[self.mode]} records to train on in {self.hparams['train_path']}"
                + (" after holding out validation problems" if rows else "")
            )
        self.train_items = self._featurize(train_rows, "train")
        if self.hparams["pack_prompts"]:
            problem_of = {row["solution_id"]: row["problem_id"] for row in train_rows}
            self.train_items = critic_trees(self.train_items, problem_of)
        self.val_items = self._featurize(val_rows, "validation")
        self._loaded = True

    def _sampler(self, items: list[Any], shuffle: bool) -> TokenBudgetBatchSampler:
        lengths = [self._length(item) for item in items]
        trainer = self.trainer
        return TokenBudgetBatchSampler(
            lengths,
            self.max_tokens,
            shuffle=shuffle,
            bucket=self.hparams["bucket"],
            seed=self.seed,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
        )

    def _loader_args(self, items: list[Any], sampler: TokenBudgetBatchSampler) -> dict[str, Any]:
        collate: Any = collate_critic if self.mode == "critic" else collate_actor
        if items and "trajectories" in items[0]:
            collate = collate_critic_trees
        return {
            "dataset": items,
            "batch_sampler": sampler,
            "collate_fn": partial(collate, pad_id=self.pad_id),
            "num_workers": self.hparams["num_workers"],
        }

    def _length(self, item: Any) -> int:
        """Tokens of an item's row: a trajectory (critic), a prompt tree (critic, `pack_prompts`) or a state
        packed with its actions (actor)."""
        if "trajectories" in item:
            return packed_length(item["group"])
        return len(item["input_ids"]) if self.mode == "critic" else packed_length(item)

    def train_dataloader(self) -> DataLoader:
        """Resumable: a checkpoint records how far into the epoch training got (`ResumableDataLoader`)."""
        self.load_items()
        self._train_sampler = self._sampler(self.train_items, shuffle=True)
        return ResumableDataLoader(**self._loader_args(self.train_items, self._train_sampler), seed=self.seed)

    def val_dataloader(self) -> DataLoader:
        self.load_items()
        return DataLoader(**self._loader_args(self.val_items, self._sampler(self.val_items, shuffle=False)))

    def train_batch_keys(self, batch_idx: int) -> list[str]:
        """Ids of the records (solutions, states, or problems with `pack_prompts`) in train batch `batch_idx` of the
        current epoch, for errors."""
        if self._train_sampler is None:
            return []
        batches = self._train_sampler.epoch_batches()
        return [self.train_items[i]["key"] for i in batches[batch_idx]] if batch_idx < len(batches) else []
