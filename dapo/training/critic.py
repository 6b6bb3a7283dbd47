"""CriticModule: learns V(s) = P(the reference policy finishes correctly | s) from Monte-Carlo targets.

One forward pass over a whole trajectory gives a value at every step boundary (causal attention); the loss is
BCE with soft targets there (MSE selectable). Validation logs BCE, MSE, Pearson correlation with the MC values,
and, against each trajectory's final outcome, the Brier score, expected calibration error and AUROC of the
values of its non-final states; the loggers (TensorBoard, W&B, MLflow: dapo.training.media) also get a value
histogram, a reliability diagram and per-step value traces of a few solutions.
Left out on purpose: co-training with the actor (DAPO trains them apart), value clipping, auxiliary LM loss.

    dapo fit --config configs/critic.yaml
"""

from __future__ import annotations

import functools
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics import MeanMetric, MeanSquaredError, MetricCollection, PearsonCorrCoef
from torchmetrics.classification import BinaryAUROC, BinaryCalibrationError
from transformers import AutoTokenizer

from dapo.core.errors import check_model_folder
from dapo.core.losses import ValueLossKind, gather_at, value_loss
from dapo.core.packing import model_inputs
from dapo.models.adapters import LoadIn, LoraSettings, add_lora, merge_lora
from dapo.models.memory import AttnImplementation, check_attention
from dapo.models.outputs import check_packing, critic_values, param_dtype
from dapo.models.value import ValueModel
from dapo.training.backbone import TrainableBackbone
from dapo.training.guards import NonFinitePolicy, check_policy
from dapo.training.media import log_figure, log_histogram, log_text
from dapo.training.viz import reliability_figure, value_trace_markdown


def final_outcomes(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per trajectory (b,): its outcome (the target at its last boundary), whether that target exists, and the
    index of that last boundary."""
    last = batch["boundary_mask"].sum(1) - 1  # (b,)
    rows = torch.arange(last.shape[0])
    return batch["targets"][rows, last], batch["target_mask"][rows, last], last


class CriticModule(TrainableBackbone, L.LightningModule):
    def __init__(
        self,
        model_path: str,
        loss: ValueLossKind = "bce",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        n_traces: int = 4,
        calibration_bins: int = 10,
        lora: LoraSettings | None = None,
        load_in: LoadIn | None = None,
        on_nonfinite: NonFinitePolicy = "raise",
        gradient_checkpointing: bool = False,
        attn_implementation: AttnImplementation = "sdpa",
    ) -> None:
        """
        Args:
            model_path: Hugging Face folder of the backbone (a causal LM, or a saved critic to continue from).
            loss: "bce" (soft-target binary cross-entropy, the paper's) or "mse".
            optimizer: optimizer factory (the paper: AdamW, lr 5e-6, for a 7B critic).
            lr_scheduler: optional scheduler factory, stepped every optimizer step.
            n_traces: validation solutions whose per-step values are logged as text.
            calibration_bins: bins of the reliability diagram and calibration error.
            lora: train LoRA adapters on the backbone (plus the value head) instead of every weight.
            load_in: "8bit" / "4bit" (nf4) to load the frozen backbone through bitsandbytes: QLoRA, needs `lora`.
            on_nonfinite: a NaN/inf loss or gradient "raise"s (stops the fit naming the batch) or "skip"s that
                optimizer step (counted, logged as train/skipped_steps).
            gradient_checkpointing: keep only each decoder block's input and recompute the block in the backward
                pass: activation memory of one layer instead of all, for about a third more compute per step.
            attn_implementation: attention kernel: "sdpa" (torch's fused attention), "eager" (the reference
                matmul-softmax, more memory) or "flash_attention_2" (needs the `flash-attn` package and a GPU).
        """
        super().__init__()
        check_policy(on_nonfinite)
        check_attention(attn_implementation)
        check_model_folder(model_path, "model_path")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])  # factories: the CLI config keeps them
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.model: ValueModel | None = None
        self.val_metrics = MetricCollection(
            {"bce": MeanMetric(), "mse": MeanSquaredError(), "pearson": PearsonCorrCoef()}, prefix="val/"
        )
        self.outcome_metrics = MetricCollection(
            {
                "brier": MeanSquaredError(),
                "ece": BinaryCalibrationError(n_bins=calibration_bins),
                "auroc": BinaryAUROC(),
            },
            prefix="val/outcome_",
        )
        self._val_values: list[torch.Tensor] = []
        self._val_outcome_pairs: list[torch.Tensor] = []
        self._traces: list[str] = []
        self._tok: Any = None

    def configure_model(self) -> None:
        if self.model is not None:  # idempotent: Lightning may call it again (resume, sharding)
            return
        # fp32 master weights whatever the checkpoint's dtype (the Trainer's `precision` does mixed precision)
        load = functools.partial(ValueModel.from_pretrained, missing_head="init", dtype=torch.float32)
        model = self.load_backbone(load, self.hparams["model_path"])
        model.backbone = self.prepare(model.backbone)
        if self.lora is not None:
            model.backbone = add_lora(model.backbone, self.lora)  # the value head stays fully trainable
        self.model = self.shard(model.train())  # HF loads in eval mode

    def boundary_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Value logits at every step boundary (b, n), from one padded row per trajectory or from prompt trees
        (`collate_critic_trees`: packed rows with a 4D mask, boundary_row naming each trajectory's row)."""
        assert self.model is not None, "configure_model() has not run"
        if "segment_ids" not in batch:
            logits = self.model(batch["input_ids"], batch["attention_mask"])  # (b, s)
            return gather_at(logits, batch["boundary_index"])  # (b, n)
        inputs = model_inputs(batch, True, param_dtype(self.model))  # a 4D mask (r, 1, L, L)
        logits = self.model(inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"])  # (r, L)
        return logits[batch["boundary_row"][:, None], batch["boundary_index"]]  # (b, n)

    def on_fit_start(self) -> None:
        """Prompt trees need a backbone that honours a 4D attention mask; one that ignores it would train on
        values that see other solutions' tokens, so that is an error, not a silent fallback."""
        data = getattr(self.trainer, "datamodule", None)
        if not getattr(data, "hparams", {}).get("pack_prompts"):
            return
        assert self.model is not None, "configure_model() has not run"
        was_training = self.model.training
        self.model.eval()  # dropout off, so packed and unpacked see the same network
        name = type(self.model.backbone).__name__
        per_action = functools.partial(critic_values, self.model)
        honoured = check_packing(per_action, self.model.backbone.config.vocab_size, 0, param_dtype(self.model), name)
        self.model.train(was_training)
        if not honoured:
            raise ValueError(
                f"data.pack_prompts needs a model that honours 4D attention masks; {name} does not: "
                "set data.pack_prompts to false"
            )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.boundary_logits(batch)
        loss = value_loss(logits, batch["targets"], batch["target_mask"], self.hparams["loss"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["targets"].shape[0])  # trajectories
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self.boundary_logits(batch).float()  # (b, n)
        mask, targets = batch["target_mask"], batch["targets"]
        values = torch.sigmoid(logits)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], targets[mask], reduction="none")
        self.val_metrics["bce"].update(bce)
        self.val_metrics["mse"].update(values[mask], targets[mask])
        self.val_metrics["pearson"].update(values[mask], targets[mask])
        self._update_outcome_metrics(batch, values)
        self._val_values.append(values[mask].detach().cpu())
        self._traces += self._traces_of(batch, values, self.hparams["n_traces"] - len(self._traces))

    def _update_outcome_metrics(self, batch: dict[str, torch.Tensor], values: torch.Tensor) -> None:
        """Values of non-final states against the trajectory's final outcome (0/1)."""
        outcome, has_outcome, last = final_outcomes(batch)  # (b,), (b,), (b,)
        positions = torch.arange(values.shape[1], device=values.device)[None, :]  # (1, n)
        keep = batch["boundary_mask"] & (positions < last[:, None]) & has_outcome[:, None]  # (b, n)
        pred = values[keep]
        truth = (outcome[:, None].expand_as(values)[keep] > 0.5).long()
        if pred.numel():
            self.outcome_metrics["brier"].update(pred, truth.float())
            self.outcome_metrics["ece"].update(pred, truth)
            self.outcome_metrics["auroc"].update(pred, truth)
            self._val_outcome_pairs.append(torch.stack([pred, truth.float()]).detach().cpu())

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), sync_dist=True)  # synced already: same on every rank
        self.val_metrics.reset()
        counts = torch.as_tensor(self.all_gather(torch.tensor(len(self._val_outcome_pairs))))  # a collective:
        if counts.sum() > 0:  # every rank must take the same branch (compute() syncs across ranks)
            self.log_dict(self.outcome_metrics.compute(), sync_dist=True)
        self.outcome_metrics.reset()
        self._log_pictures()
        self._val_values, self._val_outcome_pairs, self._traces = [], [], []

    def _log_pictures(self) -> None:
        if self.trainer.sanity_checking:
            return
        loggers, step = self.trainer.loggers, self.global_step
        if self._val_values:
            log_histogram(loggers, "val/predicted_values", torch.cat(self._val_values), step)
        if self._val_outcome_pairs:
            pred, outcome = torch.cat(self._val_outcome_pairs, dim=1)  # (m,), (m,)
            figure = reliability_figure(pred, outcome, self.hparams["calibration_bins"])
            log_figure(loggers, "val/reliability", figure, step)
        if self._traces:
            log_text(loggers, "val/value_traces", "\n\n---\n\n".join(self._traces), step)

    def _traces_of(self, batch: dict[str, torch.Tensor], values: torch.Tensor, limit: int) -> list[str]:
        """Markdown value traces of the first `limit` rows of `batch`: each step's text beside V and its target."""
        traces: list[str] = []
        if limit <= 0:
            return traces
        tokenizer = self._tokenizer()
        for row in range(min(limit, batch["input_ids"].shape[0])):
            bounds = batch["boundary_index"][row][batch["boundary_mask"][row]].tolist()
            ids = batch["input_ids"][row].tolist()
            pieces = [tokenizer.decode(ids[a + 1 : b + 1]) for a, b in zip([-1, *bounds], bounds, strict=False)]
            n = len(bounds)
            traces.append(
                value_trace_markdown(
                    pieces[0], pieces[1:], values[row, :n].tolist(), batch["targets"][row, :n].tolist()
                )
            )
        return traces

    def _tokenizer(self) -> Any:
        if self._tok is None:
            self._tok = AutoTokenizer.from_pretrained(self.hparams["model_path"])
        return self._tok

    def save_hf(self, path: str) -> None:
        """Write the critic as a Hugging Face folder: backbone (LoRA adapters merged) + value head + tokenizer."""
        assert self.model is not None, "configure_model() has not run"
        ValueModel(merge_lora(self.model.backbone), self.model.head).save_pretrained(path)  # type: ignore[arg-type]
        self._tokenizer().save_pretrained(path)
