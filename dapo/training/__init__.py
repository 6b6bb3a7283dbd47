"""The two LightningModules and what they share: `CriticModule` (critic), `ActorModule` (actor), the backbone mixin
(loading, sharding, trainable-only checkpoints), injected optimizers, the guards they install on their Trainer
(non-finite steps, RNG state), the critic's plots and the adapter that writes figures, histograms and text to
TensorBoard, W&B or MLflow (media), and plain supervised fine-tuning (start policies, RFT)."""
