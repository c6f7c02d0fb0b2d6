"""cqa-companion: the package behind the notebooks and the ``cqa`` command.

Importing it drops two notices the pinned libraries print about each other, never about a run (a batch run
shows only warnings about the user's run; tests/test_run_output.py holds both).
"""
import logging as _logging
import warnings as _warnings

# bitsandbytes, which peft imports whenever it is installed, warns at import on CPUs with AVX512-BF16 that its hub
# kernel for that CPU path did not load. cqa_utils.models.disable_avx512bf16_kernels turns the path off on every
# 4-bit layer, so the warning is never about a run of this project: that one message is dropped, any other kept.
BNB_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"
_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: not record.getMessage().startswith(BNB_KERNEL_NOTICE))

# peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` each time it wraps a model (stage 02's
# LoRA model, stage 03's adapters), and transformers warns about peft's line.
PEFT_DEPRECATION_NOTICE = "`is_gradient_checkpointing` is deprecated"
_warnings.filterwarnings("ignore", message=PEFT_DEPRECATION_NOTICE, category=FutureWarning)
