"""BenchmarkEval: during actor training, evaluate the current policy on a benchmark subset and log it.

Every `every_n_validations` validation runs (sanity checks excluded), each rank generates for its share of the
first `limit` problems (rank r takes problems r, r + world, ...), with the module's live model and greedy
decoding by default; scores are gathered across ranks, so every rank logs the same figures:
`benchmark/<task>/accuracy` (and `pass@k` with several samples) through `pl_module.log`, so a ModelCheckpoint can
monitor them, plus the first `samples_to_log` prompts and responses as text (TensorBoard, W&B, MLflow) on rank 0.

    trainer:
      callbacks:
        - class_path: dapo.callbacks.BenchmarkEval
          init_args: {task: {class_path: dapo.tasks.ArithTask}, limit: 64}

Works with any LightningModule whose `model` attribute is a Hugging Face causal LM (ActorModule). With a sharded
(FSDP2) model every forward is a collective, so ranks generate in lockstep: shares are padded to equal length
(`lockstep_share`; the repeats are dropped) and `generate` keeps stepping until every rank is done (synced_gpus).
"""

from __future__ import annotations

import textwrap
from typing import Any

import lightning as L
from transformers import AutoTokenizer

from dapo.core.distributed import gather, interleave, lockstep_share
from dapo.generation.hf_generator import HFGenerator
from dapo.generation.protocol import SamplingParams
from dapo.stages.evaluation import EvalResult, evaluate_examples
from dapo.tasks.base import Example, Task, chat_renderer
from dapo.training.media import log_text


class BenchmarkEval(L.Callback):
    def __init__(
        self,
        task: Task,
        split: str = "test",
        limit: int = 64,
        every_n_validations: int = 1,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        n: int = 1,
        samples_to_log: int = 3,
        batch_size: int = 64,
        tokenizer_path: str | None = None,
        chat_template: bool = False,
    ) -> None:
        """
        Args:
            task: the benchmark task (its prompts and pure score).
            split: which split to draw problems from.
            limit: evaluate the first `limit` problems.
            every_n_validations: evaluate at every n-th validation run.
            max_new_tokens: cap on each response's length.
            temperature: 0 decodes greedily.
            n: responses per problem (pass@k for k up to n is logged when n > 1).
            samples_to_log: prompts with responses logged as text.
            batch_size: sequences per generate call.
            tokenizer_path: tokenizer folder (default: the module's `model_path` hyperparameter).
            chat_template: render prompts with the tokenizer's chat template (instruct models), else `task.prompt`.
        """
        if every_n_validations < 1 or limit < 1:
            raise ValueError(f"every_n_validations and limit must be >= 1, got {every_n_validations}, {limit}")
        if n > 1 and temperature == 0:
            raise ValueError(f"n={n} greedy samples would all be identical; set temperature > 0 or n=1")
        self.task, self.split, self.limit, self.every = task, split, limit, every_n_validations
        self.params = SamplingParams(n=n, temperature=temperature, max_new_tokens=max_new_tokens)
        self.samples_to_log, self.batch_size, self.tokenizer_path = samples_to_log, batch_size, tokenizer_path
        self.chat_template = chat_template
        self.validations = 0
        self._examples: list[Example] | None = None
        self._tokenizer: Any = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.validations += 1
        if self.validations % self.every:
            return
        result = self.evaluate(pl_module, trainer.global_rank, trainer.world_size)
        merged = _gather(result, trainer.world_size)
        prefix = f"benchmark/{self.task.name}"
        pl_module.log(f"{prefix}/accuracy", merged.accuracy, sync_dist=True)  # equal on every rank already
        for k in range(2, self.params.n + 1):
            pl_module.log(f"{prefix}/pass@{k}", merged.pass_at(k), sync_dist=True)
        if trainer.is_global_zero:
            self._log_samples(trainer, merged, prefix)

    def evaluate(self, pl_module: L.LightningModule, rank: int = 0, world_size: int = 1) -> EvalResult:
        """This rank's share of the problems, generated with the module's current weights."""
        if self._examples is None:
            self._examples = list(self.task.load(self.split))[: self.limit]
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path or pl_module.hparams["model_path"])
        sharded = pl_module.device_mesh is not None and world_size > 1
        generator = HFGenerator(
            pl_module.model,  # type: ignore[arg-type]
            self._tokenizer,
            batch_size=self.batch_size,
            synced_gpus=sharded,
        )
        if sharded:
            mine, real = lockstep_share(self._examples, rank, world_size)
        else:
            mine = self._examples[rank::world_size]
            real = len(mine)
        per_call = max(1, self.batch_size // self.params.n)
        render = chat_renderer(self.task, self._tokenizer) if self.chat_template else None
        result = evaluate_examples(
            generator, self.task, mine, self.params, self.split, render, problems_per_call=per_call
        )
        return result.head(real)  # without lockstep padding

    def _log_samples(self, trainer: L.Trainer, result: EvalResult, prefix: str) -> None:
        for i in range(min(self.samples_to_log, result.n)):
            text = textwrap.indent(result.prompts[i] + result.responses[i][0], "    ")
            score = f"score {result.sample_scores[i][0]:.0f}"
            log_text(trainer.loggers, f"{prefix}/sample_{i}", f"{score}\n\n{text}", trainer.global_step)


def _gather(result: EvalResult, world_size: int) -> EvalResult:
    """Every rank's scores, ids, responses and prompts, in problem order."""
    parts = gather((result.sample_scores, result.ids, result.responses, result.prompts), world_size)
    scores, ids, responses, prompts = (interleave([part[field] for part in parts]) for field in range(4))
    return EvalResult(result.task, result.split, scores, result.seconds, ids, responses, prompts)
