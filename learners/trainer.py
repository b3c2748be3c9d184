"""The update step for the whole family — `ppo` (critic + GAE), `grpo`, `dr_grpo`, `rloo`,
`reinforce_pp` — with the KL to a frozen reference in the reward or in the loss, several epochs
over shuffled minibatches, and the off-policy correction for stale or mismatched rollouts."""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from learners.advantages import AdvantageInputs, estimators
from learners.critic import load_critic, response_values
from learners.kl_control import KLController
from learners.losses import Clip, Norm, aggregate, explained_variance, kl_estimators, policy_loss, value_loss
from learners.policy import response_hidden, response_logprobs, sequence_logprobs
from learners.rollout import PackedBatch, RolloutBatch, pack
from learners.schedule import lr_lambda
from learners import distributed, fast_forward, sharding, weight_pack


@dataclass(frozen=True)
class CriticSettings:
    lr: float = 1e-4
    warmup_steps: int = 0  # updates that train only the critic
    value_clip: float | None = 0.2
    model_dir: str | None = None  # default: the policy directory with a fresh head
    gamma: float = 1.0
    lam: float = 0.95
    normalize_advantages: bool = True


@dataclass(frozen=True)
class UpdateSettings:
    algorithm: str = "grpo"
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    clip: Clip = Clip()
    loss_agg: str = "token_mean"
    entropy_coef: float = 0.0
    kl_coef: float = 0.01
    kl_estimator: str = "k3"
    kl_in_reward: bool = False  # False: β·KL is a loss term (GRPO style)
    kl_target: float | None = None  # adaptive β towards this per-token KL
    kl_horizon: int = 10000
    tis_cap: float | None = None  # truncated importance sampling for the train/inference mismatch
    epochs: int = 1
    minibatches: int = 1
    micro_batch_size: int = 256
    max_new_tokens: int = 4  # Dr. GRPO's constant normaliser
    warmup_steps: int = 0
    schedule: str = "constant"
    total_steps: int = 100
    min_lr_ratio: float = 0.0
    critic: CriticSettings = field(default_factory=CriticSettings)
    seed: int = 0
    matmul_precision: str = "float32"  # or "reduced": bf16 inputs on CPU (oneDNN), TF32 on CUDA
    compile: bool = False  # the response forward pass through torch.compile (learners/fast_forward.py)


@dataclass
class Prepared:
    """Per-batch tensors fixed before the first optimizer step. All [B, T] over response positions."""

    packed: PackedBatch
    old_logp: torch.Tensor
    ref_logp: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor | None
    old_values: torch.Tensor | None
    weights: torch.Tensor | None


@contextmanager
def matmul_precision(kind: str):
    """fp32 matrix products with bf16 (CPU, oneDNN) or TF32 (CUDA) inputs inside, when `kind` is
    "reduced"; the process's own setting again after (torch keeps it per process)."""
    if kind == "float32":
        yield
        return
    cpu, cuda = torch.backends.mkldnn.matmul, torch.backends.cuda.matmul
    before = cpu.fp32_precision, cuda.fp32_precision
    cpu.fp32_precision, cuda.fp32_precision = "bf16", "tf32"
    try:
        yield
    finally:
        cpu.fp32_precision, cuda.fp32_precision = before


class PolicyTrainer:
    """Policy, frozen reference, optional critic, their optimizers and schedules; one `update` per batch."""

    def __init__(self, model_dir: str | Path, settings: UpdateSettings, shard: distributed.Shard | None = None,
                 device: str | torch.device = "cpu"):
        torch.manual_seed(settings.seed)
        self.settings = s = settings
        self.device = torch.device(device)  # models and batches live here; index bookkeeping stays on the CPU
        self.estimator = estimators.get(s.algorithm)
        self.kl_fn = kl_estimators.get(s.kl_estimator)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to(self.device)
        self.model.config.use_cache = False
        self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer, self.scheduler = self._optimizer(self.model, s.lr)
        self.critic = self.critic_optimizer = self.critic_scheduler = None
        if s.algorithm == "ppo":
            self.critic = load_critic(s.critic.model_dir or model_dir).to(self.device)
            self.critic_optimizer, self.critic_scheduler = self._optimizer(self.critic, s.critic.lr)
        self.kl = KLController(s.kl_coef, s.kl_target, s.kl_horizon)
        self.version = 0
        self.generator = torch.Generator().manual_seed(s.seed)
        self.shard = shard or distributed.Shard()
        self._export_buffers: dict[str, list[torch.Tensor]] = {}  # per device type
        self.flat = weight_pack.FlatWeights(self.model)  # the policy's weights live in export buckets
        self.train_model = self.model  # what the optimizer updates: the policy itself, or its FSDP2 shards
        self.sharded = False
        self.idle_passes = 0  # FSDP2 passes made only to keep pace with a busier rank
        self.hidden = response_hidden
        if s.compile:
            for name, m in [("policy", self.model)] + [("critic", self.critic)] * (self.critic is not None):
                why = fast_forward.unsupported(m)
                if why:
                    raise ValueError(f"learner.compile: the {name} model has {why}; set learner.compile: false")
            self.hidden = fast_forward.CompiledHidden()
            with matmul_precision(s.matmul_precision):  # part of what the compiled graphs are specialised on
                self._warm_up()

    def _warm_up(self) -> None:
        """Compile at start-up (beside the engines' own start) instead of inside the first update: a
        forward and backward pass on a small made-up batch, whose gradients are then dropped."""
        vocab = self.model.config.vocab_size
        # fresh tensors, not views (dynamo guards on that), and every size different (equal ones share a symbol)
        ids = lambda *shape: (torch.arange(torch.Size(shape).numel()) % vocab).view(shape).clone()
        owner = torch.tensor([0, 0, 1, 1, 2, 2, 2])
        tiny = PackedBatch(ids(3, 5), torch.tensor([5, 3, 4]), owner, ids(7, 6), torch.ones(7, 6), torch.zeros(7, 6),
                           torch.zeros(7), owner).to(self.device)
        for model in [self.model] + [self.critic] * (self.critic is not None):
            out = (response_logprobs(model, tiny, with_entropy=True, hidden=self.hidden)[0] if model is self.model
                   else response_values(model, tiny, hidden=self.hidden))
            out.sum().backward()
            model.zero_grad(set_to_none=True)
        with torch.no_grad():
            response_logprobs(self.reference, tiny, hidden=self.hidden)
            if self.critic is not None:
                response_values(self.critic, tiny, hidden=self.hidden)

    def shard_policy(self) -> None:
        """FSDP2 over the learner group (learners/sharding.py): the optimizer trains a copy whose
        decoder layers are sharded; `model` stays whole and is refreshed after every update."""
        if self.shard.world < 2:
            raise ValueError("resources.learner_sharding: fsdp2 needs a learner group (resources.learners >= 2)")
        if self.settings.compile:
            raise ValueError("learner.compile does not take FSDP2-sharded weights: set learner.compile: false "
                             "or resources.learner_sharding: replicate")
        self.train_model = sharding.shard_layers(self.model)
        self.model.requires_grad_(False)
        self.sharded = True
        self.optimizer, self.scheduler = self._optimizer(self.train_model, self.settings.lr)

    def _optimizer(self, model, lr: float):
        s = self.settings
        sharded = sharding.has_shards(model)  # DTensor and Tensor mixed: the plain per-tensor loop
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=s.weight_decay, betas=s.betas,
                                foreach=False if sharded else None, fused=None if sharded else True)
        return opt, torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(s.schedule, s.warmup_steps, s.total_steps, s.min_lr_ratio))

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """Epochs × shuffled minibatches of optimizer steps on one scored batch."""
        with matmul_precision(self.settings.matmul_precision):
            return self._update(batch)

    def _update(self, batch: RolloutBatch) -> dict[str, float]:
        s = self.settings
        lag = self.version - batch.policy_version
        whole = pack(batch, self.tokenizer.pad_token_id).to(self.device)
        own = self.shard.own(whole.group_ids.cpu())  # every sample with one learner; whole groups per rank
        local = torch.full((len(whole.owner),), -1)
        local[own] = torch.arange(len(own))
        prep = self._prepare(whole.rows(own), lag)
        train_policy = self.version >= s.critic.warmup_steps or self.critic is None
        sums: dict[str, float] = {}
        n = len(whole.owner)
        steps = 0
        for _ in range(s.epochs):
            order = torch.randperm(n, generator=self.generator)  # the same on every rank
            for part in order.chunk(min(s.minibatches, n)):
                norm = Norm.of(whole.response_mask[part], s.max_new_tokens)  # of the whole minibatch
                mine = local[part]
                for k, v in self._minibatch(prep, mine[mine >= 0], norm, train_policy).items():
                    sums[k] = sums.get(k, 0.0) + v
                steps += 1
        stats = {k: v / steps for k, v in sums.items()}
        if train_policy:  # the policy's schedule starts after the critic's warm-up
            self.scheduler.step()
        if self.critic_scheduler is not None:
            self.critic_scheduler.step()
        stats.update(self._batch_stats(prep, lag, train_policy))
        self.kl.update(stats["kl"], n)
        if self.sharded:
            sharding.refresh_whole(self.model, self.train_model)
        self.version += 1
        return stats

    @torch.no_grad()
    def _prepare(self, packed: PackedBatch, lag: int) -> Prepared:
        s, mask = self.settings, packed.response_mask
        ref_logp = self._no_grad(lambda part: response_logprobs(self.reference, part, hidden=self.hidden)[0], packed)
        old_logp, weights = packed.old_logp, None
        if s.tis_cap is not None and lag == 0:
            # Fresh rollout: ρ's denominator is this policy as the learner computes it, and the
            # gap to what vLLM sampled from is a truncated importance weight.
            old_logp = self._no_grad(lambda part: response_logprobs(self.model, part, hidden=self.hidden)[0], packed) * mask
            weights = torch.exp((old_logp - packed.old_logp).clamp(-20, 20)).clamp(max=s.tis_cap) * mask
        token_rewards = torch.zeros_like(mask)
        last = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & (mask > 0)
        token_rewards[last] = packed.rewards[last.any(-1)]
        if s.kl_in_reward:
            token_rewards = token_rewards - self.kl.beta * self.kl_fn(old_logp, ref_logp) * mask
        values = None
        if self.critic is not None:
            values = self._no_grad(lambda part: response_values(self.critic, part, hidden=self.hidden), packed) * mask
        c = s.critic
        total = distributed.sum_tensor if self.shard.world > 1 else None  # batch whitening over every rank
        adv, returns = self.estimator(AdvantageInputs(token_rewards, mask, packed.group_ids, values, c.gamma, c.lam,
                                                      c.normalize_advantages, total=total))
        return Prepared(packed, old_logp, ref_logp, adv, returns, values, weights)

    def _no_grad(self, fn, packed: PackedBatch) -> torch.Tensor:
        return torch.cat([fn(packed.rows(part))
                          for part in torch.arange(len(packed.owner)).split(self.settings.micro_batch_size)])

    def _minibatch(self, prep: Prepared, idx: torch.Tensor, norm: Norm, train_policy: bool) -> dict[str, float]:
        """One optimizer step (policy and/or critic) on the samples `idx` of a minibatch whose
        normalisers are `norm`, in micro-batches; with several ranks, gradients and sums are summed
        over them before the step."""
        s, p = self.settings, prep.packed
        self.optimizer.zero_grad(set_to_none=True)
        if self.critic_optimizer is not None:
            self.critic_optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        subs = list(idx.split(s.micro_batch_size))
        for sub in sharding.padded(subs) if self.sharded and train_policy else subs:
            if sub is None:  # FSDP: every rank makes as many passes as the busiest one
                self._idle_pass(prep)
                continue
            parts, stats = self._losses(prep, sub, norm, train_policy)
            sum(parts.values()).backward()
            share = float(p.response_mask[sub].sum()) / norm.tokens
            for k, v in [*parts.items(), *((k, v * share) for k, v in stats.items())]:
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        if self.shard.world > 1:
            sums = distributed.combine(distributed.gather(sums))
            for model in [self.train_model] * train_policy + [self.critic] * (self.critic is not None):
                distributed.sum_gradients([p for p in model.parameters() if not sharding.is_sharded(p)])
        if train_policy:
            params = list(self.train_model.parameters())
            if self.sharded:
                sharding.sum_not_mean(params)
            sums["grad_norm"] = (sharding.clip_grad_norm(params, s.max_grad_norm) if self.sharded else
                                 float(torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)))
            self.optimizer.step()
        if self.critic_optimizer is not None:
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), s.max_grad_norm)
            self.critic_optimizer.step()
        return sums

    def _losses(self, prep: Prepared, sub: torch.Tensor, norm: Norm, train_policy: bool) -> tuple[dict, dict]:
        """Loss terms of one micro-batch (they sum to its share of the minibatch loss) and its
        token-level statistics."""
        s, p = self.settings, prep.packed
        part, mask = p.rows(sub), p.response_mask[sub]
        out: dict[str, torch.Tensor] = {}
        stats: dict[str, torch.Tensor] = {}
        if train_policy:
            logp, entropy = response_logprobs(self.train_model, part, with_entropy=True, hidden=self.hidden)
            weights = prep.weights[sub] if prep.weights is not None else None
            out["policy_loss"], stats = policy_loss(logp, prep.old_logp[sub], prep.advantages[sub], mask, s.clip,
                                                    s.loss_agg, norm, weights)
            stats["entropy"] = (entropy * mask).sum() / mask.sum().clamp(min=1)
            if not s.kl_in_reward and self.kl.beta > 0:
                out["kl_loss"] = self.kl.beta * aggregate(self.kl_fn(logp, prep.ref_logp[sub]), mask, s.loss_agg, norm)
            if s.entropy_coef > 0:
                out["entropy_loss"] = -s.entropy_coef * aggregate(entropy, mask, s.loss_agg, norm)
        if self.critic is not None:
            values = response_values(self.critic, part, hidden=self.hidden)
            out["value_loss"], vstats = value_loss(values, prep.old_values[sub], prep.returns[sub], mask,
                                                   s.critic.value_clip, s.loss_agg, norm)
            stats.update(vstats)
        return out, stats

    def _idle_pass(self, prep: Prepared) -> None:
        """A forward and backward through the sharded policy that adds nothing to the gradients."""
        if len(prep.packed.owner) == 0:
            raise ValueError("resources.learner_sharding: fsdp2 needs every learner to own samples: "
                             "set rollout.prompts_per_step to at least resources.learners")
        logp, _ = response_logprobs(self.train_model, prep.packed.rows(torch.tensor([0])), hidden=self.hidden)
        (logp.sum() * 0.0).backward()
        self.idle_passes += 1

    @torch.no_grad()
    def _batch_stats(self, prep: Prepared, lag: int, train_policy: bool) -> dict[str, float]:
        """Whole-batch metrics at the pre-update policy (cheap: no extra forward passes)."""
        p = prep.packed
        mask = p.response_mask
        sums = {"tokens": float(mask.sum()), "kl": float((self.kl_fn(prep.old_logp, prep.ref_logp) * mask).sum()),
                "advantage_abs_mean": float((prep.advantages.abs() * mask).sum()),
                "behaviour_ratio_mean": float((torch.exp(prep.old_logp - p.old_logp) * mask).sum())}
        peak = {}
        if prep.weights is not None:
            sums["is_weight_mean"] = float(prep.weights[mask > 0].sum())
            peak["is_weight_max"] = float(prep.weights[mask > 0].max()) if mask.any() else 0.0
        if self.shard.world > 1:  # token-weighted means over every rank's samples
            every = distributed.gather({"sums": sums, "peak": peak})
            sums = distributed.combine([e["sums"] for e in every])
            peak = distributed.combine([e["peak"] for e in every], max)
        tokens = max(sums.pop("tokens"), 1.0)
        out = {**{k: v / tokens for k, v in sums.items()}, **peak, "kl_coef": self.kl.beta,
               "lr": self.scheduler.get_last_lr()[0], "version_lag": float(lag), "policy_trained": float(train_policy)}
        if prep.returns is not None and prep.old_values is not None:
            out["explained_variance"] = explained_variance(prep.old_values, prep.returns, mask)
        return out

    def probe_logprobs(self, token_ids: list[int]) -> list[float]:
        return sequence_logprobs(self.model, token_ids)

    def export(self, dtype: torch.dtype | None = None, on_device: bool = False) -> list[weight_pack.Bucket]:
        """The policy's weights in a few flat buckets (learners/weight_pack.py), HF checkpoint names: the
        live buffers themselves, or with `dtype` a cast copy. Host arrays (for Ray's object store), or
        with `on_device` tensors where the weights are (for a broadcast or CUDA IPC)."""
        if dtype is None:
            return self.flat.buckets(on_device)
        # the buffers are reused: an export is read (Ray copies it into its object store) before the next
        device = self.device if on_device else torch.device("cpu")
        buffers = self._export_buffers.setdefault(device.type, [])
        return weight_pack.pack(self.model.state_dict().items(), dtype=dtype, reuse=buffers, device=device)

    def save(self, out_dir: str | Path) -> None:
        """The policy in Hugging Face format; the critic (ppo) in `<out_dir>/critic`."""
        self.model.save_pretrained(str(out_dir), safe_serialization=True)
        self.tokenizer.save_pretrained(str(out_dir))
        if self.critic is not None:
            self.critic.save_pretrained(str(Path(out_dir) / "critic"), safe_serialization=True)
            self.tokenizer.save_pretrained(str(Path(out_dir) / "critic"))
