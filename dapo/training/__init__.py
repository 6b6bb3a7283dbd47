"""The two LightningModules and what they share: `CriticModule` (critic), `ActorModule` (actor), the backbone mixin
(loading, sharding, trainable-only checkpoints), injected optimizers, the guards they install on their Trainer
(non-finite steps, RNG state), the critic's plots, and plain supervised fine-tuning (start policies, RFT)."""
