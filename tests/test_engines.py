"""Engines: sampling params, the HF sampling loop, the OpenAI surface and client, vLLM's absence, make_engine."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch

from squigglray.engines import (
    Completion, EngineConfig, EngineError, EngineUnavailable, SamplingParams, derive_seed, make_engine,
)
from squigglray.engines.hf import HFEngine
from squigglray.engines.openai import OpenAIEngine
from squigglray.engines.openai_api import build_app
from squigglray.models import build_model

from metrics_scenario import free_port

PROMPTS = ["Problem: What is 2 + 3?\nSolution:\n", "hi", "Problem: Find the sum of all primes below 20.\nSolution:\n"]
HOT = dict(temperature=1.0, max_tokens=12)


@pytest.fixture(scope="module")
def nano(nano_tokenizer):
    return build_model("nano", nano_tokenizer, 320, seed=0)


@pytest.fixture(scope="module")
def engine(nano, nano_tokenizer):
    return HFEngine(nano, nano_tokenizer, device="cpu", max_batch_size=64, model_name="nano")


def texts(results: list[list[Completion]]) -> list[list[str]]:
    return [[c.text for c in cs] for cs in results]


# ----- SamplingParams -----

@pytest.mark.parametrize("field,value", [("n", 0), ("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5),
                                         ("max_tokens", 0), ("stop", [""])])
def test_sampling_params_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_sampling_params_defaults_and_stop_string():
    p = SamplingParams(stop="```output")
    assert (p.n, p.temperature, p.top_p, p.max_tokens, p.stop, p.seed) == (1, 0.7, 1.0, 256, ["```output"], None)


def test_derive_seed_depends_on_both_parts():
    assert derive_seed(1, 1) != derive_seed(2, 0)
    assert derive_seed(5, 3) == derive_seed(5, 3)
    assert 0 <= derive_seed(2**62, 10**6) < 2**63


# ----- HFEngine -----

def test_shapes_counts_and_length_finish(engine, nano_tokenizer):
    res = engine.generate_sync(PROMPTS, SamplingParams(n=3, max_tokens=5, temperature=1.0), seeds=[1, 2, 3])
    assert [len(cs) for cs in res] == [3, 3, 3]
    for prompt, cs in zip(PROMPTS, res):
        n_prompt = len(nano_tokenizer(nano_tokenizer.bos_token + prompt, add_special_tokens=False)["input_ids"])
        for c in cs:
            assert c.prompt_tokens == n_prompt
            if c.finish_reason == "length":
                assert c.completion_tokens == 5 and c.stop_reason is None
            else:  # the random nano model may emit eos early
                assert c.completion_tokens <= 5


def test_greedy_matches_stepwise_argmax(engine, nano, nano_tokenizer):
    tok = nano_tokenizer
    res = engine.generate_sync(PROMPTS, SamplingParams(temperature=0, max_tokens=10))
    again = engine.generate_sync(PROMPTS[:1], SamplingParams(temperature=0, max_tokens=10))
    assert again[0] == res[0]
    ids = [tok.bos_token_id] + tok(PROMPTS[0], add_special_tokens=False)["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(10):  # no cache, no padding: the plainest reference there is
            nxt = int(nano(torch.tensor([ids + new])).logits[0, -1].argmax())
            new.append(nxt)
            if nxt == tok.eos_token_id:
                break
    assert res[0][0].text == tok.decode(new, skip_special_tokens=True)
    assert res[0][0].completion_tokens == len(new)


def test_same_seed_same_text_whatever_the_batch(engine):
    alone = engine.generate_sync([PROMPTS[1]], SamplingParams(n=2, **HOT), seeds=[7])
    batched = engine.generate_sync(PROMPTS, SamplingParams(n=2, **HOT), seeds=[11, 7, 13])
    assert batched[1] == alone[0]
    more = engine.generate_sync([PROMPTS[1]], SamplingParams(n=3, **HOT), seeds=[7])  # sample k depends on (seed, k)
    assert more[0][:2] == alone[0]
    via_params = engine.generate_sync([PROMPTS[1]], SamplingParams(n=2, seed=7, **HOT))
    assert via_params == alone
    small = HFEngine(engine.model, engine.tokenizer, device="cpu", max_batch_size=2)  # chunking changes nothing
    assert small.generate_sync(PROMPTS, SamplingParams(n=2, **HOT), seeds=[11, 7, 13]) == batched


def test_different_seeds_differ(engine):
    res = engine.generate_sync([PROMPTS[0]] * 3, SamplingParams(max_tokens=16, temperature=1.0), seeds=[1, 2, 3])
    assert len({cs[0].text for cs in res}) == 3
    n4 = engine.generate_sync([PROMPTS[0]], SamplingParams(n=4, max_tokens=16, temperature=1.0), seeds=[1])
    assert len(set(texts(n4)[0])) == 4


def test_seeds_length_must_match(engine):
    with pytest.raises(ValueError, match="seeds"):
        engine.generate_sync(PROMPTS, SamplingParams(), seeds=[1])


def _stop_from(text: str) -> str:
    """A 3-character piece from the middle of `text` that decodes cleanly (no replacement char)."""
    for i in range(len(text) // 3, len(text) - 3):
        piece = text[i : i + 3]
        if "\ufffd" not in piece:
            return piece
    raise AssertionError(f"no clean 3-character piece in {text!r}")


def test_stop_strings_cut_text_and_set_stop_reason(engine):
    params = dict(temperature=1.0, max_tokens=24)
    free = engine.generate_sync(PROMPTS, SamplingParams(**params), seeds=[1, 2, 3])
    full = free[1][0].text
    stop = _stop_from(full)
    cut = engine.generate_sync(PROMPTS, SamplingParams(stop=["never-appears", stop], **params), seeds=[1, 2, 3])
    c = cut[1][0]
    assert (c.text, c.finish_reason, c.stop_reason) == (full[: full.find(stop)], "stop", stop)
    assert c.completion_tokens < free[1][0].completion_tokens
    for i in (0, 2):  # neighbours that finish later are untouched by a row leaving the batch
        if stop not in free[i][0].text:
            assert cut[i] == free[i]


def test_eos_finishes_with_stop(nano_tokenizer):
    model = build_model("nano", nano_tokenizer, 320, seed=1)
    eos = nano_tokenizer.eos_token_id

    def force_eos(_module, _inputs, logits):
        logits[..., eos] += 1e4
        return logits

    model.lm_head.register_forward_hook(force_eos)
    eng = HFEngine(model, nano_tokenizer, device="cpu")
    (c,), = eng.generate_sync(["hi"], SamplingParams(temperature=1.0, max_tokens=8), seeds=[0])
    assert (c.text, c.finish_reason, c.stop_reason, c.completion_tokens) == ("", "stop", None, 1)
    asyncio.run(eng.aclose())
    with pytest.raises(EngineError, match="closed"):
        eng.generate_sync(["hi"], SamplingParams())


def test_tiny_top_p_is_greedy(engine):
    greedy = engine.generate_sync(PROMPTS, SamplingParams(temperature=0, max_tokens=10))
    nucleus = engine.generate_sync(PROMPTS, SamplingParams(temperature=1.0, top_p=1e-6, max_tokens=10),
                                   seeds=[4, 5, 6])
    assert texts(nucleus) == texts(greedy)


def test_async_generate(engine):
    params = SamplingParams(n=2, **HOT)
    res = asyncio.run(engine.generate(PROMPTS, params, seeds=[1, 2, 3]))
    assert res == engine.generate_sync(PROMPTS, params, seeds=[1, 2, 3])


# ----- OpenAI surface + client -----


@pytest.fixture(scope="module")
def server(engine):
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(build_app(engine, "nano"), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    srv.should_exit = True
    thread.join(timeout=10)


def _post(url: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _remote(url: str, model: str, prompts, params, seeds=None):
    async def go():
        async with OpenAIEngine(url, model) as client:
            return await client.generate(prompts, params, seeds)

    return asyncio.run(go())


def test_openai_client_matches_local_engine(engine, server):
    params = SamplingParams(n=2, stop=["\n", "a"], **HOT)
    assert _remote(server, "nano", PROMPTS, params, [5, 6, 7]) == engine.generate_sync(PROMPTS, params, seeds=[5, 6, 7])
    greedy = SamplingParams(temperature=0, max_tokens=6)
    assert _remote(server, "nano", PROMPTS, greedy) == engine.generate_sync(PROMPTS, greedy)


def test_openai_response_shape(server):
    status, data = _post(server + "/completions", {"model": "nano", "prompt": ["a", "b"], "n": 2, "max_tokens": 3,
                                                   "seed": 1, "stop": "\n"})
    assert status == 200 and data["object"] == "text_completion" and data["model"] == "nano"
    assert [c["index"] for c in data["choices"]] == [0, 1, 2, 3]
    assert set(data["choices"][0]) >= {"index", "text", "finish_reason", "stop_reason", "logprobs"}
    u = data["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and u["prompt_tokens"] == 4
    with urllib.request.urlopen(server + "/models", timeout=10) as resp:
        assert json.loads(resp.read())["data"][0]["id"] == "nano"


@pytest.mark.parametrize("body,status,needle", [
    ({"prompt": "x", "n": 0}, 400, "n"),
    ({"prompt": "x", "top_p": 2}, 400, "top_p"),
    ({"n": 1}, 400, "prompt"),
    ({"prompt": []}, 400, "prompt"),
    ({"prompt": "x", "presence_penalty": 0.5}, 400, "presence_penalty"),  # refused, not ignored
    ({"prompt": "x", "echo": True, "frobnicate": 1}, 400, "echo, frobnicate: not supported"),
    ({"prompt": "x", "logprobs": 6}, 400, "logprobs"),
    ({"prompt": "x", "stream_options": {"include_usage": 1, "x": 2}}, 400, "stream_options"),
    ({"prompt": "x", "model": "other"}, 404, "other"),
    (b"{not json", 400, "JSON"),
])
def test_bad_requests_get_4xx(server, body, status, needle):
    code, data = _post(server + "/completions", body)
    assert code == status and needle in data["error"]["message"]


def test_logprobs_are_the_models_own_under_sampling(engine, nano, nano_tokenizer):
    """Each sampled token's log-probability equals a teacher-forced forward pass over prompt and
    completion (not the tempered distribution it was drawn from); the alternatives are the top k."""
    from squigglray.engines.base import encode_prompt

    params = SamplingParams(n=2, temperature=0.9, max_tokens=8, seed=4, logprobs=3)
    for prompt, samples in zip(PROMPTS[:2], engine.generate_sync(PROMPTS[:2], params)):
        for c in samples:
            assert len(c.logprobs) == c.completion_tokens
            ids = encode_prompt(nano_tokenizer, prompt) + [e["id"] for e in c.logprobs]
            with torch.no_grad():
                lp = torch.log_softmax(nano(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            n = len(ids) - len(c.logprobs)
            for j, e in enumerate(c.logprobs):
                assert e["logprob"] == pytest.approx(float(lp[n - 1 + j, e["id"]]), abs=1e-4)
                top = [v for _, v in e["top_logprobs"]]
                assert len(top) == 3 and top == sorted(top, reverse=True) and top[0] >= e["logprob"] - 1e-6
                assert top[0] == pytest.approx(float(lp[n - 1 + j].max()), abs=1e-4)
    with pytest.raises(ValueError, match="logprobs"):
        SamplingParams(logprobs=21)


def test_the_openai_backend_passes_logprobs_through(engine, server):
    """The `openai` backend asks its server for log-probabilities and reads them back: through our
    own server they are the local engine's (token ids aside, which the OpenAI shape lacks)."""
    params = SamplingParams(temperature=0, max_tokens=5, logprobs=2)
    [[remote]], [[local]] = _remote(server, "nano", PROMPTS[:1], params), engine.generate_sync(PROMPTS[:1], params)
    assert remote.text == local.text and len(remote.logprobs) == local.completion_tokens
    for r, l in zip(remote.logprobs, local.logprobs):
        assert r["token"] == l["token"] and r["logprob"] == pytest.approx(l["logprob"], abs=1e-6)
        assert [t for t, _ in r["top_logprobs"]] == [t for t, _ in l["top_logprobs"]]


def test_fields_at_their_off_value_are_accepted(server):
    code, data = _post(server + "/completions", {"prompt": "x", "max_tokens": 2, "presence_penalty": 0,
                                                 "logprobs": None, "echo": False, "user": "u-1"})
    assert code == 200 and data["usage"]["completion_tokens"] <= 2


def test_parse_choices_without_per_choice_counts():
    from squigglray.engines.openai import parse_choices

    data = {"choices": [{"index": 1, "text": "bb", "finish_reason": "length"},
                        {"index": 0, "text": "a", "finish_reason": "stop", "stop_reason": "\n"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5}}
    a, b = parse_choices(data, 2)
    assert (a.text, a.stop_reason, b.text, b.finish_reason) == ("a", "\n", "bb", "length")
    assert a.completion_tokens + b.completion_tokens == 5 and a.prompt_tokens == 3
    data["choices"][0]["finish_reason"] = "abort"
    with pytest.raises(ValueError, match="abort"):
        parse_choices(data, 2)
    with pytest.raises(ValueError, match="n=3"):
        parse_choices(data, 3)


def test_openai_client_errors_name_url_and_status(server):
    with pytest.raises(EngineError, match=r"/v1/completions -> HTTP 404: The model `not-served`"):
        _remote(server, "not-served", ["x"], SamplingParams(max_tokens=2))
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EngineError, match=closed.replace(".", r"\.") + "/completions"):
        _remote(closed, "nano", ["x"], SamplingParams(max_tokens=2))


# ----- vLLM and make_engine -----

def test_vllm_without_the_extra_says_how_to_install():
    if _has_vllm():
        pytest.skip("vLLM is installed, so the not-installed message this test checks cannot occur")
    from squigglray.engines.vllm import VLLMEngine

    with pytest.raises(EngineUnavailable, match=r"pip install 'squigglray\[vllm\]'"):
        VLLMEngine("some/model")
    with pytest.raises(EngineUnavailable, match="GPU only"):
        make_engine(EngineConfig(backend="vllm", model="tiny"))


def _has_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def test_make_engine_hf_from_folder(tmp_path, nano, nano_tokenizer, engine):
    nano.save_pretrained(tmp_path / "ckpt")
    nano_tokenizer.save_pretrained(tmp_path / "ckpt")
    eng = make_engine(EngineConfig(model=str(tmp_path / "ckpt"), device="cpu", max_batch_size=4))
    assert isinstance(eng, HFEngine) and eng.max_batch_size == 4 and eng.model_name == str(tmp_path / "ckpt")
    params = SamplingParams(n=2, **HOT)
    assert eng.generate_sync(PROMPTS, params, seeds=[1, 2, 3]) == engine.generate_sync(PROMPTS, params, seeds=[1, 2, 3])


def test_make_engine_hf_missing_preset(store):
    from squigglray.models import ModelNotFound

    with pytest.raises(ModelNotFound, match="nano"):
        make_engine(EngineConfig(model="nano", device="cpu"), store)


def test_make_engine_openai(monkeypatch):
    with pytest.raises(ValueError, match="base_url"):
        make_engine(EngineConfig(backend="openai", model="m"))
    eng = make_engine(EngineConfig(backend="openai", model="m", base_url="http://h:1/v1/", max_concurrency=3))
    assert isinstance(eng, OpenAIEngine) and eng.url == "http://h:1/v1/completions" and eng.model_name == "m"
    cfg = EngineConfig(backend="openai", model="m", base_url="http://h:1/v1", api_key_env="SQUIGGLRAY_TEST_KEY")
    monkeypatch.delenv("SQUIGGLRAY_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="SQUIGGLRAY_TEST_KEY"):
        make_engine(cfg)
    monkeypatch.setenv("SQUIGGLRAY_TEST_KEY", "sk-test")
    assert make_engine(cfg).api_key == "sk-test"


def test_engine_config_validation():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="backend"):
        EngineConfig(backend="tgi", model="m")
    with pytest.raises(ValidationError, match="extra"):
        EngineConfig(model="m", temprature=0.3)
    with pytest.raises(ValidationError, match="max_batch_size"):
        EngineConfig(model="m", max_batch_size=0)


def test_engines_never_import_ray():
    code = ("import sys, squigglray.engines as e, squigglray.engines.hf, squigglray.engines.openai, "
            "squigglray.engines.openai_api, squigglray.engines.vllm; "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
