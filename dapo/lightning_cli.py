"""LightningCLI for `dapo fit|validate`: the model is chosen by class_path, the data is StepDataModule.

The tokenizer is linked from the model's checkpoint path, so a config names it once. A top-level `stage_a`
section (off unless `stage_a.policy_path` is set) adds the StepValueRollout callback that makes the data.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from dapo.callbacks import StageA, StepValueRollout
from dapo.data_modules import StepDataModule


class DapoLightningCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None) -> None:
        super().__init__(
            model_class=L.LightningModule,
            datamodule_class=StepDataModule,
            subclass_mode_model=True,
            args=args,
            save_config_kwargs={"overwrite": True},
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.init_args.model_path", "data.tokenizer")
        parser.add_dataclass_arguments(StageA, "stage_a")

    def before_fit(self) -> None:
        """With `stage_a.policy_path` set, Stage A runs (or resumes) at fit start to make the critic's data."""
        spec = self.config_init[self.subcommand]["stage_a"]
        if spec.policy_path is not None:
            self.trainer.callbacks.append(StepValueRollout(spec))  # type: ignore[attr-defined]
