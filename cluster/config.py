"""Run config schema: pydantic models whose field docstrings are the README's reference (the algorithm
section is in cluster/config_algorithm.py). Loading YAML with file:line errors and rendering the
reference live in cluster/config_loader.py."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cluster.config_algorithm import AlgorithmConfig
from cluster.config_base import Section


class PolicyConfig(Section):
    model_dir: Path
    """Hugging Face model directory (config.json, safetensors, tokenizer) loaded by vLLM and transformers."""

    @field_validator("model_dir")
    @classmethod
    def _model_dir_exists(cls, v: Path) -> Path:
        if not v.is_dir():
            raise ValueError(f"model directory {str(v)!r} does not exist; build it (make demo does) or fix the path")
        if not (v / "config.json").is_file():
            raise ValueError(f"{str(v)!r} has no config.json; point it at a Hugging Face model directory")
        return v


class DataConfig(Section):
    train_path: Path
    """JSONL of prompt rows: {"prompt": ..., "kind": ..., plus what the sources serving that kind read (answer, tests, answers or key, reference)}."""
    eval_path: Path
    """JSONL of held-out rows, scored greedy by the eval sources; never trained on."""
    shuffle_seed: int = 0
    """Seed for the order in which training prompts are drawn."""

    @field_validator("train_path", "eval_path")
    @classmethod
    def _exists(cls, v: Path) -> Path:
        if not v.is_file():
            raise ValueError(f"data file {str(v)!r} does not exist")
        return v


class RolloutConfig(Section):
    num_generators: int = Field(2, ge=1, le=256)
    """vLLM RolloutGenerator actors; prompts of a step are split among them."""
    prompts_per_step: int = Field(16, ge=1)
    """Prompts sampled per RL step."""
    samples_per_prompt: int = Field(16, ge=2, le=4096)
    """Group size G: samples per prompt (GRPO normalises within a group, so at least 2)."""
    temperature: float = Field(1.0, gt=0.0, le=2.0)
    """Sampling temperature for rollouts (held-out evaluation is always greedy)."""
    max_new_tokens: int = Field(4, ge=1)
    """Longest response in tokens."""
    max_model_len: int = Field(64, ge=8)
    """vLLM context length: prompt plus response."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Precision the generators' vLLM engines compute in (held-out evaluation too). float32: the learner's own numerics (parity within 1e-3). bfloat16: about a third less generation time on a CPU with AVX-512 BF16 or AMX, and the usual choice on GPUs; the behaviour log-probs of the sampled tokens then carry bf16 rounding, which the update's ratio to them (clipped, optionally truncated with algorithm.tis_cap) absorbs, and the parity check's default tolerance widens to match (logging.parity_tol)."""
    sync_dtype: Literal["bfloat16", "float16"] | None = None
    """Precision of the weights a sync moves. null: the learner's own (float32). bfloat16 or float16 halve the bytes (for GPU engines that run in that precision); the generators then hold rounded weights, so their log-probs differ from the learner's (logging.parity_tol's default widens to match)."""
    sync_transport: Literal["object_store", "broadcast", "cuda_ipc"] = "object_store"
    """How synced weights travel. object_store: the learner puts a few flat buffers into Ray's object store and each generator maps them (no copy on the same node). broadcast: the learner and every engine worker form a process group of their own (gloo; NCCL when the learner's weights are on a GPU) and each sync is one broadcast per buffer, sent in the background from a snapshot so the learner trains on; only the layout goes through Ray. With NCCL each engine must be on another GPU than the learner (NCCL refuses two ranks on one device): engines on the learner's GPU take cuda_ipc. A replaced generator gets its weights through the object store and joins a new group at the next sync. cuda_ipc: for generators on the learner's GPU (needs resources.learner_gpus and generator_gpus > 0): each generator copies from a snapshot in the learner's GPU memory through CUDA IPC handles; the learner keeps max_staleness + 2 snapshots."""
    sync_reload: Literal["inplace", "vllm"] = "inplace"
    """How a generator loads synced weights. inplace: one copy per tensor into parameters that stay put (on CPU the engine's linear layers then run torch's linear on plain weights instead of oneDNN's packed copies); vllm: the engine's generic reload, which rebuilds every layer (on CPU about 5x slower for a 500M model). inplace falls back to vllm, with a warning in the generator's log, for a layout it does not know."""
    max_staleness: int = Field(0, ge=0, le=8)
    """Asynchronous pipeline: the generators may produce the batches of the next k steps while the learner trains, so a batch can come from a policy up to k updates old (the update corrects for it with the behaviour log-probs; an older batch is dropped and regenerated, counted as `stale_dropped`). 0: generate each batch after the previous update, a synchronous loop."""


# Fields that only one source type reads: setting one on another type is a mistake worth naming.
TYPE_FIELDS = {"model_dir": "rm", "scorers": "rm", "batch_size": "rm", "normalize": "rm", "cpus": "rm", "gpus": "rm",
               "judges": "judge", "judge_mode": "judge", "function": "rule", "knowledge": "exact"}


class SourceConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Names the source in metrics (`sources.<name>.*`) and in each sample's record."""
    type: Literal["math", "code", "exact", "judge", "rm", "rule"]
    """math: math-verify against the row's `answer`; code: the response is a program run against the row's `tests` in the sandbox; exact: the response's final answer (its last `Answer:` line, else its last line), normalised, against the row's `answers` or, by the row's `key`, the `knowledge` file; judge: the LLM-judge ensemble of `judges`; rm: a reward model (`model_dir`); rule: a Python function (`function`)."""
    kinds: list[str] = ["*"]
    """Row `kind` values this source scores; `*` = every row. A row served by several sources gets the weighted sum."""
    weight: float = 1.0
    """Weight of this source's score in the sum."""
    on_failure: Literal["score", "drop"] = "score"
    """When this source fails on a sample (status error, sandbox_error, invalid_input or abstain): `score` gives it `failure_score` and counts it; `drop` removes the sample from the batch."""
    failure_score: float = 0.0
    """Score of a failed sample with on_failure: score."""
    model_dir: Path | None = None
    """rm: the reward-model directory (`threefold rm train` writes RUN/model)."""
    scorers: int = Field(1, ge=1, le=1024)
    """rm: RewardModelScorer actors (resize a running job with `threefold scale RUN_DIR --rm N`)."""
    batch_size: int = Field(64, ge=1)
    """rm: samples per forward pass in a scorer."""
    normalize: bool = False
    """rm: standardise scores with a running mean and std over every sample scored so far (recorded in metrics)."""
    cpus: float = Field(0.25, gt=0.0)
    """rm: Ray CPUs per scorer."""
    gpus: float = Field(0.0, ge=0.0)
    """rm: GPUs per scorer on a cluster."""
    judges: Path | None = None
    """judge: the judges YAML (endpoints, ensemble, pool size), as for `threefold judge`."""
    judge_mode: Literal["group", "reference", "pointwise"] = "group"
    """judge: group = win rate against the other samples of the prompt; reference = P(sample beats the row's `reference`), and a sample identical to it ties (0.5) without a call; pointwise = normalised 1..10 score."""
    function: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    """rule: `package.module:function`, called as function(prompt, response, row) → float on the driver."""
    knowledge: Path | None = None
    """exact: JSONL or Parquet file of {"key", "answers"} records, for rows that give a `key` instead of `answers` (a row's own `knowledge` path wins)."""
    serve_app: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    """math, code, exact, rm, judge: name of a Ray Serve application on the run's cluster (deploy/serve.yaml, started by `threefold serve`) that scores this source instead of in-job actors; the application's args and autoscaling then decide the sandbox settings, model and judges, so `model_dir`, `judges`, `scorers`, `batch_size`, `cpus` and `gpus` do not apply, and `threefold scale` leaves it alone."""

    @model_validator(mode="after")
    def _fields_fit_the_type(self) -> "SourceConfig":
        for key, owner in TYPE_FIELDS.items():
            if key in self.model_fields_set and owner != self.type:
                raise ValueError(f"{key} applies to type {owner} only (this source has type {self.type})")
        self._serve_app_fits()
        need = {"rm": "model_dir", "judge": "judges", "rule": "function"}.get(self.type)
        if need and getattr(self, need) is None and not self.serve_app:
            raise ValueError(f"a source of type {self.type} needs `{need}`")
        for key in ("model_dir", "judges", "knowledge"):
            path = getattr(self, key)
            if path is not None and not path.exists():
                raise ValueError(f"{key} {str(path)!r} does not exist"
                                 + ("; train one with `threefold rm train CONFIG`" if key == "model_dir" else ""))
        if not self.kinds:
            raise ValueError("kinds is empty; list the row kinds this source scores, or [\"*\"] for every row")
        return self

    def _serve_app_fits(self) -> None:
        if not self.serve_app:
            return
        if self.type == "rule":
            raise ValueError("serve_app applies to math, code, exact, rm and judge sources (a rule runs on the driver)")
        pool_keys = [k for k in ("model_dir", "judges", "scorers", "batch_size", "cpus", "gpus") if k in self.model_fields_set]
        if pool_keys:
            raise ValueError(f"{pool_keys[0]} does not apply with serve_app: the Serve application's args and "
                             "deployment options in its Serve config decide it")


class RewardConfig(Section):
    sources: list[SourceConfig] | None = None
    """Reward sources, routed by each row's `kind` (see the README's reward router). Default: one math source for every row."""
    eval: list[SourceConfig] | None = None
    """Sources that score held-out greedy answers (the gold metric, never trained on). Default: `sources`; required when a source is an rm or judge."""
    kind: Literal["math"] | None = None
    """Old form of a single math reward (`kind: math`); still accepted, same as the default `sources`."""
    timeout_s: float = Field(5.0, gt=0.0, le=600.0)
    """Per-sample limit on the math check; a sample past it scores 0 with status `timeout`."""
    verifiers: int = Field(1, ge=1, le=1024)
    """Verifier actors in the pool that math, code and exact sources share (each runs `sandbox_slots` sandboxes at once)."""
    sandbox_slots: int = Field(2, ge=1, le=64)
    """Concurrent sandboxed programs per verifier actor."""
    isolation: Literal["auto", "bwrap", "rlimits", "none"] = "auto"
    """Sandbox isolation: auto picks the strongest available; `none` runs code unisolated and must be explicit."""
    pids_cgroup: bool = False
    """Also cap each program's processes with a cgroup `pids.max` (root only; ~10 ms per program on cgroup v1)."""
    all_or_nothing: bool = False
    """Code sources: reward 1 only when every test case passes (default: the fraction of cases passed)."""

    @model_validator(mode="after")
    def _one_form(self) -> "RewardConfig":
        if self.kind is not None and self.sources is not None:
            raise ValueError("`kind` is the old form of `sources`; remove `kind: math` and keep `sources`")
        for group in (self.sources, self.eval):
            names = [s.name for s in group or []]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"source name {dup[0]!r} is used twice; names must be unique")
        learned = [s.name for s in self.training_sources() if s.type in ("rm", "judge")]
        if learned and self.eval is None:
            raise ValueError(f"source {learned[0]!r} is learned or judged, so it cannot be the held-out metric: "
                             "set reward.eval to the gold metric (e.g. a math or rule source)")
        return self

    def training_sources(self) -> list[SourceConfig]:
        return list(self.sources) if self.sources is not None else [SourceConfig(name="math", type="math")]

    def eval_sources(self) -> list[SourceConfig]:
        return list(self.eval) if self.eval is not None else self.training_sources()


class LearnerConfig(Section):
    lr: float = Field(1e-4, gt=0.0, le=1.0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW decoupled weight decay."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """Gradient-norm clip."""
    epochs: int = Field(1, ge=1, le=16)
    """Passes over each rollout batch (1 = on-policy)."""
    minibatches: int = Field(1, ge=1, le=1024)
    """Shuffled minibatches per epoch, one optimizer step each."""
    micro_batch_size: int = Field(256, ge=1)
    """Samples per forward/backward; gradients accumulate over a minibatch."""
    warmup_steps: int = Field(0, ge=0)
    """Linear learning-rate warm-up, in updates."""
    schedule: Literal["constant", "cosine"] = "constant"
    """Learning rate after warm-up: constant, or cosine decay to min_lr_ratio·lr at the last step."""
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    """Floor of the cosine schedule as a fraction of lr."""
    matmul_precision: Literal["float32", "reduced"] = "float32"
    """Matrix products of the update (forward and backward). float32: exact. reduced: their inputs rounded to bf16 on a CPU (oneDNN, with AVX-512 BF16 or AMX) or to TF32 on an NVIDIA GPU, accumulated in fp32; weights, optimizer state, softmax, log-probs and losses stay fp32. On the 2-core box the demo's update took 15-20% less time. The parity probe and held-out scoring stay float32."""
    compile: bool = False
    """Run the learner's forward passes (policy, reference, critic) through torch.compile: prompt and response tokens share each matrix product, and the norms, rotary embedding, SiLU and attention softmax are fused. Llama and Qwen2 models; not with learner_sharding fsdp2. The learner compiles at start-up on a small made-up batch, beside the engines' own start (about 30 s more start-up on the 2-core box; inductor caches on disk for later runs); the demo's update then took about 20% less time there. Results agree with the eager path to float rounding."""


Strategy = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]
ROLES = ("generators", "learner", "verifiers", "judges", "judge_servers", "reward_models")  # placement roles
NOT_CUSTOM = ("CPU", "GPU", "memory", "object_store_memory")


class PlacementConfig(Section):
    generators: Strategy | None = None
    """Placement-group strategy for the vLLM generators: PACK puts the bundles on as few nodes as possible, SPREAD on as many, STRICT_PACK on one node, STRICT_SPREAD on all different nodes; None: no group, Ray places each actor on its own (the laptop default). Equal to `learner`: one group holds the generators and the learner (with PACK, the learner lands next to the generators)."""
    learner: Strategy | None = None
    """Strategy for the learner (one bundle; its own group unless it equals `generators`)."""
    verifiers: Strategy | None = None
    """Strategy for the verifier pool: a group for the actors at start and one for each growth (`threefold scale`) beyond the free bundles a shrink left; a group goes with its last actor."""
    judges: Strategy | None = None
    """Strategy for each judge source's JudgeActor pool (groups as for verifiers)."""
    judge_servers: Strategy | None = None
    """Strategy for the vLLM servers of the judges a judge source serves (one group, a bundle per served judge)."""
    reward_models: Strategy | None = None
    """Strategy for each rm source's RewardModelScorer pool (groups as for verifiers)."""
    timeout_s: float = Field(600.0, gt=0.0)
    """Seconds to wait for a placement group (an autoscaler may be adding nodes) before stopping with an error naming the role's key and the resources the cluster lacks; a pool growth that times out is skipped with a warning and the run goes on."""


class ResourcesConfig(Section):
    generator_cpus: float = Field(0.5, gt=0.0)
    """Ray CPUs reserved by each generator actor."""
    learner_cpus: float = Field(0.5, gt=0.0)
    """Ray CPUs reserved by the learner actor."""
    verifier_cpus: float = Field(0.25, gt=0.0)
    """Ray CPUs reserved by each verifier actor."""
    generator_gpus: float = Field(0.0, ge=0.0)
    """GPUs per generator on a cluster (0 on the CPU demo)."""
    learner_gpus: float = Field(0.0, ge=0.0)
    """GPUs for the learner on a cluster (0 on the CPU demo)."""
    threads_per_actor: int = Field(1, ge=1)
    """torch threads in each generator and learner unless learner_threads / generator_threads say otherwise."""
    learners: int = Field(1, ge=1, le=1024)
    """Learner actors training data-parallel in one torch.distributed group (gloo on CPU, NCCL when learner_gpus > 0): each runs the model on its own prompt groups, gradients are summed before every optimizer step, so N learners produce the weights one would (to float rounding); the first exports the weights to the generators."""
    learner_sharding: Literal["replicate", "fsdp2"] = "replicate"
    """How a learner group holds the policy. replicate: every rank holds the whole model, its gradients and AdamW moments. fsdp2: the decoder layers are sharded with torch's FSDP2 (`fully_shard`), so each rank holds 1/N of their weights, gradients and moments (embeddings, final norm, head and the frozen reference stay whole), and after each update every rank gathers a whole, frozen copy of the weights for export, parity probes and checkpoints. Same results as one learner (to float rounding). Needs resources.learners ≥ 2."""
    learner_threads: int | None = Field(None, ge=1)
    """torch threads of the learner (null: threads_per_actor). With max_staleness 0 the learner runs while the generators wait, so it may take every core of its node; with max_staleness ≥ 1 they run at the same time: leave cores for the generators."""
    generator_threads: int | None = Field(None, ge=1)
    """torch threads of each generator (null: threads_per_actor)."""
    placement: PlacementConfig = PlacementConfig()
    custom: dict[str, dict[str, float]] = {}
    """Custom Ray resources that each actor of a role asks for, by role (the keys of `placement`), e.g. {verifiers: {verifier_node: 0.01}}: the role runs only on nodes started with them (deploy/ marks its CPU groups verifier_node and judge_node). A role listed here needs a `placement` strategy, so a request no node meets fails after timeout_s instead of waiting forever."""

    @field_validator("custom")
    @classmethod
    def _custom_roles(cls, v: dict) -> dict:
        for role, wants in v.items():
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
            for name, amount in wants.items():
                if name in NOT_CUSTOM or name.startswith("node:"):
                    raise ValueError(f"{role}: {name} is not a custom resource; CPUs and GPUs come from "
                                     "resources.*_cpus / *_gpus (rm sources: cpus / gpus)")
                if amount < 1e-4:
                    raise ValueError(f"{role}.{name}: amount must be at least 0.0001 (Ray's precision), got {amount:g}; "
                                     "a fraction such as 0.01 pins an actor without using up the node")
        return v

    @model_validator(mode="after")
    def _sharding_needs_a_group(self) -> "ResourcesConfig":
        if self.learner_sharding == "fsdp2" and self.learners < 2:
            raise ValueError("learner_sharding: fsdp2 shards the policy over a learner group; set resources.learners "
                             "to 2 or more (or learner_sharding: replicate)")
        return self

    @model_validator(mode="after")
    def _custom_needs_a_group(self) -> "ResourcesConfig":
        for role in self.custom:
            if getattr(self.placement, role) is None:
                raise ValueError(f"custom.{role} needs placement.{role} (PACK, SPREAD, STRICT_PACK or STRICT_SPREAD): "
                                 "custom resources are reserved through a placement group, which fails after "
                                 "placement.timeout_s instead of waiting forever")
        return self

    def cpus_needed(self, num_generators: int, verifiers: int, reward_cpus: float = 0.0) -> float:
        return (num_generators * self.generator_cpus + self.learners * self.learner_cpus + self.verifier_cpus * verifiers
                + reward_cpus)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class WandbConfig(Section):
    project: str = Field("threefold", min_length=1)
    """W&B project the run is logged to (the run's name is the threefold run name)."""
    mode: Literal["offline", "online"] = "offline"
    """offline writes under <run dir>/wandb/ (upload later with `wandb sync`); online needs WANDB_API_KEY in the environment."""

    @model_validator(mode="after")
    def _wandb_installed(self) -> "WandbConfig":
        if not _installed("wandb"):
            raise ValueError("needs the wandb package: pip install 'threefold[loggers]' (or remove logging.wandb)")
        return self


class LoggingConfig(Section):
    output_dir: Path = Path("runs")
    """Runs go to <output_dir>/<run_name>: metrics.jsonl, report.md, report.png, checkpoint/."""
    run_name: str | None = None
    """Defaults to the config file name plus a timestamp."""
    storage: str | None = Field(None, min_length=1)
    """Also copy the run directory (metrics.jsonl, config.json, report.md, report.png, checkpoint/) to <storage>/<run_name>/ at every evaluation and at the end: a path on storage the nodes share (relative to where the driver starts) or a pyarrow filesystem URI (s3://bucket/prefix, gs://bucket/prefix, file:///abs/path). None: the local run directory only. A failed copy is a warning; the run goes on. `threefold submit` needs it (or --storage)."""
    eval_every: int = Field(10, ge=1)
    """Held-out greedy score under the eval sources every K steps (and at step 0 and the end)."""
    eval_size: int = Field(200, ge=1)
    """Held-out prompts per evaluation."""
    parity_every: int = Field(10, ge=1)
    """Check generator/learner log-prob parity after every N-th weight sync."""
    parity_tol: float | None = Field(None, gt=0.0)
    """Largest allowed |Δ log-prob| on the probe sequence. null: 1e-3 when the generators compute in float32 from float32 weights (rollout.dtype, rollout.sync_dtype), else 0.1 (bf16 rounding moves the demo model's probe log-probs by about 0.02; weights that failed to load move them by whole units)."""
    progress: bool = True
    """Show a progress bar on stderr."""
    rollouts: bool = False
    """Also append every sample trained on to <run dir>/rollouts.jsonl, a line per step: its id [draw, j] (the j-th sample of the run's draw-th prompt), token ids, text and reward."""
    tensorboard: bool = False
    """Also write every numeric metric of each step to <run dir>/tensorboard/ (TensorBoard event files; needs the `tensorboard` package: `pip install 'threefold[loggers]'`)."""
    wandb: WandbConfig | None = None
    """Also log every numeric metric of each step to Weights & Biases (needs `wandb`: `pip install 'threefold[loggers]'`)."""

    @field_validator("tensorboard")
    @classmethod
    def _tensorboard_installed(cls, v: bool) -> bool:
        if v and not _installed("tensorboard"):
            raise ValueError("needs the tensorboard package: pip install 'threefold[loggers]' (or set it to false)")
        return v


class CheckpointConfig(Section):
    every: int | None = Field(50, ge=1)
    """Write a training-state checkpoint every N steps (and at the end); None: only at the end and on a stop signal."""
    uri: str | None = Field(None, min_length=1)
    """Where checkpoints go: a path or a pyarrow filesystem URI (s3://bucket/prefix, gs://…, file:///abs/path); on a multi-node cluster, storage the learner's node and the driver's share. None: <logging.storage>/<run_name>/checkpoints when logging.storage is set, else <run dir>/checkpoints."""
    keep: int = Field(2, ge=1)
    """Keep the newest K complete checkpoints; older ones are deleted once a newer one is written."""
    learner_restarts: int = Field(2, ge=0)
    """A learner (or its node) that dies is restarted from the newest checkpoint (from the start without one) this many times in a run; the next death stops the run (exit 1) with a message naming the checkpoint to --resume from."""
    on_signal: bool = True
    """On SIGTERM or SIGINT (also what `ray job stop` sends), finish the current step, write a checkpoint and exit 3."""


class RunConfig(Section):
    steps: int = Field(100, ge=1)
    """RL steps (one optimizer update and one weight sync each)."""
    seed: int = 0
    """Seeds sampling (each drawn prompt gets its own seed, so its samples do not depend on which generator draws them or when the run was resumed) and the learner."""
    policy: PolicyConfig
    data: DataConfig
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardConfig = RewardConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    learner: LearnerConfig = LearnerConfig()
    resources: ResourcesConfig = ResourcesConfig()
    logging: LoggingConfig = LoggingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()

    def parity_tolerance(self) -> float:
        """logging.parity_tol, or its default for the generators' precision."""
        if self.logging.parity_tol is not None:
            return self.logging.parity_tol
        return 1e-3 if self.rollout.dtype == "float32" and self.rollout.sync_dtype is None else 0.1

    @model_validator(mode="after")
    def _ipc_needs_gpus(self) -> "RunConfig":
        res = self.resources
        if self.rollout.sync_transport == "cuda_ipc" and not (res.learner_gpus > 0 and res.generator_gpus > 0):
            raise ValueError("rollout.sync_transport: cuda_ipc copies from the learner's GPU memory; set "
                             "resources.learner_gpus and resources.generator_gpus > 0 (the learner and its generators "
                             "sharing a GPU), or use sync_transport: broadcast or object_store")
        return self

    @model_validator(mode="after")
    def _compile_not_sharded(self) -> "RunConfig":
        if self.learner.compile and self.resources.learner_sharding == "fsdp2":
            raise ValueError("learner.compile does not take FSDP2-sharded weights: set learner.compile: false or "
                             "resources.learner_sharding: replicate")
        return self
