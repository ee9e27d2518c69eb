"""Source lists of //kernels/cuda, shared by its nvcc build and the CPU-emulated build
(//kernels/cuda/emulation)."""

# Library sources (one concept per file), <name>.cu.
KERNEL_SRCS = [
    "attention_common",
    "rmsnorm",
    "rope",
    "silu_mul",
    "kv_append",
    "paged_decode_attention",
    "paged_decode_mma",
    "prefill_attention",
    "prefill_attention_f32",
    "tree_attention",
    "sampling",
    "argmax_rows",
    "topk_rows",
    "verify_accept",
    "score_export",
    # The Backend adapter's own ops (backend/): weights and activations to bf16, embedding
    # lookup, element-wise ops, RoPE from a host (cos, sin) table.
    "weight_convert",
    "embedding",
    "elementwise",
    "rope_table",
]

# Tests: <name>.cc, each linked with the harness (testing/) into a test <name>.
KERNEL_TESTS = [
    "rmsnorm_test",
    "rope_test",
    "silu_mul_test",
    "kv_append_test",
    "paged_decode_attention_test",
    "prefill_attention_test",
    "score_export_test",
    "sampling_test",
    "argmax_rows_test",
    "topk_rows_test",
    "verify_accept_test",
    "weight_convert_test",
    "embedding_test",
    "elementwise_test",
    "rope_table_test",
]
