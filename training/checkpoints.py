"""The router's weights across runtimes: bundled GGUF → Hugging Face checkpoint (to train) → GGUF (to serve).

The bundled SmolLM2 GGUF loads into transformers; the loaded model carries a GGUF quantizer that
``save_pretrained`` and ``Trainer`` refuse, so it is cleared and the model saved once as a plain checkpoint.
After training, :func:`export_gguf` writes the weights back as GGUF with the metadata (tokenizer, chat
template, hyper-parameters) of the GGUF it came from, so llama.cpp serves the trained router.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_CACHE = Path.home() / ".cache" / "routegraph" / "checkpoints"


def hf_checkpoint_from_gguf(gguf_file: Path, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """A plain Hugging Face checkpoint directory for a GGUF file, converted once and cached."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir / f"{gguf_file.stem}-{gguf_file.stat().st_size}"
    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
    )
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / "SOURCE_GGUF").write_text(str(gguf_file))
    partial.rename(target)
    return target


def source_gguf(checkpoint: Path) -> Path | None:
    """The GGUF a checkpoint descends from (its metadata template for export), if recorded."""
    marker = checkpoint / "SOURCE_GGUF"
    return Path(marker.read_text().strip()) if marker.is_file() else None


def _permute_for_llamacpp(weights: Any, n_head: int) -> Any:
    """llama.cpp stores LLaMA q/k projections with rotary halves interleaved (as convert_hf_to_gguf does)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def export_gguf(checkpoint: Path, template_gguf: Path, out_file: Path) -> Path:
    """Write a LLaMA-architecture checkpoint as GGUF (F16 matrices, F32 norms) with a template's metadata."""
    import gguf
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(checkpoint)
    if config.model_type != "llama":
        raise ValueError(f"GGUF export supports LLaMA-architecture routers, not {config.model_type!r}")
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    reader = gguf.GGUFReader(template_gguf, "r")
    arch_field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    assert arch_field is not None, f"{template_gguf} has no architecture"
    arch = str(arch_field.contents())
    out_file.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out_file), arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name == gguf.Keys.General.FILE_TYPE:
            continue  # the tensors are F16/F32 now, not the template's quantisation
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    state = model.state_dict()
    for hf_name, tensor in state.items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"no GGUF name for tensor {hf_name}")
        data = tensor.detach().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute_for_llamacpp(data, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute_for_llamacpp(data, config.num_key_value_heads)
        writer.add_tensor(gguf_name, data.astype(np.float16 if data.ndim == 2 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file
