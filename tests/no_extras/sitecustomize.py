"""Makes the optional packages unimportable in a child process (put this folder on PYTHONPATH), as on a machine
where dapo was installed without extras: with None in sys.modules, `import peft` raises ModuleNotFoundError and
`importlib.util.find_spec("peft")` (how transformers probes for a package) returns None."""

import sys

for name in ("peft", "gguf", "accelerate", "reasoning_gym", "vllm"):
    sys.modules[name] = None  # type: ignore[assignment]
