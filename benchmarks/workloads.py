"""The workloads: what each step of a run asks, for a full run, a ``--quick`` one and ``--url``.

- W1 firehose: 256 tokens, no delay, 1/16/64/256 concurrent streams; tokens/s, CPU-µs/token.
- W1y: W1 at 64 streams with an agent that yields to the loop before each token, so a server
  cannot gather a whole answer into one write (real agents read their tokens off a socket).
- W2 paced: 64 tokens 20 ms apart, 256 concurrent streams, each its own session, their starts
  spread over one stream's length so requests arrive at a steady rate; TTFT and gaps.
- W2burst: the same, but all 256 requests sent at the same instant.
- W3 overhead: non-streamed requests/s.
- idle: RSS per open, silent stream.
- W4 relay (relays only, in front of the cheap upstream): W4n8 and W4n512, streams of 8 and 512
  tokens paced :data:`FIT_DELAY` apart, 16 at a time, stateless, several rounds (the fit of CPU
  per request against tokens gives the fixed cost and the cost per token); then W4, as W2 (256
  streams of 64 tokens 20 ms apart, each its own session, arriving at a steady rate).
- Variants (our servers only): W1y's tokens sent as reasoning deltas (``W1y.reasoning``) or as
  one client tool call's argument fragments (``W1y.tool``), and W1y and W4's fit through
  ``/v1/responses`` and ``/v1/messages`` (``W1y.responses``, ``W4n8.messages``, ...). Each runs
  in one batch with its chat-text step: per round and server, back to back (in a rotated order),
  so the ratios to chat text are taken round by round, seconds apart.
Warm-up steps run first and are not reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

SILENT_DELAY = 3600.0  # a paced stream this slow says nothing while it is measured


@dataclass(frozen=True, slots=True)
class Step:
    """One measured step: ``concurrency`` clients, each sending requests on its own connection.

    A client repeats its request until it has sent ``max_requests`` or ``duration`` seconds have
    passed (``None``: no time limit); every client sends at least one.
    """

    workload: str  # "W1", "W2", "W3", "idle" or "warmup"
    kind: str  # "stream", "complete" or "idle"
    concurrency: int
    tokens: int
    delay: float = 0.0
    duration: float | None = None
    max_requests: int = 1
    timeout: float = 60.0
    rounds: int = 1  # run this many times (interleaved with the other servers); median reported
    yields: bool = False  # the agent yields to the loop before each token (W1y)
    stagger: float = 0.0  # client i sends its first request i * stagger seconds after the start
    relay: bool = False  # a W4 step: run on the relays (and direct), not on the other servers
    sessions: bool = True  # each client names its own session (else: stateless turns)
    #: What the clients ask for (:data:`VARIANTS`), client ``i`` the ``i % len``-th: ``"chat"``
    #: (text), ``"chat+reasoning"``, ``"chat+tool"``, ``"responses"``, ``"messages"``.
    variants: tuple[str, ...] = ("chat",)
    group: str = ""  # consecutive steps of one group run in one batch (see the module's doc)

    @property
    def label(self) -> str:
        return f"{self.workload} c={self.concurrency}"

    @property
    def base(self) -> str:
        """The workload this step is a variant of (``W1y`` for ``W1y.responses``)."""
        return self.workload.split(".")[0]

    @property
    def chat_text(self) -> bool:
        """Whether every client asks for chat text (what every server can answer)."""
        return self.variants == ("chat",)

    def variant(self, client: int) -> tuple[str, str]:
        """Client ``client``'s dialect and what the agent sends the tokens as."""
        dialect, _, emits = self.variants[client % len(self.variants)].partition("+")
        return dialect, emits or "text"

    @property
    def reported(self) -> bool:
        return self.workload != "warmup"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        return cls(**{**data, "variants": tuple(data.get("variants", ("chat",)))})


#: Every variant a step may ask for, by its name's suffix (``W1y.reasoning``).
VARIANTS = {
    "reasoning": "chat+reasoning",
    "tool": "chat+tool",
    "responses": "responses",
    "messages": "messages",
}
#: W1y's per-event comparison (issue 18) and per-dialect one (issues 19, 20); W4's per dialect.
W1Y_VARIANTS = ("reasoning", "tool", "responses", "messages")
RELAY_VARIANTS = ("responses", "messages")


def variants_of(step: Step, names: tuple[str, ...]) -> list[Step]:
    """``step`` (chat text) and its variants, one batch (``group``): their ratios to it are taken
    round by round."""
    group = replace(step, group=step.workload)
    return [
        group,
        *(replace(group, workload=f"{step.workload}.{name}", variants=(VARIANTS[name],)) for name in names),
    ]


#: W4's fit: stream lengths, streams at a time, and the upstream's pace (8,000 tokens/s offered:
#: each token reaches a relay that keeps up in its own read, as from a real LLM server).
FIT_TOKENS = (8, 512)
FIT_CONCURRENCY = 16
FIT_DELAY = 0.002
FIT_ROUNDS = 3


def _warmup(seconds: float) -> list[Step]:
    return [
        Step("warmup", "stream", 8, 64, duration=seconds, max_requests=100_000),
        Step("warmup", "complete", 8, 16, duration=seconds / 2, max_requests=100_000),
    ]


def relay_plan(seconds: float = 2.0, rounds: int = FIT_ROUNDS) -> list[Step]:
    """W4: a warm-up, the two fit steps, then 256 paced streams (as W2)."""
    fit = [
        variant
        for tokens in FIT_TOKENS
        for variant in variants_of(
            Step(
                f"W4n{tokens}",
                "stream",
                FIT_CONCURRENCY,
                tokens,
                delay=FIT_DELAY,
                duration=seconds,
                max_requests=100_000,
                rounds=rounds,
                stagger=FIT_DELAY / FIT_CONCURRENCY,
                relay=True,
                sessions=False,
            ),
            RELAY_VARIANTS,
        )
    ]
    return [
        Step("warmup", "stream", 32, 64, delay=FIT_DELAY, duration=1.0, max_requests=100_000, relay=True),
        *fit,
        # A slow peer (LiteLLM) takes tens of seconds per W4 stream here: a longer timeout.
        Step(
            "W4",
            "stream",
            256,
            64,
            delay=0.02,
            max_requests=3,
            timeout=120,
            stagger=63 * 0.02 / 256,
            relay=True,
        ),
    ]


def full_plan(idle_streams: int = 1000, seconds: float = 2.0, rounds: int = 5) -> list[Step]:
    """The full run (idle first, on a barely-warm server, so freed memory is not reused)."""
    firehose = [
        Step("W1", "stream", c, 256, duration=seconds, max_requests=100_000, rounds=rounds)
        for c in (1, 16, 64, 256)
    ]
    return [
        *_warmup(1.0),
        Step("idle", "idle", idle_streams, 2, delay=SILENT_DELAY),
        *_warmup(1.0),
        *firehose,
        *variants_of(
            Step(
                "W1y", "stream", 64, 256, duration=seconds, max_requests=100_000, rounds=rounds, yields=True
            ),
            W1Y_VARIANTS,
        ),
        Step("W2", "stream", 256, 64, delay=0.02, max_requests=3, stagger=63 * 0.02 / 256),
        Step("W2burst", "stream", 256, 64, delay=0.02, max_requests=2),
        Step("W3", "complete", 32, 16, duration=seconds, max_requests=100_000, rounds=rounds),
        *relay_plan(seconds, max(rounds, FIT_ROUNDS)),
    ]


def quick_plan() -> list[Step]:
    """A tiny run that proves every path works; its timings mean nothing."""
    return [
        Step("W1", "stream", 1, 8, max_requests=3, timeout=10),
        Step("W1", "stream", 2, 8, max_requests=3, timeout=10),
        Step("W1y", "stream", 2, 8, max_requests=3, timeout=10, yields=True),
        # Our servers: every variant at once, one client each (reasoning, tool call, Responses, Messages).
        Step(
            "W1y.variants",
            "stream",
            4,
            8,
            max_requests=2,
            timeout=10,
            yields=True,
            variants=tuple(VARIANTS[name] for name in W1Y_VARIANTS),
        ),
        Step("W2", "stream", 2, 4, delay=0.005, max_requests=2, timeout=10, stagger=0.01),
        Step("W2burst", "stream", 2, 4, delay=0.005, max_requests=2, timeout=10),
        Step("W3", "complete", 2, 8, max_requests=3, timeout=10),
        Step("idle", "idle", 4, 2, delay=SILENT_DELAY, timeout=10),
        *(
            Step(
                f"W4n{n}", "stream", 2, n, delay=0.001, max_requests=2, timeout=10, relay=True, sessions=False
            )
            for n in (8, 32)
        ),
        Step("W4", "stream", 4, 8, delay=0.005, max_requests=2, timeout=10, stagger=0.005, relay=True),
        Step(
            "W4.variants",
            "stream",
            2,
            8,
            delay=0.001,
            max_requests=2,
            timeout=10,
            relay=True,
            sessions=False,
            variants=tuple(VARIANTS[name] for name in RELAY_VARIANTS),
        ),
    ]


def select(steps: list[Step], names: list[str]) -> list[Step]:
    """The steps of the named workloads (``W4`` takes its fit steps too; a workload its
    variants), with the warm-ups their servers need."""
    wanted = [s for s in steps if s.base in names or ("W4" in names and s.workload.startswith("W4n"))]
    kinds = {s.relay for s in wanted}
    return [s for s in steps if s in wanted or (not s.reported and s.relay in kinds)]


def url_plan(concurrencies: list[int], requests: int) -> list[Step]:
    """Against an outside endpoint: streams only; the model decides the tokens."""
    return [Step("stream", "stream", c, 0, max_requests=requests, timeout=300) for c in concurrencies]
