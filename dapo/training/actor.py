"""ActorModule: trains the policy offline on Stage B's step-level advantages with DAPO's squared loss.

Each micro-batch holds whole states, each packed as one row (its tokens once, then all its candidate actions;
`dapo.core.packing`). The policy's log pi_theta(a | s) is gathered per action, and the loss (paper eq. 12)

    1/2 (A(s, a) / beta - [log pi_theta(a | s) - log pi_ref(a | s)])^2

pulls every action's log-ratio to A / beta. The reference log-probs come stored with the actions, so no
reference model is in memory. Logged: the loss, the mean and spread of the log-ratio, the fraction of actions
whose log-ratio has the sign of their advantage, an estimate of KL(pi_ref || pi_theta), and a histogram of
advantages. At fit start the actions' reference log-probs are checked to come from the policy the actor starts
from (by weight hash), and the model to honour the packing mask; if it does not, batches are unpacked into one
padded row per action (and a warning says so). The optimizer defaults to torch's AdamW (lr 1e-3): set the lr.
Left out on purpose: a live reference model, clipping or importance ratios, co-training with the critic.

    dapo fit --config configs/actor.yaml
"""

from __future__ import annotations

from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics import MeanMetric
from transformers import AutoModelForCausalLM, AutoTokenizer

from dapo.core.errors import check_model_folder
from dapo.core.fingerprint import policy_fingerprint
from dapo.core.losses import DapoLoss, dapo_loss
from dapo.core.packing import Batch, unpack_batch
from dapo.data_modules import StepDataModule
from dapo.models.adapters import LoadIn, LoraSettings, add_lora, merge_lora
from dapo.models.memory import AttnImplementation, check_attention
from dapo.models.outputs import check_packing, param_dtype, policy_logprobs
from dapo.records import read_provenance
from dapo.training.backbone import TrainableBackbone
from dapo.training.guards import NonFinitePolicy, check_policy
from dapo.training.media import log_histogram

RATIO_STATS = ("log_ratio_mean", "log_ratio_std", "sign_agreement", "kl_ref")  # what `log_ratio_stats` returns
KL_EXP_CAP = 50.0  # log-ratios above this are capped inside exp() of the KL estimate (logging only)


def log_ratio_stats(log_ratio: torch.Tensor, advantages: torch.Tensor) -> dict[str, torch.Tensor]:
    """Diagnostics of log-ratios r (a,) against advantages A (a,).

    sign_agreement: share of actions with A != 0 whose r has A's sign (the direction DAPO pushes them).
    kl_ref: (e^r - 1) - r averaged, an unbiased, non-negative estimate of KL(pi_ref || pi_theta) when actions are
    drawn from pi_ref (they are: Stage A's rollouts; de-duplication makes it approximate).
    """
    r = log_ratio.detach().float()
    nonzero = advantages != 0
    agree = (torch.sign(r) == torch.sign(advantages))[nonzero].float()
    return {
        "log_ratio_mean": r.mean(),
        "log_ratio_std": r.std(unbiased=False),
        "sign_agreement": agree.mean() if agree.numel() else torch.zeros((), device=r.device),
        "kl_ref": (torch.expm1(r.clamp(max=KL_EXP_CAP)) - r).mean(),
    }


class ActorModule(TrainableBackbone, L.LightningModule):
    def __init__(
        self,
        model_path: str,
        beta: float = 0.01,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        verify_packing: bool = True,
        lora: LoraSettings | None = None,
        load_in: LoadIn | None = None,
        on_nonfinite: NonFinitePolicy = "raise",
        gradient_checkpointing: bool = False,
        attn_implementation: AttnImplementation = "sdpa",
    ) -> None:
        """
        Args:
            model_path: Hugging Face causal-LM folder of the policy to start from (the reference policy).
            beta: DAPO's temperature: the loss sets log-ratios to advantage / beta (paper: 0.01).
            optimizer: optimizer factory (the paper: lr 5e-7 for a 7B policy).
            lr_scheduler: optional scheduler factory, stepped every optimizer step.
            verify_packing: at fit start, check that the model honours the packing mask (else run unpacked).
            lora: train LoRA adapters instead of every weight.
            load_in: "8bit" / "4bit" (nf4) to load the frozen base through bitsandbytes: QLoRA, needs `lora`.
                Score the reference log-probs with the same `advantages.load_in`, so that log-ratios start at 0.
            on_nonfinite: a NaN/inf loss or gradient "raise"s (stops the fit naming the batch) or "skip"s that
                optimizer step (counted, logged as train/skipped_steps).
            gradient_checkpointing: keep only each decoder block's input and recompute the block in the backward
                pass: activation memory of one layer instead of all, for about a third more compute per step.
            attn_implementation: attention kernel: "sdpa" (torch's fused attention), "eager" (the reference
                matmul-softmax, more memory) or "flash_attention_2" (needs the `flash-attn` package and a GPU).
                Score the reference log-probs with the same kernel (`advantages.attn_implementation`).
        """
        super().__init__()
        check_policy(on_nonfinite)
        check_attention(attn_implementation)
        check_model_folder(model_path, "model_path")
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.model: Any = None  # a transformers causal LM (peft-wrapped with LoRA), built by configure_model
        self.packed = True
        self._packing_checked = False
        names = ("loss", *RATIO_STATS)
        self.val_metrics = torch.nn.ModuleDict({name: MeanMetric() for name in names})  # synced across ranks
        self._train_advantages: list[torch.Tensor] = []
        self._val_log_ratios: list[torch.Tensor] = []

    def configure_model(self) -> None:
        if self.model is not None:  # idempotent: Lightning may call it again (resume, sharding)
            return
        # fp32 master weights whatever the checkpoint's dtype: the Trainer's `precision` handles mixed precision
        path = self.hparams["model_path"]
        model = self.prepare(self.load_backbone(AutoModelForCausalLM.from_pretrained, path, dtype=torch.float32))
        if self.lora is not None:
            model = add_lora(model, self.lora)
        self.model = self.shard(model.train())  # HF loads in eval mode

    def action_logprobs(self, batch: Batch, packed: bool | None = None) -> torch.Tensor:
        """log pi_theta(a | s) of every action in a packed batch (a,); unpacks it first if packing is off."""
        assert self.model is not None, "configure_model() has not run"
        packed = self.packed if packed is None else packed
        if not packed and (batch["segment_ids"] > 1).any():
            batch = unpack_batch(batch, pad_id=0)  # any id: padding is masked
        return policy_logprobs(self.model, batch, packed)

    def _check_packing(self) -> None:
        if self._packing_checked or not self.hparams["verify_packing"]:
            return
        assert self.model is not None, "configure_model() has not run"
        was_training = self.model.training
        self.model.eval()  # dropout off, so packed and unpacked see the same network
        vocab, name = self.model.config.vocab_size, type(self.model).__name__
        self.packed = check_packing(self.action_logprobs, vocab, 0, param_dtype(self.model), name)
        self.model.train(was_training)
        self._packing_checked = True

    def _check_reference(self) -> None:
        """The stored log pi_ref must come from the policy this actor starts from, or every log-ratio is off."""
        data = self.trainer.datamodule  # type: ignore[attr-defined]
        if not isinstance(data, StepDataModule) or data.mode != "actor":
            return
        made = read_provenance(data.hparams["train_path"])
        ours = policy_fingerprint(self.hparams["model_path"])
        if made.policy_hash is not None and made.policy_hash != ours:
            raise ValueError(
                f"{data.hparams['train_path']} holds reference log-probs of policy {made.policy_hash} "
                f"({made.policy_path}), but the actor starts from {self.hparams['model_path']} ({ours}); "
                "score the actions with the policy the actor starts from (advantages.policy_path = model_path)"
            )

    def on_fit_start(self) -> None:
        self._check_reference()
        self._check_packing()

    def on_validation_start(self) -> None:
        self._check_packing()

    def _loss(self, batch: Batch) -> tuple[DapoLoss, dict[str, torch.Tensor]]:
        logprobs = self.action_logprobs(batch)  # (a,)
        beta = self.hparams["beta"]
        weights = batch["weights"]  # (a,)
        out = dapo_loss(logprobs, batch["ref_logprobs"], batch["advantages"], batch["action_state"], beta, weights)
        return out, log_ratio_stats(out.log_ratio, batch["advantages"])

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        out, stats = self._loss(batch)
        n_actions = batch["advantages"].shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=n_actions)
        self.log_dict({f"train/{k}": v for k, v in stats.items()}, batch_size=n_actions)
        self._train_advantages.append(batch["advantages"].detach().cpu())
        return out.loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        out, stats = self._loss(batch)
        n_actions, n_states = batch["advantages"].shape[0], int(batch["action_state"].max()) + 1
        self._val_metric("loss").update(out.loss, weight=n_states)  # the loss weighs states equally
        for name, value in stats.items():
            self._val_metric(name).update(value, weight=n_actions)
        self._val_log_ratios.append(out.log_ratio.detach().cpu())

    def _val_metric(self, name: str) -> MeanMetric:
        return cast(MeanMetric, self.val_metrics[name])

    def on_validation_epoch_end(self) -> None:
        computed = {f"val/{name}": self._val_metric(name).compute() for name in self.val_metrics}
        self.log_dict(computed, sync_dist=True)  # torchmetrics synced them already: the same on every rank
        for name in self.val_metrics:
            self._val_metric(name).reset()
        if self._val_log_ratios:
            self._histogram("val/log_ratio", torch.cat(self._val_log_ratios))
        self._val_log_ratios = []

    def on_train_epoch_end(self) -> None:
        if self._train_advantages:
            advantages = torch.cat(self._train_advantages)
            self._histogram("train/advantages", advantages)
            self._histogram("train/advantage_over_beta", advantages / self.hparams.beta)  # the log-ratio targets
        self._train_advantages = []

    def _histogram(self, tag: str, values: torch.Tensor) -> None:
        if not self.trainer.sanity_checking:
            log_histogram(self.trainer.loggers, tag, values, self.global_step)

    def save_hf(self, path: str) -> None:
        """Write the policy as a Hugging Face folder (safetensors + tokenizer, LoRA adapters merged) that
        transformers loads directly."""
        assert self.model is not None, "configure_model() has not run"
        merge_lora(self.model).save_pretrained(path)  # type: ignore[operator]
        AutoTokenizer.from_pretrained(self.hparams["model_path"]).save_pretrained(path)
