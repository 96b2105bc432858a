"""The scenario file: servers, network, topology, workload, prices — one validated model.

Everything a run needs is here, so the same file drives ``simulate`` and ``run``. Models
forbid unknown keys and pick variants by a ``kind``/``dist`` field, so a typo is an error
naming the field, not a silently ignored setting.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from sim.distributions import FixedLatency, FixedTokens, LatencyDist, TokenDist
from sim.errors import DISTRIBUTION_TAGS, ConfigError, validated
from sim.jsonl import file_digest


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- servers ------------------------------------------------------------------------------


class Prices(Strict):
    """Token prices in $ per million tokens: the scenario's ``prices`` price every server that
    states none of its own."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0, description="default: input price")


class ServerPrices(Prices):
    """A server's own prices, instead of the scenario's: per token (a hosted API) or per
    GPU-hour (a server one runs: paid for every replica over the whole run, busy or not)."""

    per_gpu_hour: float | None = Field(None, ge=0, description="$ per GPU-hour")
    gpus: int | None = Field(None, ge=1, description="GPUs per replica (default 1)")

    @model_validator(mode="after")
    def _one_way(self) -> ServerPrices:
        if self.gpus is not None and self.per_gpu_hour is None:
            raise ValueError("gpus prices GPU-hours: give per_gpu_hour too")
        prices = {
            "input_per_mtok": self.input_per_mtok,
            "output_per_mtok": self.output_per_mtok,
            "cached_input_per_mtok": self.cached_input_per_mtok,
        }
        per_token = [name for name, price in prices.items() if price]
        if self.per_gpu_hour is not None and per_token:
            raise ValueError(
                f"price a server per token or per GPU-hour, not both ({', '.join(per_token)} with "
                "per_gpu_hour)"
            )
        return self


class ServerBase(Strict):
    profile: str = Field(description="a shipped profile's name or a path to a profile JSON")
    endpoint: str | None = Field(None, description="OpenAI-compatible base URL for live runs")
    model: str | None = Field(None, description="model name the endpoint serves")
    api: Literal["chat", "completions"] = "chat"
    api_key_env: str | None = Field(None, description="environment variable holding the key")
    replicas: int = Field(1, ge=1, description="identical copies; requests are spread over them")
    endpoints: list[str] | None = Field(
        None, description="live: one base URL per replica, in order (instead of endpoint)"
    )
    prefix_caching: bool = True
    network: LatencyDist | None = Field(None, description="overrides network.latency")
    prices: ServerPrices | None = Field(None, description="this server's; default: the scenario's")

    @model_validator(mode="after")
    def _one_url_per_replica(self) -> ServerBase:
        if self.endpoints is not None:
            if self.endpoint is not None:
                raise ValueError("give endpoint or endpoints, not both")
            if len(self.endpoints) != self.replicas:
                raise ValueError(
                    f"endpoints lists {len(self.endpoints)} URLs for {self.replicas} replicas"
                )
        return self

    @property
    def urls(self) -> list[str]:
        """Live: the base URL of each replica (none given: empty)."""
        if self.endpoints is not None:
            return list(self.endpoints)
        return [self.endpoint] if self.endpoint is not None else []


class VllmServer(ServerBase):
    kind: Literal["vllm"] = "vllm"
    max_num_seqs: int = Field(128, ge=1)
    max_num_batched_tokens: int = Field(2048, ge=1)
    kv_capacity_tokens: int | None = Field(None, ge=1, description="default: the profile's")
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        "fcfs",
        description="vLLM's --scheduling-policy: priority serves a lower request priority first",
    )


class ApiServer(ServerBase):
    """A hosted endpoint: a black box the client talks to in strict OpenAI-compatible form,
    within its limits (per replica: each replica is an endpoint of its own, e.g. another key)."""

    kind: Literal["api"]
    max_concurrency: int | None = Field(None, ge=1, description="requests served at once")
    rpm: int | None = Field(None, ge=1, description="requests per minute the endpoint allows")
    tpm: int | None = Field(
        None, ge=1, description="tokens per minute (prompt + max_tokens per call) it allows"
    )


Server = Annotated[VllmServer | ApiServer, Field(discriminator="kind")]


class Network(Strict):
    latency: LatencyDist = Field(default_factory=lambda: FixedLatency(value_ms=0.0))


# --- agents and topologies ------------------------------------------------------------------


class AgentSettings(Strict):
    """Per-agent settings; every field may be left out to inherit from ``topology.agent``."""

    server: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    system_prompt: str | None = None
    temperature: float | None = Field(None, ge=0)
    priority: int | None = Field(
        None,
        description="vLLM request priority, lower served first (default 0); needs the server's "
        "scheduling_policy: priority",
    )


Schedule = Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]


class ScheduledAgentSettings(AgentSettings):
    """An agent's settings plus its own output chunk schedule (default: the topology's)."""

    chunks: Schedule | None = Field(None, description="this agent's unit sizes; last repeats")


class MoaChunks(Strict):
    proposer: Schedule = Field(default_factory=lambda: [8, 128, 256])
    aggregator: Schedule = Field(default_factory=lambda: [8, 128, 128])


Mode = Literal["staircase", "standard", "multistream"]
Template = Literal["standard", "prefix_cache"]
RedundancyScope = Literal["first", "all"]
ProposerCalls = Literal["stream", "per_chunk"]


class MultistreamSettings(Strict):
    """The assumptions of ``mode: multistream`` — a model that decodes every agent as a parallel
    token stream of one sequence. No engine serves one yet, so these are what-if parameters."""

    stream_token_s: float | None = Field(
        None,
        ge=0,
        description="seconds each stream beyond the first adds to a decode step; default: the "
        "profile's prefill_token_s (a step with K streams computes K query tokens)",
    )
    lag_steps: int = Field(
        1, ge=1, description="a stream sees the other streams' tokens this many steps later"
    )


class RoundOptions(Strict):
    """How streaming agents of any topology wait, call and re-prompt (staircase / stream)."""

    redundancy: int = Field(0, ge=0, description="inputs a round may start without")
    redundancy_scope: RedundancyScope = Field(
        "first",
        description="first: only the first round starts without the slowest `redundancy` "
        "inputs (the staircase paper's rule); all: every round does",
    )
    proposer_calls: ProposerCalls = Field(
        "stream",
        description="how agents the user does not read generate: stream one call cut at unit "
        "boundaries, or per_chunk one call per unit (each continuing the text so far)",
    )
    template: Template = "standard"
    multistream: MultistreamSettings | None = Field(None, description="mode: multistream only")

    def _options_fit(self, mode: str) -> None:
        """A multi-stream sequence makes no calls and has one start rule: refuse the options
        that would not apply. (Modes without rounds keep them: a planner or ``--set`` may
        switch a scenario to standard; its one round is a first round.)"""
        _multistream_settings_fit(mode, self.multistream)
        if mode != "multistream":
            return
        if self.proposer_calls == "per_chunk":
            raise ValueError("proposer_calls: per_chunk makes calls; mode multistream makes none")
        if self.redundancy_scope == "all":
            raise ValueError("redundancy_scope: all; mode multistream has one start rule (first)")


class MoaLayer(Strict):
    """One layer of proposers; what it leaves out it takes from the topology."""

    proposers: int | None = Field(None, ge=1, description="default: topology.proposers")
    proposer: ScheduledAgentSettings | list[ScheduledAgentSettings] | None = Field(
        None, description="one setting for the layer, or one per proposer"
    )
    chunks: Schedule | None = Field(None, description="default: topology.chunks.proposer")


class MoaTopology(RoundOptions):
    """N proposers (in ``layers`` layers) feeding one aggregator."""

    kind: Literal["moa"]
    mode: Mode = "staircase"
    proposers: int = Field(3, ge=1)
    layers: Annotated[
        Annotated[Annotated[int, Field(ge=1)], Tag("layer-count")]
        | Annotated[Annotated[list[MoaLayer], Field(min_length=1)], Tag("layer-list")],
        Discriminator(lambda v: "layer-list" if isinstance(v, list) else "layer-count"),
    ] = Field(
        1,
        description="a count (every layer alike; upper layers take the aggregator's schedule) "
        "or one entry per layer",
    )
    agent: AgentSettings = Field(default_factory=AgentSettings)
    proposer: ScheduledAgentSettings | list[ScheduledAgentSettings] = Field(
        default_factory=ScheduledAgentSettings
    )
    aggregator: AgentSettings = Field(default_factory=AgentSettings)
    chunks: MoaChunks = Field(default_factory=MoaChunks)

    @model_validator(mode="after")
    def _consistent(self) -> MoaTopology:
        self._options_fit(self.mode)
        if isinstance(self.proposer, list) and len(self.proposer) != self.proposers:
            raise ValueError(
                f"proposer lists {len(self.proposer)} agents but proposers is {self.proposers}"
            )
        for where, proposers in self.layer_proposers():
            if self.redundancy >= len(proposers):
                raise ValueError(
                    f"redundancy ({self.redundancy}) must be less than {where}proposers "
                    f"({len(proposers)})"
                )
        return self

    def layer_proposers(self) -> list[tuple[str, list[ScheduledAgentSettings]]]:
        """Each layer's proposers' own settings, with where they come from (for messages)."""
        if isinstance(self.layers, int):
            return [("", self._own_list(self.proposer, self.proposers))] * self.layers
        layers = []
        for index, layer in enumerate(self.layers):
            where = f"layers[{index}]."
            if isinstance(layer.proposer, list):
                if layer.proposers is not None and layer.proposers != len(layer.proposer):
                    raise ValueError(
                        f"{where}proposer lists {len(layer.proposer)} agents but "
                        f"{where}proposers is {layer.proposers}"
                    )
                layers.append((where, list(layer.proposer)))
                continue
            count = layer.proposers or self.proposers
            own = layer.proposer or self.proposer
            if isinstance(own, list) and len(own) != count:
                raise ValueError(
                    f"{where}proposers is {count} but topology.proposer lists {len(own)}: give "
                    f"the layer its own proposer list"
                )
            layers.append((where, self._own_list(own, count)))
        return layers

    def layer_schedules(self) -> list[list[int]]:
        """Each layer's default unit schedule (a proposer's own ``chunks`` still wins)."""
        if isinstance(self.layers, int):
            return [self.chunks.proposer] + [self.chunks.aggregator] * (self.layers - 1)
        return [layer.chunks or self.chunks.proposer for layer in self.layers]

    @staticmethod
    def _own_list(
        own: ScheduledAgentSettings | list[ScheduledAgentSettings], count: int
    ) -> list[ScheduledAgentSettings]:
        return list(own) if isinstance(own, list) else [own] * count


class DebateTopology(RoundOptions):
    """N agents x R rounds; each round's agents read every answer of the round before.

    The user sees the judge's answer, or without a judge agent 1's in the last round.
    """

    kind: Literal["debate"]
    mode: Mode = "staircase"
    agents: int = Field(3, ge=1)
    rounds: int = Field(2, ge=1)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    debater: ScheduledAgentSettings | list[ScheduledAgentSettings] = Field(
        default_factory=ScheduledAgentSettings,
        description="one setting for every debater, or one per debater (the same in each round)",
    )
    judge: ScheduledAgentSettings | None = Field(
        None, description="an agent reading the last round's answers and answering the user"
    )
    chunks: Schedule = Field(default_factory=lambda: [8, 128, 256])

    @model_validator(mode="after")
    def _consistent(self) -> DebateTopology:
        self._options_fit(self.mode)
        if self.redundancy >= self.agents:
            raise ValueError(
                f"redundancy ({self.redundancy}) must be less than agents ({self.agents})"
            )
        if isinstance(self.debater, list) and len(self.debater) != self.agents:
            raise ValueError(
                f"debater lists {len(self.debater)} agents but agents is {self.agents}"
            )
        return self

    def debaters(self) -> list[ScheduledAgentSettings]:
        """Debater i's own settings (every round)."""
        if isinstance(self.debater, list):
            return list(self.debater)
        return [self.debater] * self.agents


class StepUnit(Strict):
    """Upstream output is forwarded in reasoning steps of ``tokens`` tokens each."""

    kind: Literal["step"] = "step"
    tokens: int = Field(64, ge=1)


class GraphAgent(Strict):
    """One node of a graph; it answers in ``steps`` steps of ``unit.tokens`` tokens, unless it
    sets its own step size, answer length or chunk schedule."""

    next: list[str] = Field(default_factory=list)
    steps: int = Field(8, ge=1)
    step_tokens: int | None = Field(None, ge=1, description="this agent's step size")
    max_tokens: int | None = Field(None, ge=1, description="instead of steps x step size")
    chunks: Schedule | None = Field(
        None, description="units of growing size (a staircase) instead of equal steps"
    )
    server: str | None = None
    system_prompt: str | None = None
    temperature: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_length(self) -> GraphAgent:
        if self.max_tokens is not None and "steps" in self.model_fields_set:
            raise ValueError("give steps or max_tokens, not both")
        if self.chunks is not None and self.step_tokens is not None:
            raise ValueError("give step_tokens or chunks, not both")
        return self

    def answer_tokens(self, unit_tokens: int) -> int:
        return self.max_tokens or self.steps * (self.step_tokens or unit_tokens)

    def schedule(self, unit_tokens: int) -> list[int]:
        return self.chunks or [self.step_tokens or unit_tokens]


class GraphTopology(RoundOptions):
    """Any DAG of agents; ``stream`` forwards each finished unit, ``serial`` whole answers,
    ``multistream`` decodes every agent as a stream of one sequence."""

    kind: Literal["graph"]
    mode: Literal["stream", "serial", "multistream"] = "stream"
    unit: StepUnit = Field(default_factory=StepUnit)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    agents: dict[str, GraphAgent] = Field(min_length=1)
    output: str | list[str] | None = Field(
        None, description="the agent(s) whose answer the user sees (default: the one sink)"
    )

    @model_validator(mode="after")
    def _is_a_dag(self) -> GraphTopology:
        self._options_fit(self.mode)
        for name, spec in self.agents.items():
            for nxt in spec.next:
                if nxt not in self.agents:
                    raise ValueError(f"agents.{name}.next names unknown agent {nxt!r}")
        cycle = _find_cycle({n: a.next for n, a in self.agents.items()})
        if cycle:
            raise ValueError(f"agents form a cycle: {' -> '.join(cycle)}")
        sinks = [n for n, a in self.agents.items() if not a.next]
        if self.output is None and len(sinks) != 1:
            raise ValueError(f"graph has sinks {sinks}; name the user-facing one(s) in output")
        outputs = self.outputs()
        for name in outputs:
            if name not in self.agents:
                raise ValueError(f"output names unknown agent {name!r}")
        if len(set(outputs)) != len(outputs):
            raise ValueError(f"output names an agent twice: {outputs}")
        if self.mode == "multistream" and len(outputs) > 1:
            raise ValueError("mode: multistream decodes one answer; name one output")
        return self

    def outputs(self) -> list[str]:
        """The user-facing agents, in the order given."""
        if self.output is None:
            return [n for n, a in self.agents.items() if not a.next][:1]
        return [self.output] if isinstance(self.output, str) else list(self.output)


def continues_answers(server: ServerBase) -> bool:
    """Whether a prompt ending in the agent's own text is continued (vLLM's
    ``continue_final_message``) or answered anew after it as a closed message (a strict
    OpenAI-compatible endpoint). The simulator prices prompts and the live client builds
    requests by this one rule."""
    return isinstance(server, VllmServer)


def _multistream_settings_fit(mode: str, settings: MultistreamSettings | None) -> None:
    if settings is not None and mode != "multistream":
        raise ValueError(f"multistream settings apply to mode: multistream, not {mode}")


def _find_cycle(edges: dict[str, list[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in edges:
        if node not in state and (found := visit(node)):
            return found
    return []


Topology = Annotated[MoaTopology | DebateTopology | GraphTopology, Field(discriminator="kind")]


# --- workload ------------------------------------------------------------------------------


class PoissonArrival(Strict):
    kind: Literal["poisson"]
    rate_per_s: float = Field(gt=0)


class ClosedArrival(Strict):
    """``concurrency`` users, each sending its next request when the last one ends."""

    kind: Literal["closed"]
    concurrency: int = Field(1, ge=1)
    think_time_s: float = Field(0.0, ge=0)


class FixedRateArrival(Strict):
    kind: Literal["constant"]
    rate_per_s: float = Field(gt=0)


Arrival = Annotated[PoissonArrival | ClosedArrival | FixedRateArrival, Field(discriminator="kind")]


BUILTIN_PROMPTS = "builtin"  # workload.prompts: the prompt set shipped in sim/prompts/


class Workload(Strict):
    requests: int = Field(20, ge=1)
    arrival: Arrival = Field(default_factory=lambda: ClosedArrival(kind="closed"))
    prompt_tokens: TokenDist = Field(default_factory=lambda: FixedTokens(value=64))
    output_tokens: Literal["max", "natural"] | TokenDist = Field(
        "max",
        description="max: exactly each agent's max_tokens; a distribution: exactly a drawn "
        "length; natural: the model stops when it wants, at most max_tokens (the simulator "
        "assumes max_tokens)",
    )
    prompts: str | None = Field(
        None,
        description="real prompts instead of synthetic ones: builtin (the shipped set) or a "
        "JSONL file of {prompt}; request i asks prompt i, cycling",
    )
    file: str | None = Field(
        None,
        description="JSONL of requests (prompt_tokens, optional prompt, output_tokens, "
        "arrival_s); overrides the distributions and, where given, the arrival times",
    )

    @model_validator(mode="after")
    def _one_source_of_prompts(self) -> Workload:
        if self.prompts is not None and self.file is not None:
            raise ValueError("give prompts or file, not both (a file's rows carry prompts)")
        return self


class LiveSettings(Strict):
    """How ``stairwise run`` treats slow or failing calls (the simulator ignores this)."""

    timeout_s: float = Field(300.0, gt=0, description="a whole call")
    connect_timeout_s: float = Field(10.0, gt=0)
    first_token_timeout_s: float = Field(120.0, gt=0, description="queueing + prefill")
    stall_timeout_s: float = Field(30.0, gt=0, description="between tokens; then it is dropped")
    retries: int = Field(2, ge=0, description="for connection errors before the first token")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay, doubling")
    cold_cache: bool = Field(
        False,
        description="empty vLLM prefix caches first (POST /reset_prefix_cache), as the "
        "simulator starts empty",
    )


class Display(Strict):
    """How the client shows the answer: a display buffer that trades a little time for an
    even stream. Applied to the answer's arrival times by ``sim/metrics.py``, for simulated
    and live traces alike; the trace keeps the arrival times."""

    pace_tokens_per_s: float | None = Field(
        None,
        gt=0,
        description="show the answer no faster than this; tokens arriving faster wait in the "
        "buffer and cover later pauses (None: show each token as it arrives)",
    )
    delay_s: float = Field(0.0, ge=0, description="hold the first token this long")


# --- the scenario ------------------------------------------------------------------------------


class Scenario(Strict):
    name: str = "scenario"
    seed: int = 0
    servers: dict[str, Server] = Field(min_length=1)
    network: Network = Field(default_factory=Network)
    topology: Topology
    workload: Workload = Field(default_factory=Workload)
    prices: Prices = Field(default_factory=Prices)
    live: LiveSettings = Field(default_factory=LiveSettings)
    display: Display = Field(default_factory=Display)

    @model_validator(mode="after")
    def _servers_exist(self) -> Scenario:
        for where, server in _agent_servers(self.topology):
            if server is not None and server not in self.servers:
                raise ValueError(
                    f"{where}.server names unknown server {server!r} "
                    f"(known: {', '.join(self.servers)})"
                )
        if len(self.servers) > 1 and _default_server(self.topology) is None:
            raise ValueError(
                "topology.agent.server is required when the scenario has several servers"
            )
        if self.topology.mode == "multistream":
            self._one_vllm_server_for_all_streams()
        self._priorities_need_priority_policy()
        return self

    def _priorities_need_priority_policy(self) -> None:
        """vLLM refuses a non-zero priority unless it schedules by priority: say so up front."""
        default = _default_server(self.topology) or next(iter(self.servers))
        inherited = self.topology.agent.server or default
        for where, priority, server in _agent_priorities(self.topology):
            name = server or inherited
            if not priority or name not in self.servers:
                continue
            policy = getattr(self.servers[name], "scheduling_policy", None)
            if policy != "priority":
                raise ValueError(
                    f"{where}.priority needs servers.{name}.scheduling_policy: priority "
                    f"(a vllm server)"
                )

    def _one_vllm_server_for_all_streams(self) -> None:
        """A multi-stream model decodes all of a request's agents in one sequence: one server."""
        default = _default_server(self.topology) or next(iter(self.servers))
        named = {server or default for _, server in _agent_servers(self.topology)}
        if len(named) > 1:
            raise ValueError(
                f"mode: multistream runs all agents as streams of one sequence on one server; "
                f"the agents name {', '.join(sorted(named))}"
            )
        (server,) = named
        if self.servers[server].kind != "vllm":
            raise ValueError(
                f"mode: multistream needs a vllm server (an engine model); {server} is "
                f"{self.servers[server].kind}"
            )


def _default_server(topology: Any) -> str | None:
    server: str | None = topology.agent.server
    return server


def _agent_settings(topology: Any) -> list[tuple[str, AgentSettings]]:
    """(where, settings) of every per-agent setting of the topology, ``topology.agent`` first."""
    found: list[tuple[str, AgentSettings]] = [("topology.agent", topology.agent)]
    if isinstance(topology, MoaTopology):
        proposers = (
            topology.proposer if isinstance(topology.proposer, list) else [topology.proposer]
        )
        found += [(f"topology.proposer[{i}]", p) for i, p in enumerate(proposers)]
        if isinstance(topology.layers, list):
            for index, layer in enumerate(topology.layers):
                own = layer.proposer
                listed = own if isinstance(own, list) else [own] if own is not None else []
                found += [
                    (f"topology.layers[{index}].proposer[{i}]", p) for i, p in enumerate(listed)
                ]
        found.append(("topology.aggregator", topology.aggregator))
    if isinstance(topology, DebateTopology):
        debaters = topology.debater if isinstance(topology.debater, list) else [topology.debater]
        found += [(f"topology.debater[{i}]", d) for i, d in enumerate(debaters)]
        if topology.judge is not None:
            found.append(("topology.judge", topology.judge))
    return found


def _agent_priorities(topology: Any) -> list[tuple[str, int | None, str | None]]:
    """(where, priority, server) of every agent setting that states a priority."""
    agent_priority = topology.agent.priority
    return [
        (where, s.priority if s.priority is not None else agent_priority, s.server)
        for where, s in _agent_settings(topology)
    ]


def _agent_servers(topology: Any) -> list[tuple[str, str | None]]:
    found = [(where, s.server) for where, s in _agent_settings(topology)]
    if isinstance(topology, GraphTopology):
        found += [(f"topology.agents.{n}", a.server) for n, a in topology.agents.items()]
    return found


# --- loading -----------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.0=value`` → (["a", "b", "0"], parsed YAML value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or not re.fullmatch(r"[\w.-]+", key):
        raise ConfigError(f"--set {text!r}: expected dotted.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({_first_line(exc)})") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` strings to a raw scenario dict (before validation)."""
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            node = _child(node, part, path[: i + 1], create=True)
        last = path[-1]
        if isinstance(node, list):
            index = _index(node, last, path)
            node[index] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[:-1])} is not a mapping")
    return data


def _child(node: Any, part: str, path: list[str], create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, path)]
    if not isinstance(node, dict):
        raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[:-1])} is not a mapping")
    if part not in node or node[part] is None:
        node[part] = {}
    return node[part]


def _index(node: list[Any], part: str, path: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {'.'.join(path)}: no item {part} in a list of {len(node)}")
    return int(part)


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


SCENARIO_TAGS = DISTRIBUTION_TAGS | {
    "moa", "debate", "graph", "vllm", "api", "poisson", "closed", "constant",
    "layer-count", "layer-list", "str", "ScheduledAgentSettings",
}  # fmt: skip


def scenario_from_dict(data: Any, source: str = "scenario") -> Scenario:
    return validated(Scenario, data, source, "scenario", SCENARIO_TAGS)


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or _first_line(exc)
        raise ConfigError(f"{where}: malformed YAML ({problem})") from None


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    data = read_yaml(path)
    if isinstance(data, dict) and overrides:
        data = apply_overrides(data, overrides)
    scenario = scenario_from_dict(data, str(path))
    resolve_workload_files(scenario.workload, Path(path).parent)
    return scenario


def workload_files(workload: Workload) -> dict[str, str]:
    """The workload's own files by field (``file``, ``prompts``): not the shipped prompts."""
    named = {"file": workload.file, "prompts": workload.prompts}
    return {field: path for field, path in named.items() if path not in (None, BUILTIN_PROMPTS)}


def workload_digests(
    workload: Workload, digest: Callable[[str], str] = file_digest
) -> dict[str, str]:
    """The workload's own files by field, each named by the hash of its bytes (``digest``: a
    sweep passes one that reads each file once)."""
    return {field: digest(path) for field, path in workload_files(workload).items()}


def resolve_workload_files(workload: Workload, base: Path) -> None:
    """Make the workload's relative file paths absolute, relative to ``base`` (the folder of
    the file that names them), so the scenario runs from any working directory."""
    for field, path in workload_files(workload).items():
        if not Path(path).is_absolute():
            setattr(workload, field, str((base / path).resolve()))
