"""Sampling from a policy: the `Generator` protocol and its settings (`protocol`), the Hugging Face generator
(`hf_generator`, with its static KV cache in `kv_cache`) and the optional vLLM one (`vllm_generator`). Stage A,
evaluation and the benchmark callback take any `Generator`."""
