#!/usr/bin/env python3
"""Writes a tiny llama-architecture GGUF model with random weights, for tests and demos.

Two layers, 64 wide, a byte-level vocabulary (259 tokens: <unk>, <s>, </s> and the 256 bytes) with
the "llama" tokenizer model, and a simple chat template. It loads in llama.cpp (and
llama-cpp-python's server) in a second or two and answers with gibberish, but every step is real
llama.cpp inference. Nothing is downloaded. Usage: make_tiny_gguf.py OUT.gguf [--seed N]
"""
import argparse

import numpy as np
from gguf import GGUFWriter, PoolingType, TokenType

N_EMBD, N_FF, N_LAYER, N_HEAD, N_CTX = 64, 128, 2, 4, 512


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--name", default="switchyard-tiny")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    tokens = [b"<unk>", b"<s>", b"</s>"] + [("<0x%02X>" % i).encode() for i in range(256)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    n_vocab = len(tokens)

    w = GGUFWriter(args.out, "llama")
    w.add_name(args.name)
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)  # all F32
    w.add_pooling_type(PoolingType.MEAN)  # one vector per text in embedding mode
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(
        "{% for message in messages %}<{{ message['role'] }}>{{ message['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )

    def t(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w.add_tensor("token_embd.weight", t(n_vocab, N_EMBD))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    w.add_tensor("output.weight", t(n_vocab, N_EMBD))
    for i in range(N_LAYER):
        w.add_tensor("blk.%d.attn_norm.weight" % i, np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor("blk.%d.%s.weight" % (i, name), t(N_EMBD, N_EMBD))
        w.add_tensor("blk.%d.ffn_norm.weight" % i, np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor("blk.%d.ffn_gate.weight" % i, t(N_FF, N_EMBD))
        w.add_tensor("blk.%d.ffn_up.weight" % i, t(N_FF, N_EMBD))
        w.add_tensor("blk.%d.ffn_down.weight" % i, t(N_EMBD, N_FF))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", args.out)


if __name__ == "__main__":
    main()
