"""RolloutGenerator: one vLLM engine per actor; samples, greedy answers, weight reloads, probes."""
from __future__ import annotations

import gc
import os
import sys
import time

import ray

from learners.rollout import RolloutBatch, row_seed

# vLLM on CPU inside an actor: keep the engine in-process (no spawn), give it a small
# KV cache, and let several engines share cores instead of pinning threads.
VLLM_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "TOKENIZERS_PARALLELISM": "false",
}


@ray.remote
class RolloutGenerator:
    def __init__(self, model_dir: str, seed: int, max_model_len: int, threads: int = 1, dtype: str = "float32"):
        self.label = f"generator[seed {seed}]"  # its repr: what the dashboard and log lines show
        for key, value in VLLM_ENV.items():
            os.environ.setdefault(key, value)
        import torch
        from vllm import LLM

        torch.set_num_threads(threads)
        self.llm = LLM(
            model=model_dir, dtype=dtype, enforce_eager=True, seed=seed,
            max_model_len=max_model_len, worker_extension_cls="actors.vllm_ext.WeightReloader",
        )
        self.tokenizer = self.llm.get_tokenizer()
        gc.freeze()  # the engine's start-up objects: no full collection scans them again (actors/learner.py)
        self.version = 0
        self.loads = 0  # load_weights calls (one per sync, whatever the number of tensors)
        self.reloaded_by: str | None = None  # how the last sync loaded: "inplace" or "vllm"

    def __repr__(self) -> str:
        return self.label

    def _prompts(self, prompts: list[str]):
        from vllm.inputs import TokensPrompt

        return [TokensPrompt(prompt_token_ids=self.tokenizer(p)["input_ids"]) for p in prompts]

    def generate(self, rows: list[dict], n: int, temperature: float, max_tokens: int,
                 draws: list[int] | None = None, seed: int = 0) -> RolloutBatch:
        """n samples per row, with the behaviour log-prob of every sampled token. With `draws` (each
        row's index in the run's stream of prompts), row i is sampled with seed row_seed(seed, draws[i]):
        its samples depend only on the weights and that seed, on any generator and after a resume."""
        from vllm import SamplingParams

        # detokenize=False: vLLM would decode every sampled token again for its log-prob entry;
        # one batch decode of the finished responses is cheaper
        params = [SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens, logprobs=0, detokenize=False,
                                 seed=None if draws is None else row_seed(seed, d)) for d in (draws or [None] * len(rows))]
        t0 = time.perf_counter()
        outs = self.llm.generate(self._prompts([r["prompt"] for r in rows]), params, use_tqdm=False)
        batch = RolloutBatch([], [], [], [], [], [], self.version, sample_ids=None if draws is None else [])
        for group, (row, out) in enumerate(zip(rows, outs)):
            for j, sample in enumerate(out.outputs):
                if draws is not None:
                    batch.sample_ids.append((draws[group], j))
                ids = list(sample.token_ids)
                batch.prompt_ids.append(list(out.prompt_token_ids))
                batch.response_ids.append(ids)
                batch.behaviour_logprobs.append([lp[t].logprob for lp, t in zip(sample.logprobs, ids)])
                batch.group_ids.append(group)
                batch.metadata.append(row)
        batch.texts = self.tokenizer.batch_decode(batch.response_ids, skip_special_tokens=True)
        batch.generate_seconds = time.perf_counter() - t0
        return batch

    def greedy(self, prompts: list[str], max_tokens: int) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        outs = self.llm.generate(self._prompts(prompts), params, use_tqdm=False)
        return [o.outputs[0].text for o in outs]

    def load_weights(self, buckets: list, version: int, reload: str = "inplace") -> int:
        """Reload every parameter from the learner's buckets (learners/weight_pack.py): one call whatever
        the number of tensors; the engine keeps running. `reload`: rollout.sync_reload."""
        return self._loaded(self.llm.collective_rpc("reload_from_buckets", args=(buckets, reload == "inplace"))[0],
                            version, reload)

    def engine_workers(self) -> int:
        """Processes this engine runs its model in (each joins a weight group)."""
        return len(self.llm.collective_rpc("worker_rank"))

    def join_weight_group(self, address: str, base_rank: int, world: int, backend: str, name: str,
                          timeout_s: float) -> list[int]:
        """rollout.sync_transport broadcast: every engine worker joins the learner's weight group."""
        return self.llm.collective_rpc("join_weight_group", args=(address, base_rank, world, backend, name, timeout_s))

    def receive_weights(self, plan: list, version: int, reload: str = "inplace") -> int:
        """Receive the learner's broadcast of the weights laid out as `plan` and load them."""
        return self._loaded(self.llm.collective_rpc("receive_broadcast", args=(plan, reload == "inplace"))[0],
                            version, reload)

    def load_ipc(self, exported: tuple[list, list], version: int, reload: str = "inplace") -> int:
        """rollout.sync_transport cuda_ipc: copy the weights from the learner's GPU memory."""
        plan, handles = exported
        return self._loaded(self.llm.collective_rpc("load_ipc", args=(plan, handles, reload == "inplace"))[0],
                            version, reload)

    def _loaded(self, how: str, version: int, reload: str) -> int:
        if how != reload and self.reloaded_by != how:
            print(f"{self.label}: rollout.sync_reload is {reload}, but this engine's layout needs vLLM's "
                  "generic reload; using it", file=sys.stderr, flush=True)
        self.reloaded_by = how
        self.loads += 1
        self.llm.reset_prefix_cache()  # cached KV was computed with the old weights
        self.version = version
        return version

    def probe_logprobs(self, token_ids: list[int]) -> list[float]:
        """Log-prob of each token after the first, as the engine computes them."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        out = self.llm.generate([TokensPrompt(prompt_token_ids=token_ids)],
                                SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)[0]
        return [lp[t].logprob for lp, t in zip(out.prompt_logprobs[1:], token_ids[1:])]

    def get_version(self) -> int:
        return self.version
