"""``miniature compress gguf``: a causal LM as llama.cpp ships it.

An HF Llama-family model (``LlamaForCausalLM``, byte-level BPE tokenizer) is written as GGUF F16 with the ``gguf``
package, following llama.cpp's ``convert_hf_to_gguf.py`` (tensor names from gguf's own map, query and key rows
permuted to llama.cpp's rotary layout, 1-D tensors in F32); a GGUF is taken as it is. Either is then quantized by
llama.cpp's own quantizer (``llama_model_quantize``, the C function behind ``llama-quantize``; a quantized input is
dequantized first, as ``llama-quantize --allow-requantize`` does). The tokenizer files go beside the result, so the
GGUF runs with the tokenizer it was converted from.
"""

from __future__ import annotations

import ctypes
import json
import tempfile
from pathlib import Path
from typing import Any

from .errors import ModelLoadError, UsageError

#: The quantization types the recipe offers: llama.cpp's file types (llama_ftype) by llama-quantize's names.
TYPES = {"F16": 1, "Q8_0": 7, "Q6_K": 18, "Q5_K_M": 17, "Q5_0": 8, "Q4_K_M": 15, "Q4_K_S": 14, "Q4_1": 3, "Q4_0": 2,
         "Q3_K_M": 12, "Q2_K": 10}
_ARCHITECTURES = ("llama", "mistral")


def hf_to_gguf(model_dir: Path, out_file: Path) -> Path:
    """Write the HF causal LM in ``model_dir`` as a GGUF F16 file (``llama`` architecture)."""
    import gguf
    import torch
    import transformers

    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") not in _ARCHITECTURES:
        raise UsageError(f"compress gguf writes Llama-family models ({', '.join(_ARCHITECTURES)}) itself; {model_dir} is "
                         f"{config.get('model_type')!r}: convert it with llama.cpp's convert_hf_to_gguf.py (F16) and give "
                         f"that .gguf to compress gguf to quantize it")
    if config.get("rope_scaling") or config.get("sliding_window"):
        raise UsageError(f"compress gguf writes plain rotary attention; {model_dir} has rope_scaling or a sliding "
                         f"window: convert it with llama.cpp's convert_hf_to_gguf.py and quantize that .gguf")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    spec = json.loads((model_dir / "tokenizer.json").read_text()) if (model_dir / "tokenizer.json").is_file() else {}
    if (spec.get("model") or {}).get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise UsageError(f"compress gguf writes byte-level BPE tokenizers (GPT-2's and Llama 3's kind); the tokenizer of "
                         f"{model_dir} is not one: convert it with llama.cpp's convert_hf_to_gguf.py")
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    c = model.config
    heads, kv_heads = c.num_attention_heads, c.num_key_value_heads or c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    arch = gguf.MODEL_ARCH.LLAMA
    writer = gguf.GGUFWriter(str(out_file), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(model_dir.name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_vocab_size(c.vocab_size)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(getattr(c, "rope_theta", None) or (c.rope_parameters or {}).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(c.rms_norm_eps))
    _add_tokenizer(writer, tokenizer, spec, c.vocab_size)
    names = gguf.get_tensor_name_map(arch, c.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue  # llama.cpp reads the output projection from token_embd when the file has no output.weight
        if "rotary_emb" in name:
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise UsageError(f"compress gguf: {model_dir} has tensor {name!r}, which llama.cpp's Llama has no place for")
        data = tensor.detach().numpy()
        if name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        writer.add_tensor(target, data.astype("float32" if data.ndim == 1 else "float16"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


def _permute(weights: Any, heads: int) -> Any:
    """HF's rotary layout (each head's two halves) to llama.cpp's (interleaved pairs), as convert_hf_to_gguf.py does."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _add_tokenizer(writer: Any, tokenizer: Any, spec: dict, vocab_size: int) -> None:
    """The vocabulary in id order (added special tokens as control tokens), the merges, and the special ids."""
    import gguf

    added = {t["id"]: t for t in spec.get("added_tokens") or ()}
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if i in added and added[i].get("special") else
                         gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL)
        else:  # a config wider than its tokenizer (padded embeddings), as convert_hf_to_gguf.py fills it
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in (spec.get("model") or {}).get("merges") or ()]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if tokenizer.bos_token_id is not None:
        writer.add_bos_token_id(tokenizer.bos_token_id)
    if tokenizer.eos_token_id is not None:
        writer.add_eos_token_id(tokenizer.eos_token_id)
    starts = tokenizer("a")["input_ids"][:1]
    writer.add_add_bos_token(bool(starts) and starts[0] == tokenizer.bos_token_id)


def quantize(in_file: Path, out_file: Path, kind: str, *, threads: int | None = None) -> Path:
    """``in_file`` quantized to ``kind`` by llama.cpp's ``llama_model_quantize`` into ``out_file``."""
    from .models.llama_cpp_runtime import llama_cpp_module, logged, threads_default

    llama_cpp = llama_cpp_module()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = TYPES[kind]
    params.allow_requantize = True  # a Q4_1 file to F16 and back down: dequantized first
    params.nthread = threads or threads_default()
    logged.clear()
    status = llama_cpp.llama_model_quantize(str(in_file).encode(), str(out_file).encode(), ctypes.byref(params))
    if status != 0 or not out_file.is_file():
        raise ModelLoadError(f"llama.cpp could not quantize {in_file} to {kind} (llama_model_quantize returned {status}): "
                             f"{' | '.join(list(logged)[-4:]) or 'no reason logged'}")
    return out_file


def compress_gguf(source: Path, out_dir: Path, kind: str) -> Path:
    """``source`` (an HF Llama-family directory or a .gguf) as ``out_dir/model.<kind>.gguf``, with its tokenizer
    files beside it and a manifest; returns the file."""
    from importlib.metadata import version

    from .compress import _copy_tokenizer, _write_manifest
    from .models.gguf import read_facts

    if kind not in TYPES:
        raise UsageError(f"Expected --type to be one of {', '.join(TYPES)} but got {kind!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / f"model.{kind}.gguf"
    if source.suffix == ".gguf":
        read_facts(source)  # a damaged file is named before llama.cpp reads it
        quantize(source, out_file, kind)
        _copy_tokenizer(source.parent, out_dir)  # the tokenizer files beside a GGUF, where it has them
    else:
        if kind == "F16":
            hf_to_gguf(source, out_file)
        else:
            with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
                quantize(hf_to_gguf(source, Path(scratch) / "model.F16.gguf"), out_file, kind)
        _copy_tokenizer(source, out_dir)
    facts = read_facts(out_file)
    _write_manifest(out_dir, f"gguf-{kind.lower()}", source, llama_cpp_python=version("llama-cpp-python"),
                    gguf=version("gguf"), file_type=facts.file_type, tensor_types=facts.tensor_types,
                    file=out_file.name)
    return out_file
