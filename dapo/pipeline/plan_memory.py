"""The memory model behind `dapo plan`: bytes of one stage's weights, gradients, optimizer state and activations for
one micro-batch, as pure arithmetic (`benchmarks/memory_plan.py` checks it against measured peaks on CPU).

Notation: d = hidden, d_kv = key/value width (d x kv_heads / heads), f = MLP width, L = layers, V = vocabulary,
n = tokens in the micro-batch (padding included), s = tokens per row, h = heads, n_a = tokens whose log-probs are
taken (the actor's action tokens), a = bytes per activation (4 in fp32, 2 under bf16/fp16 mixed precision).

  weights      4 bytes per parameter (fp32 master weights); a 4-bit (nf4) base keeps its decoder-block matrices in
               0.5 byte + an fp32 scale per 64 (0.5625 bytes), 8-bit in 1 byte; embeddings, norms and the LM head
               stay fp32; LoRA adapters add r (9 d + 2 d_kv + 3 f) fp32 parameters per layer (every linear layer)
  gradients    4 bytes per trainable parameter
  optimizer    AdamW: 2 fp32 states (8 bytes) per trainable parameter; bitsandbytes' 8-bit AdamW: 2 bytes
  activations  a Llama block keeps n (9 d + 2 d_kv + 4 f) values for its backward pass: its input, the two norms'
               normalised input and output (2 x 2 n d), q and k after RoPE and v (n (d + 2 d_kv)), the attention
               output and its reshaped copy (2 n d), the residual (n d), and the MLP's gate, up, SiLU and product
               (4 n f); "eager" attention adds its probabilities (n h s). With checkpointing a block keeps only its
               input (n d) and recomputes the rest, one block at a time, during the backward pass.
               The actor's LM head: the logits of every token (n V) and, of the n_a action tokens, a normalised copy
               and its log-softmax (2 n_a V), all fp32. The backward pass needs about 2 n (d + f) of gradients in
               flight for a block.

  activations = L x (kept per block) + max(LM head, recomputed block + backward work)
  peak        = weights + optimizer + max(activations + LM head gradient, gradients + last block's work)

Gradients and activations do not peak together: the backward pass frees a block's activations as it writes that
block's gradients. At its start all activations are held and only the LM head's gradient is written (V d, when it
trains); at its end every gradient exists and only the first block's activations and backward work remain.
Checked against measured peaks on CPU in docs/performance.md (`benchmarks/memory_plan.py`).
Left out: framework and allocator overhead, the CUDA context (about 0.5 GB a GPU), fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dapo.pipeline.plan_costs import ModelShape

NF4_BYTES = 0.5 + 4 / 64  # a 4-bit value plus an fp32 absmax per block of 64
QUANTIZED_BYTES = {None: 4.0, "8bit": 1.0, "4bit": NF4_BYTES}
OPTIMIZER_BYTES = {"adamw": 8.0, "adamw8bit": 2.0}  # per trainable parameter: two moments


@dataclass(frozen=True)
class TrainSetup:
    """What sets a trained stage's memory besides the model: the micro-batch, adapters, quantization, checkpointing."""

    tokens: float
    """Tokens per micro-batch (`data.max_tokens`, padding included)."""
    sequence: float
    """Tokens per row: the attention context."""
    logit_tokens: float = 0.0
    """Tokens whose log-probs are taken (the actor's action tokens); 0 for the critic, which has no LM head."""
    lm_head: bool = True
    """The model keeps its LM head (the actor) rather than a value head (the critic)."""
    lora_r: int | None = None
    """LoRA rank, or None to train every weight."""
    load_in: str | None = None
    """"8bit" / "4bit" for a quantized frozen base (QLoRA), None for fp32."""
    checkpointing: bool = False
    """Gradient checkpointing."""
    optimizer: str = "adamw"
    """"adamw" (2 fp32 states per trainable parameter) or "adamw8bit" (bitsandbytes)."""
    eager_attention: bool = False
    """attn_implementation "eager": the attention probabilities are kept."""
    activation_bytes: float = 4.0
    """4 in fp32, 2 under bf16 / fp16 mixed precision."""
    shards: int = 1
    """FSDP2 data-parallel degree: weights, gradients and optimizer state are split over this many devices, and one
    decoder block at a time is gathered whole (its weights, and its gradients before they are reduce-scattered)."""


@dataclass(frozen=True)
class Memory:
    """Bytes of each part of a stage's memory for one micro-batch."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    early_gradients: float = 0.0
    """Gradients written while the activations peak (the LM head's)."""
    late_activations: float = 0.0
    """Activations in flight while the last gradients are written (the first block's, and its backward work)."""

    @property
    def peak(self) -> float:
        """Weights and optimizer state, plus the larger of the backward pass's start and its end."""
        start, end = self.activations + self.early_gradients, self.gradients + self.late_activations
        return self.weights + self.optimizer + max(start, end)

    def fits(self, device_bytes: float) -> bool:
        return self.peak <= device_bytes


def block_params(model: ModelShape) -> float:
    """Parameters in the decoder blocks' linear layers: L (2 d^2 + 2 d d_kv + 3 d f)."""
    d = model.hidden
    return model.layers * (2 * d * d + 2 * d * model.kv_hidden + 3 * d * model.ffn)


def lora_params(model: ModelShape, r: int) -> float:
    """Adapter parameters on every linear layer of the blocks: r (in + out) each, r (9 d + 2 d_kv + 3 f) a block."""
    return model.layers * r * (9 * model.hidden + 2 * model.kv_hidden + 3 * model.ffn)


def all_params(model: ModelShape, lm_head: bool) -> float:
    """Every parameter: the matrix products (N), plus an untied input embedding; the critic trades the LM head
    (V d, or the tied embedding it shares) for a value head (d + 1) and keeps its input embedding."""
    if lm_head:
        return model.params + model.embedding
    return model.params + model.hidden + 1  # untied: minus the LM head, plus the embedding, both V d


def trainable_params(model: ModelShape, setup: TrainSetup) -> float:
    """Every parameter, or the adapters (plus the critic's value head) with LoRA."""
    if setup.lora_r is None:
        return all_params(model, setup.lm_head)
    return lora_params(model, setup.lora_r) + (0 if setup.lm_head else model.hidden + 1)


def weight_bytes(model: ModelShape, setup: TrainSetup) -> float:
    """fp32 weights, the blocks' matrices quantized if `load_in`, plus fp32 adapters."""
    blocks = block_params(model)
    rest = all_params(model, setup.lm_head) - blocks
    adapters = 0.0 if setup.lora_r is None else lora_params(model, setup.lora_r)
    return blocks * QUANTIZED_BYTES[setup.load_in] + 4 * (rest + adapters)


def block_activations(model: ModelShape, setup: TrainSetup) -> float:
    """Values one block keeps for its backward pass: n (9 d + 2 d_kv + 4 f) (+ n h s with eager attention)."""
    d, n = model.hidden, setup.tokens
    kept = n * (9 * d + 2 * model.kv_hidden + 4 * model.ffn)
    return kept + (n * model.heads * setup.sequence if setup.eager_attention else 0.0)


def backward_work(model: ModelShape, setup: TrainSetup) -> float:
    """Bytes in flight while a block runs backward: about 2 n (d + f) gradients, plus the block's recomputed
    activations under checkpointing."""
    work = 2 * setup.tokens * (model.hidden + model.ffn)
    return setup.activation_bytes * (work + (block_activations(model, setup) if setup.checkpointing else 0.0))


def activation_bytes(model: ModelShape, setup: TrainSetup) -> float:
    """Peak activation bytes of one micro-batch's forward and backward pass (see the module docstring)."""
    n, d, a = setup.tokens, model.hidden, setup.activation_bytes
    block = block_activations(model, setup)
    kept = model.layers * (n * d if setup.checkpointing else block) + 3 * n * d  # + the final norm and output
    head = 4 * model.vocab * (n + 2 * setup.logit_tokens) if setup.lm_head else 0.0  # fp32 logits
    return a * kept + max(head, backward_work(model, setup))


def first_block_bytes(model: ModelShape, setup: TrainSetup) -> float:
    """What the end of the backward pass still holds: the first block's activations (kept or recomputed) and its
    backward work."""
    kept = setup.activation_bytes * block_activations(model, setup)
    return backward_work(model, setup) + (0.0 if setup.checkpointing else kept)


def training_memory(model: ModelShape, setup: TrainSetup) -> Memory:
    """Weights, gradients, optimizer state and activations of one micro-batch's training step, on one device (under
    FSDP2, its shard of the state plus one gathered block)."""
    trainable, shards = trainable_params(model, setup), setup.shards
    block = block_params(model) / model.layers if model.layers else 0.0  # no layers: a plan without a model
    gathered = 0.0 if shards == 1 else 4 * block * (shards - 1) / shards
    return Memory(
        weights=weight_bytes(model, setup) / shards + gathered,
        gradients=4 * trainable / shards + gathered,
        optimizer=OPTIMIZER_BYTES[setup.optimizer] * trainable / shards,
        activations=activation_bytes(model, setup),
        early_gradients=4 * model.vocab * model.hidden if setup.lm_head and setup.lora_r is None else 0.0,
        late_activations=first_block_bytes(model, setup),
    )


def inference_memory(
    model: ModelShape, load_in: str | None, cache_tokens: float, forward_tokens: float, logit_tokens: float
) -> Memory:
    """A frozen model: weights, a KV cache of `cache_tokens` (2 L d_kv fp32 each) and one forward pass over
    `forward_tokens` (one block's intermediates at a time, 2 d + 2 f each) with the logits of `logit_tokens`
    (and their log-softmax: 2 V each)."""
    weights = weight_bytes(model, TrainSetup(tokens=0, sequence=0, load_in=load_in))
    cache = 4 * 2 * model.layers * model.kv_hidden * cache_tokens
    forward = 4 * (forward_tokens * 2 * (model.hidden + model.ffn) + logit_tokens * 2 * model.vocab)
    return Memory(weights=weights, gradients=0.0, optimizer=0.0, activations=cache + forward)


def variants(setup: TrainSetup, lora_r: int = 16, fsdp_devices: int = 8) -> dict[str, TrainSetup]:
    """The configured setup and the memory switches a user would try next. LoRA and 4-bit bases are not sharded
    (configs/fsdp.yaml does not support them), so FSDP2 is offered for full fine-tuning only."""
    r = setup.lora_r or lora_r
    rows = {
        "as configured": setup,
        "checkpointing " + ("off" if setup.checkpointing else "on"): replace(
            setup, checkpointing=not setup.checkpointing
        ),
    }
    if setup.lora_r is None and setup.load_in is None and setup.shards == 1:
        rows[f"FSDP2 over {fsdp_devices} + checkpointing"] = replace(setup, shards=fsdp_devices, checkpointing=True)
    return rows | {
        f"LoRA r={r}": replace(setup, lora_r=r, load_in=None, shards=1),
        f"LoRA r={r} + checkpointing": replace(setup, lora_r=r, load_in=None, checkpointing=True, shards=1),
        f"QLoRA 4-bit r={r} + checkpointing": replace(setup, lora_r=r, load_in="4bit", checkpointing=True, shards=1),
    }
