"""Chat templates (issue 25 part 2): a locally saved tiny model that carries one gets its prompts
through it, on the solver's path and the OpenAI chat route; the TIR loop's continuation after a
tool output is the template's assistant-prefix continuation; the project's own models keep the raw
format."""

from __future__ import annotations

import asyncio

import pytest

from squigglray.engines import Completion, Engine, HFEngine
from squigglray.engines.base import encode_prompt, template_prompt
from squigglray.eval.run_code import SubprocessExecutor
from squigglray.schemas.solve import SolveOptions
from squigglray.solve import prompts
from squigglray.solve.tir import solve

# ChatML, with BOS written by the template itself (as Llama-3 and Qwen-style templates do)
CHATML = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
          "{% if not (loop.last and m['role'] == 'assistant') %}<|im_end|>\n{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
PROBLEM = "Compute 6 * 7."


@pytest.fixture(scope="module")
def templated(nano_tokenizer, tmp_path_factory):
    """The nano model saved with a copy of the nano tokenizer that carries CHATML and, like hub
    tokenizers, adds BOS itself when encoding."""
    import copy

    from tokenizers.processors import TemplateProcessing

    from squigglray.models import build_model

    folder = tmp_path_factory.mktemp("chatml")
    tok = copy.deepcopy(nano_tokenizer)
    tok.chat_template = CHATML
    bos = tok.bos_token
    tok.backend_tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.bos_token_id)])
    build_model("nano", tok, 256, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return HFEngine.from_pretrained(str(folder), device="cpu")


class Scripted(Engine):
    """The templated model's own chat rendering, with scripted completions (one per round, chosen by
    the tool outputs already in the prompt), recording every prompt it is asked to continue."""

    name = "scripted"

    def __init__(self, render: Engine, script: list[tuple[str, str | None]]):
        self.render, self.script, self.prompts = render, script, []

    @property
    def model_name(self) -> str:
        return "scripted"

    async def render_chat(self, messages):
        return await self.render.render_chat(messages)

    async def generate(self, prompts_, params, seeds=None):
        self.prompts += prompts_
        rounds = [p.count("```output") - self.prompts[0].count("```output") for p in prompts_]  # outputs so far
        return [[Completion(self.script[r][0], "stop", self.script[r][1], 1, 1)] for r in rounds]


def test_the_solver_prompts_through_the_template_and_continues_the_assistant_turn(templated):
    tok = templated.tokenizer
    code = ("Let me compute.\n```python\nprint(6 * 7)\n```\n", "```output")
    answer = ("The answer is \\boxed{42}.", None)
    engine = Scripted(templated, [code, answer])
    executor = SubprocessExecutor()
    try:
        r = asyncio.run(solve(PROBLEM, engine, executor, SolveOptions(n=1, rounds=3, prompt="tir", early_stop=False),
                              traces=True))
    finally:
        executor.close()
    user = {"role": "user", "content": prompts.user_message(PROBLEM, "tir")}
    first, second = engine.prompts
    assert first == tok.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    assert first.startswith(tok.bos_token + "<|im_start|>user\n") and "Solution:" not in first
    assert r.answer == "42" and r.candidates[0].code_runs[0].output == "42"
    # round 2 continues the assistant's turn: the template renders the conversation so far, its last
    # (assistant) message left open, exactly as the loop's text
    turn = r.candidates[0].text[: r.candidates[0].text.index(answer[0])]
    assert second == tok.apply_chat_template([user, {"role": "assistant", "content": turn}], tokenize=False,
                                             continue_final_message=True)
    assert tok("x")["input_ids"][0] == tok.bos_token_id  # this tokenizer adds BOS itself
    ids = encode_prompt(tok, second)
    assert ids[0] == tok.bos_token_id and tok.bos_token_id not in ids[1:]  # BOS once, written by the template


def test_a_real_templated_model_solves_and_chats_through_its_template(templated):
    from squigglray.engines.openai_api import ChatCompletionRequest, complete

    tok = templated.tokenizer
    r = asyncio.run(solve(PROBLEM, templated, None, SolveOptions(n=2, rounds=1, max_tokens_per_round=8,
                                                                 execute_code=False, early_stop=False)))
    assert r.n_candidates == 2
    req = ChatCompletionRequest(messages=[{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": PROBLEM}], max_tokens=4, temperature=0)
    out = asyncio.run(complete(templated, req))
    rendered = template_prompt(tok, req.dialog())
    assert rendered.startswith(tok.bos_token + "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert out["usage"]["prompt_tokens"] == len(encode_prompt(tok, rendered))
    assert out["choices"][0]["message"]["content"] == templated.generate_sync(
        [rendered], req.sampling_params())[0][0].text


def test_the_projects_models_keep_the_raw_format(nano_tokenizer):
    from squigglray.engines.base import raw_chat_prompt
    from squigglray.families.trace import format_prompt

    assert template_prompt(nano_tokenizer, [{"role": "user", "content": PROBLEM}]) is None
    assert raw_chat_prompt([{"role": "user", "content": PROBLEM}]) == format_prompt(PROBLEM)
    assert raw_chat_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROBLEM},
                            {"role": "assistant", "content": "We"}]) == "Be brief.\n" + format_prompt(PROBLEM) + "We"
    with pytest.raises(ValueError, match="no chat template"):
        raw_chat_prompt([{"role": "assistant", "content": "x"}, {"role": "user", "content": PROBLEM}])
