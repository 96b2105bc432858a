"""Prompt workloads, ``run --keep-text`` and ``stairwise compare`` on traces with known texts.

The fake server answers agent ``a``'s call with the words ``a:0 a:1 …``, so every kept text
is known in advance; ``rouge-score`` reads ``aggregator:3`` as the two words ``aggregator 3``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from live.runner import LiveRunner
from reports.answers import answers, compare_answers, similarity
from sim.errors import ConfigError
from sim.metrics import summarize
from sim.scenario import scenario_from_dict
from sim.simulator import Simulator
from sim.trace import missing_field, read_trace
from sim.workload import read_prompts
from stairwise.cli import app
from tests.fake_server import FakeServer, Fault, Timing, fake_server

PROMPTS = ["Explain tides.", "Compare tea and coffee.", "Plan a picnic."]


def prompt_file(tmp_path: Path, prompts: list[str] = PROMPTS) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def scenario_data(url: str | None, prompts: str, **workload: Any) -> dict[str, Any]:
    server: dict[str, Any] = {"kind": "vllm", "profile": "vllm-cpu-smollm2-135m"}
    return {
        "name": "answers",
        "seed": 5,
        "servers": {"gpu": server | ({"endpoint": url} if url else {})},
        "topology": {
            "kind": "moa",
            "proposers": 2,
            "agent": {"max_tokens": 6},
            "aggregator": {"max_tokens": 8},
            "chunks": {"proposer": [2, 4], "aggregator": [3, 5]},
        },
        "workload": {"requests": 3, "prompts": prompts, **workload},
        "live": {"stall_timeout_s": 2.0, "first_token_timeout_s": 5.0},
    }


def live_run(
    server: FakeServer,
    tmp_path: Path,
    name: str,
    keep_text: bool = True,
    prompts: list[str] = PROMPTS,
    **data: Any,
) -> Path:
    """A live run on the fake server asking ``prompts``; ``data`` replaces scenario sections."""
    path = prompt_file(tmp_path, prompts)
    scenario = scenario_from_dict(scenario_data(server.url, str(path)) | data)
    trace = tmp_path / f"{name}.jsonl"
    asyncio.run(LiveRunner(scenario, trace, keep_text=keep_text).run())
    return trace


def words(agent: str, count: int) -> str:
    """What the fake server streams for ``count`` tokens of ``agent``."""
    return "".join(f" {agent}:{k}" for k in range(count))


# --- prompt workloads --------------------------------------------------------------------------


def test_the_builtin_set_has_fifty_varied_prompts() -> None:
    prompts = read_prompts("builtin")
    assert len(prompts) == 50 == len(set(prompts))
    kinds = Path(__file__).parents[2] / "sim" / "prompts" / "builtin.jsonl"
    counted: dict[str, int] = {}
    for line in kinds.read_text().splitlines():
        kind = json.loads(line)["kind"]
        counted[kind] = counted.get(kind, 0) + 1
    assert counted == {"explain": 10, "compare": 10, "plan": 10, "code": 10, "reason": 10}


def test_requests_ask_the_prompts_in_turn_and_natural_lengths_simulate_at_max(
    tmp_path: Path,
) -> None:
    data = scenario_data(None, str(prompt_file(tmp_path, PROMPTS[:2])), output_tokens="natural")
    simulator = Simulator(scenario_from_dict(data))
    assert [r.prompt for r in simulator.requests] == [PROMPTS[0], PROMPTS[1], PROMPTS[0]]
    assert all(r.output_tokens["aggregator"] == 8 for r in simulator.requests)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read prompt file"),
        ('{"prompt": "fine"}\n{"prompt": \n', ":2: not a JSON prompt"),
        ('{"text": "no prompt field"}\n', ":1: needs a non-empty prompt string"),
        ("\n\n", "prompt file has no prompts"),
    ],
)
def test_a_missing_or_malformed_prompt_file_is_one_line_exit_2(
    tmp_path: Path, content: str | None, message: str
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    if content is not None:
        prompts.write_text(content)
    with pytest.raises(ConfigError, match=message):
        read_prompts(str(prompts))
    scenario = tmp_path / "s.yaml"
    scenario.write_text(json.dumps(scenario_data(None, "prompts.jsonl")))
    done = CliRunner().invoke(app, ["simulate", str(scenario), "--replications", "1"])
    assert done.exit_code == 2
    assert done.output.count("\n") == 1 and message in done.output
    assert "Traceback" not in done.output


def test_prompts_and_a_workload_file_are_refused_together(tmp_path: Path) -> None:
    data = scenario_data(None, "builtin", file="requests.jsonl")
    with pytest.raises(ConfigError, match="give prompts or file, not both"):
        scenario_from_dict(data)


# --- run --keep-text -------------------------------------------------------------------------


def test_keep_text_records_every_prompt_and_call_text(tmp_path: Path) -> None:
    with fake_server() as server:
        trace = live_run(server, tmp_path, "kept")
        bare = live_run(server, tmp_path, "bare", keep_text=False)
    records = read_trace(trace)
    assert [r["prompt"] for r in records if r["type"] == "request"] == PROMPTS
    ends = {(r["req"], r["call"]): r for r in records if r["type"] == "call_end"}
    for call in (r for r in records if r["type"] == "call"):
        end = ends[(call["req"], call["call"])]
        if end["status"] == "ok":  # one word a token, each the agent's own
            said = end["text"].split()
            assert len(said) == end["completion_tokens"]
            assert all(word.startswith(f"{call['agent']}:") for word in said)
        assert PROMPTS[call["req"]] in json.dumps(end["prompt_text"])
    assert answers(records, "kept") == {
        req: (prompt, words("aggregator", 8)) for req, prompt in enumerate(PROMPTS)
    }
    # the trace still reads, validates and summarises; without the flag no text is kept
    assert all(missing_field(r) is None for r in records)
    assert summarize(records)["requests"] == 3
    kept_keys = {key for r in read_trace(bare) for key in r}
    assert not kept_keys & {"prompt", "prompt_text", "text"}
    assert "X-Stairwise-Call" not in trace.read_text()


def test_a_kept_trace_still_reports(tmp_path: Path) -> None:
    import stairwise

    with fake_server() as server:
        trace = live_run(server, tmp_path, "kept")
    written = stairwise.report([trace], tmp_path / "kept.html")
    assert written.runs == 1 and written.size_bytes > 0


def test_natural_answers_may_stop_early_exact_ones_may_not(tmp_path: Path) -> None:
    """The aggregator's round 1 writes its 3 tokens; its last call (5 tokens asked) stops
    after 4. With natural lengths that ends its answer at 3 + 4 = 7 tokens; with exact
    lengths it is a failed call."""
    workload = {"requests": 1, "prompts": str(prompt_file(tmp_path))}
    outcomes = {}
    for lengths in ("natural", "max"):
        stop = Fault("short", agent="aggregator", after_tokens=4)
        with fake_server(faults=[stop]) as server:
            trace = live_run(
                server, tmp_path, lengths, workload=workload | {"output_tokens": lengths}
            )
        outcomes[lengths] = next(r for r in read_trace(trace) if r["type"] == "request_end")
    assert outcomes["natural"]["ok"] and not outcomes["max"]["ok"]
    assert outcomes["natural"]["answer_tokens"]["aggregator"] == 7


# --- stairwise compare -----------------------------------------------------------------------


def test_similarity_by_hand() -> None:
    """'the cat sat on the mat' vs 'the cat lay on the mat': LCS 5 of 6 words each side."""
    score = similarity("The cat sat on the mat.", "the cat lay on the mat")
    assert score["rouge_l_f1"] == pytest.approx(5 / 6)
    assert score["head_rouge_l_f1"] == pytest.approx(5 / 6)
    assert score["common_prefix_tokens"] == 2
    long = " ".join(f"w{i}" for i in range(100))
    changed_tail = " ".join(f"w{i}" for i in range(64)) + " x" * 36
    score = similarity(long, changed_tail)
    assert score["head_rouge_l_f1"] == 1.0 and score["common_prefix_tokens"] == 64
    assert score["rouge_l_f1"] == pytest.approx(0.64)


def test_compare_pairs_by_prompt_and_scores_known_texts(tmp_path: Path) -> None:
    """The same run against itself: every answer identical. Against a run with 4-token
    answers (``aggregator:0 … aggregator:3`` = 8 words of the full 16): ROUGE-L precision 1,
    recall 1/2, F1 2/3; the shared head is all 8 words."""
    with fake_server(timings={"aggregator": Timing(0.05, 0.01)}) as server:
        base = live_run(server, tmp_path, "base")
        topology = scenario_data(None, "")["topology"]
        chunks = {"proposer": [2, 4], "aggregator": [2, 2]}
        shorter = {**topology, "aggregator": {"max_tokens": 4}, "chunks": chunks}
        other = live_run(server, tmp_path, "other", prompts=PROMPTS[::-1], topology=shorter)
    same = compare_answers(read_trace(base), read_trace(base))
    assert same["pairs"] == 3 and same["identical"] == 3
    assert same["rouge_l_f1"]["min"] == 1.0
    assert same["latency"]["ttft_s"]["delta"]["p50"] == 0.0
    result = compare_answers(read_trace(base), read_trace(other))
    assert [(r["base_req"], r["other_req"]) for r in result["requests"]] == [(0, 2), (1, 1), (2, 0)]
    assert result["rouge_l_f1"]["mean"] == pytest.approx(2 / 3)
    assert result["head_rouge_l_f1"]["p50"] == pytest.approx(2 / 3)
    assert result["common_prefix_tokens"]["min"] == 8
    assert result["latency"]["e2e_s"]["delta"]["count"] == 3


def test_compare_refuses_traces_without_text_in_one_line(tmp_path: Path) -> None:
    with fake_server() as server:
        bare = live_run(server, tmp_path, "bare", keep_text=False)
        kept = live_run(server, tmp_path, "kept")
    done = CliRunner().invoke(app, ["compare", str(kept), str(bare)])
    assert done.exit_code == 2
    assert "keeps no text (run it with --keep-text)" in done.output
    assert done.output.count("\n") == 1
    shown = CliRunner().invoke(app, ["compare", str(kept), str(kept), "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["identical"] == 3
