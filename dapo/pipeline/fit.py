"""LightningCLI for `dapo fit|validate`: the model is chosen by class_path, the data is StepDataModule.

The tokenizer is linked from the model's checkpoint path, so a config names it once. Two top-level sections
make the data a fit needs, each off unless set: `stage_a` (on when `stage_a.policy_path` is set) adds the
StepValueRollout callback (Stage A states for the critic), `advantages` (on when `advantages.critic_path` is
set) adds StepAdvantages (Stage B actions for the actor). Lightning's distributed sampler is off by default:
StepDataModule's batch sampler gives each data-parallel rank its share of the token-budgeted batches.
CriticModule and ActorModule are imported here so that their short names resolve (`--model.help CriticModule`).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from dapo.callbacks import StepAdvantages, StepValueRollout
from dapo.core.errors import check_model_folder
from dapo.data_modules import StepDataModule
from dapo.stages.candidate_advantages import AdvantageConfig
from dapo.stages.stage_a import StageA
from dapo.training.actor import ActorModule
from dapo.training.critic import CriticModule

__all__ = ["ActorModule", "CriticModule", "DapoLightningCLI"]  # the modules a config's class_path may name


class DapoLightningCLI(LightningCLI):
    def __init__(self, args: list[str] | dict[str, Any] | None = None) -> None:
        super().__init__(
            model_class=L.LightningModule,
            datamodule_class=StepDataModule,
            subclass_mode_model=True,
            args=args,
            save_config_kwargs={"overwrite": True},
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.init_args.model_path", "data.tokenizer")
        # StepDataModule's token-budget batch sampler splits batches across data-parallel ranks itself
        parser.set_defaults({"trainer.use_distributed_sampler": False})
        parser.add_dataclass_arguments(StageA, "stage_a")
        parser.add_dataclass_arguments(AdvantageConfig, "advantages")

    def before_instantiate_classes(self) -> None:
        """A missing model folder is one clear line here (the modules check it too, but jsonargparse would bury
        their error in a page of its own)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        path = config["model"]["init_args"]["model_path"]
        check_model_folder(path, "model.init_args.model_path")

    def before_fit(self) -> None:
        """Stage A (for the critic) and Stage B scoring (for the actor) run at fit start when configured."""
        config = self.config_init[self.subcommand]
        if config["stage_a"].policy_path is not None:
            self.trainer.callbacks.append(StepValueRollout(config["stage_a"]))  # type: ignore[attr-defined]
        if config["advantages"].critic_path is not None:
            self.trainer.callbacks.append(StepAdvantages(config["advantages"]))  # type: ignore[attr-defined]
