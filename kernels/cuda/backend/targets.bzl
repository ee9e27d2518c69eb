"""The CUDA backend's targets, declared twice by BUILD.bazel: against the CUDA toolkit and the
nvcc-built kernels (--config=cuda only), and against the CPU emulation of CUDA
(//kernels/cuda/emulation, every build), whose names end in `_emulated`."""

# The bundled model files, and the llama.cpp references the comparisons read.
_MODELS = [
    "//models:bundled_model",
    "//tests/data:models",
]
_MODELS_AND_REFS = _MODELS + ["//tests/data:refs"]

def cuda_backend_targets(
        suffix,
        cuda_deps,
        cudart,
        target_compatible_with,
        library_tags,
        test_tags,
        test_size):
    """Declares decode_graphs, cuda_backend and the backend's tests, each name + suffix.

    Args:
      suffix: appended to every target name.
      cuda_deps: kernels, cuBLAS, tensor parallelism and CUDA headers for cuda_backend.
      cudart: the CUDA runtime (or its emulation) for decode_graphs.
      target_compatible_with: constraint of every target.
      library_tags: tags of the libraries.
      test_tags: tags of the tests that need a device.
      test_size: their size (the emulated ones run minutes on a CPU).
    """
    native.cc_library(
        name = "decode_graphs" + suffix,
        srcs = ["decode_graphs.cc"],
        hdrs = ["decode_graphs.h"],
        tags = library_tags,
        target_compatible_with = target_compatible_with,
        deps = [
            "//common:check",
            "//kernels:backend",
            "//third_party/system:absl",
            "//third_party/system:spdlog",
        ] + cudart,
    )

    # CudaBackend, split by concept over cuda_backend*.cc; cuda_backend_impl.h (the class,
    # with CUDA types) is private to this library, so it sits in srcs.
    native.cc_library(
        name = "cuda_backend" + suffix,
        srcs = [
            "cuda_backend.cc",
            "cuda_backend_graphs.cc",
            "cuda_backend_impl.h",
            "cuda_backend_matmul.cc",
            "cuda_backend_ops.cc",
            "tensor_parallel_backends.cc",
        ],
        hdrs = ["cuda_backend.h"],
        tags = library_tags,
        target_compatible_with = target_compatible_with,
        deps = [
            ":decode_graphs" + suffix,
            "//common:check",
            "//common:status",
            "//kernels:backend",
            "//kernels/cuda:decode_kernel",
            "//kernels/cuda:prefill_kernel",
            "//third_party/system:absl",
            "//third_party/system:spdlog",
        ] + cuda_deps,
    )

    # Every Backend op against the CPU backend on random inputs; KvCacheStorage's block copies.
    native.cc_test(
        name = "cuda_backend_test" + suffix,
        size = test_size,
        srcs = [
            "counter_value.h",
            "cuda_backend_test.cc",
            "device_skip.h",
        ],
        tags = test_tags,
        target_compatible_with = target_compatible_with,
        deps = [
            ":cuda_backend" + suffix,
            "//common:float16",
            "//kernels:backend",
            "//kernels/cpu:cpu_backend",
            "//model:kv_cache_storage",
            "//model:llama_config",
            "//third_party/system:gtest_main",
        ] + cudart,
    )

    # Decode steps as CUDA graphs: replays bitwise equal to the same recorded steps run
    # eagerly, close to plain eager execution; captures, replays and eager steps counted as
    # expected. The shape-policy tests need no device.
    native.cc_test(
        name = "cuda_graph_test" + suffix,
        size = test_size,
        srcs = [
            "cuda_graph_test.cc",
            "device_skip.h",
        ],
        data = _MODELS,
        tags = test_tags + ["requires-model"],
        target_compatible_with = target_compatible_with,
        deps = [
            ":cuda_backend" + suffix,
            ":decode_graphs" + suffix,
            "//kernels:backend",
            "//model:gguf",
            "//model:kv_cache_storage",
            "//model:llama_model",
            "//model:step_batch",
            "//third_party/system:gtest_main",
        ],
    )

    # Greedy generation of the bundled model on CUDA against the CPU backend (F32 and F16
    # files).
    native.cc_test(
        name = "cuda_greedy_test" + suffix,
        size = test_size,
        srcs = [
            "counter_value.h",
            "cuda_greedy_test.cc",
            "device_skip.h",
        ],
        data = _MODELS_AND_REFS,
        tags = test_tags + ["requires-model"],
        target_compatible_with = target_compatible_with,
        deps = [
            ":cuda_backend" + suffix,
            "//kernels:backend",
            "//kernels/cpu:cpu_backend",
            "//kvcache:block_pool",
            "//model:gguf",
            "//model:kv_cache_storage",
            "//model:llama_model",
            "//model:step_batch",
            "//scheduler:offline_generator",
            "//third_party/system:gtest_main",
            "//tests:llama_cpp_refs",
        ],
    )

    # The serving engine on CUDA: swap and recompute preemption, copy-on-write of a shared
    # prompt block on the device; greedy tokens against llama.cpp's (F32 file, fp32 KV).
    native.cc_test(
        name = "cuda_engine_test" + suffix,
        size = test_size,
        srcs = [
            "cuda_engine_test.cc",
            "device_skip.h",
        ],
        data = _MODELS_AND_REFS,
        tags = test_tags + ["requires-model"],
        target_compatible_with = target_compatible_with,
        deps = [
            ":cuda_backend" + suffix,
            "//kernels:backend",
            "//model:gguf",
            "//model:llama_model",
            "//model:tokenizer",
            "//scheduler:engine",
            "//third_party/system:absl",
            "//third_party/system:gtest_main",
            "//tests:greedy_requests",
            "//tests:llama_cpp_refs",
            "//tools/make_model",
        ],
    )

    # The model split over 2 GPUs (NCCL, a thread per rank) against 1 GPU, and a one-rank
    # group against a lone backend; skips without devices (the 2-GPU case without 2 of them).
    native.cc_test(
        name = "cuda_tensor_parallel_test" + suffix,
        size = test_size,
        srcs = [
            "cuda_tensor_parallel_test.cc",
            "device_skip.h",
        ],
        data = _MODELS_AND_REFS,
        tags = test_tags + ["requires-model"],
        target_compatible_with = target_compatible_with,
        deps = [
            ":cuda_backend" + suffix,
            "//kernels:backend",
            "//model:gguf",
            "//model:chunked_prompt_logits",
            "//model:kv_cache_storage",
            "//model:llama_model",
            "//model:step_batch",
            "//model:tensor_parallel_model",
            "//third_party/system:gtest_main",
            "//tests:llama_cpp_refs",
        ] + cudart,
    )
