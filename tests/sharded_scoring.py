"""Worker for test_scoring's two-process test: score the test requests under torchrun.

Every rank scores its share of the batches and receives all results; rank 0 saves them.
Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 tests/sharded_scoring.py OUT.npz BATCH_SIZE
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_scoring import REQUESTS  # noqa: E402

from cqa_utils.config import ModelConfig  # noqa: E402
from cqa_utils.models import load_model  # noqa: E402
from cqa_utils.scoring import score_requests  # noqa: E402


def main(out: str, batch_size: str) -> None:
    from accelerate import PartialState

    model, tokenizer = load_model(ModelConfig(device="cpu"))
    results = score_requests(model, tokenizer, REQUESTS, batch_size=int(batch_size), start_token="<|endoftext|>",
                             progress=False)
    state = PartialState(cpu=True)
    if state.is_main_process:
        np.savez(out, processes=state.num_processes, backend=state.backend,
                 keys=[r.key for r in results], **{r.key: r.logprobs for r in results})


if __name__ == "__main__":
    main(*sys.argv[1:])
