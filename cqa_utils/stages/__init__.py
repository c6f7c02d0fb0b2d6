"""One module per pipeline stage, each exposing ``run_<stage>(cfg, force) -> dict[str, Path]``.

The order, folders and notebooks are in :mod:`cqa_utils.registry`. A stage reads only the
files of earlier stages (:func:`cqa_utils.runs.stage_outputs`) and never imports another
stage or the CLI; the shared logic lives in the flat base modules of ``cqa_utils``.
"""
