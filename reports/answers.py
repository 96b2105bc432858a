"""Answer quality beside latency: two runs' answers to the same prompts, compared.

Both traces must keep their text (``run --keep-text``). Requests are paired by their user
prompt (the n-th asking of a prompt in one run with the n-th in the other), and each pair's
answers are scored with ROUGE-L F1 (the longest common subsequence of words, Google's
``rouge-score``) on the whole answers and on their first :data:`HEAD_TOKENS` words — the
head that a staircase aggregator writes from the least upstream text — and by the words
they share from the start. Words are ``rouge-score``'s tokens (lower-cased letters and
digits), not the model's tokens: traces keep text, not token ids. Latency deltas of the
same pairs sit beside.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from rouge_score import rouge_scorer, tokenize

from sim.errors import ConfigError
from sim.metrics import request_metrics
from sim.trace import Record

HEAD_TOKENS = 64
LATENCIES = {"ttft_s": "ttft", "e2e_s": "e2e", "stall_s": "stall"}


def answers(records: list[Record], source: str) -> dict[int, tuple[str, str]]:
    """Per finished request: (user prompt, the answer's text — the user-facing calls' texts in
    round order). A trace without text is an error naming it."""
    prompts = {r["req"]: r["prompt"] for r in records if r["type"] == "request" and "prompt" in r}
    if not prompts:
        raise ConfigError(f"{source}: the trace keeps no text (run it with --keep-text)")
    ok = {r["req"] for r in records if r["type"] == "request_end" and r["ok"]}
    texts = {(r["req"], r["call"]): r.get("text", "") for r in records if r["type"] == "call_end"}
    parts: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for r in records:
        if r["type"] == "call" and r["final"] and r["req"] in ok:
            parts[r["req"]].append((r["round"], texts.get((r["req"], r["call"]), "")))
    return {
        req: (prompts[req], "".join(text for _, text in sorted(parts[req])))
        for req in sorted(parts)
        if req in prompts
    }


def pair_by_prompt(
    base: dict[int, tuple[str, str]], other: dict[int, tuple[str, str]]
) -> list[tuple[int, int]]:
    """(base request, other request) with the same prompt, the n-th asking with the n-th."""
    waiting: dict[str, list[int]] = defaultdict(list)
    for req, (prompt, _) in other.items():
        waiting[prompt].append(req)
    pairs = []
    for req, (prompt, _) in base.items():
        if waiting[prompt]:
            pairs.append((req, waiting[prompt].pop(0)))
    return pairs


def similarity(reference: str, candidate: str) -> dict[str, float]:
    """ROUGE-L F1 of the whole answers and of their first :data:`HEAD_TOKENS` words, and the
    words they share from the start."""
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    words = tokenize.tokenize(reference, None), tokenize.tokenize(candidate, None)
    heads = [" ".join(w[:HEAD_TOKENS]) for w in words]
    common = 0
    for a, b in zip(*words, strict=False):
        if a != b:
            break
        common += 1
    return {
        "rouge_l_f1": scorer.score(reference, candidate)["rougeL"].fmeasure,
        "head_rouge_l_f1": scorer.score(heads[0], heads[1])["rougeL"].fmeasure,
        "common_prefix_tokens": float(common),
    }


def distribution(values: list[float]) -> dict[str, float | int | None]:
    """Mean, min and quantiles: for similarities the low tail matters as much as the middle."""
    if not values:
        return {"mean": None, "min": None, "p10": None, "p50": None, "p90": None, "count": 0}
    array = np.asarray(values, dtype=float)
    p10, p50, p90 = np.percentile(array, [10, 50, 90])
    return {
        "mean": float(array.mean()),
        "min": float(array.min()),
        "p10": float(p10),
        "p50": float(p50),
        "p90": float(p90),
        "count": len(values),
    }


def compare_answers(
    base: list[Record], other: list[Record], base_name: str = "BASE", other_name: str = "OTHER"
) -> dict[str, Any]:
    """Similarity of ``other``'s answers to ``base``'s, paired by prompt, with its
    distribution; per-request latency deltas (other − base) of the same pairs."""
    base_answers, other_answers = answers(base, base_name), answers(other, other_name)
    pairs = pair_by_prompt(base_answers, other_answers)
    if not pairs:
        raise ConfigError(f"{base_name} and {other_name} share no answered prompt")
    scores = [similarity(base_answers[b][1], other_answers[o][1]) for b, o in pairs]
    timing = {m.req: m for m in request_metrics(base)}, {m.req: m for m in request_metrics(other)}
    latency: dict[str, Any] = {}
    for key, field in LATENCIES.items():
        values = [
            (getattr(timing[0][b], field), getattr(timing[1][o], field))
            for b, o in pairs
            if getattr(timing[0][b], field) is not None and getattr(timing[1][o], field) is not None
        ]
        latency[key] = {
            "base_p50": float(np.median([v[0] for v in values])) if values else None,
            "other_p50": float(np.median([v[1] for v in values])) if values else None,
            "delta": distribution([v[1] - v[0] for v in values]),
        }
    requests = [
        {"base_req": b, "other_req": o, "prompt": base_answers[b][0], **score}
        for (b, o), score in zip(pairs, scores, strict=True)
    ]
    return {
        "base": base_name,
        "other": other_name,
        "pairs": len(pairs),
        "unpaired": {
            "base": len(base_answers) - len(pairs),
            "other": len(other_answers) - len(pairs),
        },
        "head_tokens": HEAD_TOKENS,
        "identical": sum(base_answers[b][1] == other_answers[o][1] for b, o in pairs),
        **{name: distribution([s[name] for s in scores]) for name in scores[0]},
        "latency": latency,
        "requests": requests,
    }
