import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An untrained 2-layer char-level Llama in HF format (seconds to build)."""
    from learners.char_tokenizer import build_char_tokenizer
    from learners.warm_start import TinyLlamaSpec, build_tiny_llama, save_hf

    out = tmp_path_factory.mktemp("tiny_model")
    tok = build_char_tokenizer()
    spec = TinyLlamaSpec(hidden_size=64, layers=2, heads=2, intermediate_size=128, max_positions=64)
    save_hf(build_tiny_llama(spec, tok, seed=0), tok, out)
    return out
