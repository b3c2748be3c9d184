"""Judge ensemble config (the judges YAML): endpoints, voting, prompt templates, retries, breaker.

Plain pydantic models, validated before any request is sent. Loading YAML with file/line error
messages is the driver's job (cluster/judge_cmd.py); these models are what rewards/ and actors/ take.
"""
from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from rewards.judge.principles import Principle, as_items, check_distinct, load_constitution, uses_placeholder

DEFAULT_PAIRWISE_TEMPLATE = """\
You are an impartial judge. Compare two AI assistant responses to the user's prompt below.
Weigh, in this order: helpfulness (does it do what was asked), accuracy (is it correct, with \
nothing invented) and safety (does it avoid harmful or dangerous content). Do not let the \
order of the responses or their length sway you.

[Prompt]
{prompt}

[Response A]
{response_a}

[Response B]
{response_b}

First explain your reasoning in a few sentences. Then end with one final line in exactly \
this form and nothing after it: "Verdict: [[A]]" if Response A is better, "Verdict: [[B]]" \
if Response B is better, or "Verdict: [[tie]]" if they are equally good.
"""

DEFAULT_POINTWISE_TEMPLATE = """\
You are an impartial judge. Rate the AI assistant response to the user's prompt below.
Weigh, in this order: helpfulness (does it do what was asked), accuracy (is it correct, with \
nothing invented) and safety (does it avoid harmful or dangerous content).

[Prompt]
{prompt}

[Response]
{response}

First explain your reasoning in a few sentences. Then end with one final line in exactly \
this form and nothing after it: "Score: [[N]]", where N is a whole number from 1 (useless or \
harmful) to 10 (excellent).
"""

PAIRWISE_FIELDS = ("prompt", "response_a", "response_b")
POINTWISE_FIELDS = ("prompt", "response")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ServeSpec(Section):
    """A judge model the run serves itself with vLLM's OpenAI-compatible API (instead of base_url)."""

    model_dir: Path
    """Hugging Face model directory of the judge (read on the node the server runs on)."""
    max_model_len: int = Field(2048, ge=8)
    """Context length of the served model."""
    dtype: str = "auto"
    """vLLM --dtype (float32 on CPU for small models)."""
    chat_template: Path | None = None
    """Jinja chat template file, for models without one."""
    enforce_eager: bool = True
    """vLLM --enforce-eager (no CUDA graphs; the CPU backend needs it)."""
    args: list[str] = []
    """Further vLLM server arguments, e.g. ["--gpu-memory-utilization", "0.3"]."""
    port: int | None = Field(None, ge=1, le=65535)
    """Port to listen on; default: a free one."""
    num_cpus: float = Field(1.0, gt=0.0)
    """Ray CPUs reserved for the server's actor."""
    num_gpus: float = Field(0.0, ge=0.0)
    """Ray GPUs reserved for the server's actor."""
    startup_timeout_s: float = Field(600.0, gt=0.0)
    """How long the run waits for the server's health check before it fails."""


class JudgeSpec(Section):
    # A key pasted into the wrong field must not be echoed back in an error.
    model_config = ConfigDict(**Section.model_config, hide_input_in_errors=True)

    name: str = ""
    """Label in votes and metrics; defaults to the model name. Must be unique in the ensemble."""
    base_url: str | None = None
    """OpenAI-compatible API root, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1 (vLLM); or set `serve`."""
    serve: ServeSpec | None = None
    """Serve this judge on the cluster for the run (health-checked before training, stopped after); `model` is its served name."""
    model: str
    """Model name sent with each request."""
    weight: float = Field(1.0, gt=0.0, le=1000.0)
    """Vote weight under `weighted` and `mean_prob` voting (ignored by plain `majority`)."""
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """Sampling temperature of the judge (0 = greedy)."""
    max_tokens: int = Field(512, ge=1, le=65536)
    """Longest judge reply in tokens; a reply cut at this limit is an abstention."""
    max_concurrency: int = Field(8, ge=1, le=4096)
    """Requests in flight to this judge at once (shared out among the actors of a pool)."""
    timeout_s: float = Field(60.0, gt=0.0, le=3600.0)
    """Limit on one attempt; a slower reply counts as a failed attempt (retried, then an abstention)."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key; none for local servers. Never logged."""
    price_per_1k_tokens: float = Field(0.0, ge=0.0)
    """Price of 1,000 prompt tokens, for the cost estimate (also of completion tokens unless set below)."""
    price_per_1k_output_tokens: float | None = Field(None, ge=0.0)
    """Price of 1,000 completion tokens; defaults to price_per_1k_tokens."""
    logprobs: bool = True
    """Ask for log-probs, so P(A) comes from the verdict token; endpoints that return none fall back to the verdict."""
    top_logprobs: int = Field(5, ge=1, le=20)
    """Alternatives per token returned with the log-probs (A and B must be among them to count)."""
    extra_body: dict[str, Any] = {}
    """Extra JSON fields sent with each request, e.g. vLLM's structured_outputs or chat_template_kwargs."""
    per_principle: bool | None = None
    """Override the ensemble's per_principle for this judge (None: the ensemble's setting)."""

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name") and isinstance(data.get("model"), str):
            return {**data, "name": data["model"]}
        return data

    @model_validator(mode="after")
    def _one_endpoint(self) -> "JudgeSpec":
        if (self.base_url is None) == (self.serve is None):
            raise ValueError("give a judge either base_url (a running endpoint) or serve (a model the run serves), "
                             "not both and not neither")
        return self

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"base_url {v!r} must start with http:// or https://, e.g. http://127.0.0.1:8000/v1")
        return v.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.fullmatch(v):
            # The value is not echoed: it may be a key pasted here by mistake.
            raise ValueError("api_key_env must be the name of an environment variable (letters, digits, _), "
                             "e.g. OPENAI_API_KEY; never put the key itself in the config")
        return v

    @property
    def output_price(self) -> float:
        return self.price_per_1k_tokens if self.price_per_1k_output_tokens is None else self.price_per_1k_output_tokens

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Estimated cost in the price's currency."""
        return prompt_tokens / 1000 * self.price_per_1k_tokens + completion_tokens / 1000 * self.output_price


class RetryConfig(Section):
    max_retries: int = Field(3, ge=0, le=10)
    """Retries after the first attempt on 429, 5xx, timeouts and connection errors (others are not retried)."""
    backoff_base_s: float = Field(0.5, gt=0.0, le=60.0)
    """First backoff; it doubles per retry (with jitter in [50 %, 100 %]) up to backoff_max_s."""
    backoff_max_s: float = Field(8.0, gt=0.0, le=600.0)
    """Longest backoff between two attempts."""
    max_retry_after_s: float = Field(60.0, ge=0.0, le=3600.0)
    """Longest Retry-After honoured; a 429 asking for more gives up on that call instead of waiting."""


class BreakerConfig(Section):
    failure_threshold: int = Field(5, ge=1, le=10000)
    """Consecutive failed attempts (5xx, timeout, connection, malformed reply) that open the breaker; a write to a pooled connection the server had already closed is retried and not counted."""
    reset_after_s: float = Field(30.0, gt=0.0, le=3600.0)
    """While open, calls fail at once; after this long one probe request is let through to test the endpoint."""


class PoolConfig(Section):
    size: int = Field(1, ge=1, le=1024)
    """JudgePool actors (cluster.judge_pool); JudgePool.resize changes it between steps."""
    num_cpus: float = Field(0.1, gt=0.0, le=64.0)
    """Ray CPUs reserved by each judge actor (they mostly wait on the network)."""


class EnsembleConfig(Section):
    judges: list[JudgeSpec] = Field(min_length=1)
    """The judges; every one sees each pair in both orders."""
    voting: Literal["majority", "weighted", "mean_prob"] = "majority"
    """How votes combine: majority (one judge, one vote), weighted (by weight), mean_prob (weighted mean P(A))."""
    tie_band: float = Field(0.0, ge=0.0, lt=0.5)
    """Under mean_prob, |P(A) - 0.5| <= tie_band is a tie."""
    pairwise_template: str = DEFAULT_PAIRWISE_TEMPLATE
    """Pairwise prompt with {prompt}, {response_a}, {response_b} (optionally {principles}); asks for a last line "Verdict: [[A|B|tie]]"."""
    pointwise_template: str = DEFAULT_POINTWISE_TEMPLATE
    """Pointwise prompt with {prompt}, {response} (optionally {principles}); must ask for a final "Score: [[N]]" line (N in 1..10)."""
    system_prompt: str | None = None
    """Optional system message sent before the template."""
    principles: list[Principle] = []
    """Constitution every judge prompt includes: a list (plain strings or {name, text, weight}) or the path of a constitution YAML (relative to the judges YAML)."""
    per_principle: bool = False
    """Each judge writes one "name: [[A|B|tie]]" (pointwise "name: [[N]]") line per principle before its final line; its vote is the weighted mean over principles."""
    retry: RetryConfig = RetryConfig()
    circuit_breaker: BreakerConfig = BreakerConfig()
    pool: PoolConfig = PoolConfig()

    @field_validator("pairwise_template")
    @classmethod
    def _pairwise(cls, v: str) -> str:
        return check_template(v, PAIRWISE_FIELDS)

    @field_validator("pointwise_template")
    @classmethod
    def _pointwise(cls, v: str) -> str:
        return check_template(v, POINTWISE_FIELDS)

    @field_validator("principles", mode="before")
    @classmethod
    def _principles(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, (str, Path)):  # a constitution file, relative to the judges YAML when known
            path, base = Path(v), (info.context or {}).get("base_dir")
            return load_constitution(path if path.is_absolute() or base is None else Path(base) / path)
        return as_items(v)

    @field_validator("principles")
    @classmethod
    def _distinct(cls, v: list[Principle]) -> list[Principle]:
        return check_distinct(v)

    @model_validator(mode="after")
    def _principles_used(self) -> "EnsembleConfig":
        if not self.principles:
            which = [n for n, t in (("pairwise_template", self.pairwise_template),
                                    ("pointwise_template", self.pointwise_template)) if uses_placeholder(t)]
            if which:
                raise ValueError(f"{' and '.join(which)} use(s) {{principles}} but no `principles` are declared")
            if any(self.per_principle_for(j) for j in self.judges):
                raise ValueError("per_principle needs `principles` (a list, or the path of a constitution YAML)")
        return self

    def per_principle_for(self, judge: JudgeSpec) -> bool:
        """Whether `judge` answers per principle (its own per_principle, else the ensemble's)."""
        return self.per_principle if judge.per_principle is None else judge.per_principle

    @field_validator("judges")
    @classmethod
    def _unique(cls, v: list[JudgeSpec]) -> list[JudgeSpec]:
        names = [j.name for j in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"judge names must be unique, {', '.join(map(repr, dup))} repeats; "
                             "set a distinct `name` on each judge that shares a model")
        return v


def check_template(template: str, fields: tuple[str, ...], optional: tuple[str, ...] = ("principles",)) -> str:
    """The template's {placeholders} must be exactly `fields`, plus any of `optional`; literal braces are written {{ }}."""
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ValueError(f"template is not a valid format string ({e}); write literal braces as {{{{ }}}}") from None
    want = ", ".join("{" + f + "}" for f in fields)
    if used - set(fields) - set(optional):
        bad = ", ".join("{" + f + "}" for f in sorted(used - set(fields) - set(optional)))
        raise ValueError(f"template uses unknown placeholder(s) {bad}; allowed: {want}"
                         f"{''.join(', optionally {' + o + '}' for o in optional)} (literal braces: {{{{ }}}})")
    if set(fields) - used:
        miss = ", ".join("{" + f + "}" for f in fields if f not in used)
        raise ValueError(f"template must contain {want}; missing {miss}")
    return template
