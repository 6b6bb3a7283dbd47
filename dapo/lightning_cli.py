"""LightningCLI for `dapo fit|validate`: the model is chosen by class_path, the data is StepDataModule.

The tokenizer is linked from the model's checkpoint path, so a config names it once.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

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
