"""C++ protobuf + gRPC code generation with Debian's /usr/bin/protoc and grpc_cpp_plugin.

Bazel 4.2.3's own proto_library/cc_proto_library would build protoc from source (fetching
@com_google_protobuf); offline we call the system compiler from a genrule instead.

Usage (BUILD.bazel):

    load("//third_party/proto:cc_grpc.bzl", "cc_grpc_library")

    # proto/glimpse/v1/common.proto: messages only
    cc_grpc_library(
        name = "common_cc_proto",
        srcs = ["glimpse/v1/common.proto"],
        grpc = False,
    )

    # proto/glimpse/v1/generate.proto: `import "proto/glimpse/v1/common.proto";` + a service
    cc_grpc_library(
        name = "generate_cc_grpc",
        srcs = ["glimpse/v1/generate.proto"],
        deps = [":common_cc_proto"],
    )

and in C++: `#include "proto/glimpse/v1/generate.grpc.pb.h"` (and `.pb.h`).

Rules:
  * Import paths are relative to the workspace root (`import "proto/x/y.proto";`);
    well-known types (`google/protobuf/timestamp.proto`, ...) come from /usr/include.
  * `deps` are other cc_grpc_library targets whose .proto files are imported; their
    sources are made visible to protoc and their C++ code is linked.
  * Generated files land next to the .proto in bazel-bin:
    foo.pb.{h,cc} always, foo.grpc.pb.{h,cc} when grpc = True (the default).
  * Generated code is not held to the project's -Werror (it is not ours to fix).
"""

_PROTOC = "/usr/bin/protoc"
_GRPC_PLUGIN = "/usr/bin/grpc_cpp_plugin"

def _strip_proto(src):
    if not src.endswith(".proto"):
        fail("cc_grpc_library: srcs must be .proto files, got " + src)
    return src[:-len(".proto")]

def cc_grpc_library(name, srcs, deps = [], grpc = True, visibility = None, testonly = False, **kwargs):
    """Generates and compiles C++ code for `srcs` (.proto files in this package).

    Args:
      name: name of the resulting cc_library.
      srcs: .proto files in this package (paths relative to the package).
      deps: other cc_grpc_library targets this one's .proto files import.
      grpc: also generate gRPC service stubs (`.grpc.pb.{h,cc}`); needs a `service`.
      visibility: visibility of the cc_library (and of its proto sources filegroup).
      testonly: forwarded to every generated target.
      **kwargs: forwarded to the cc_library (e.g. tags).
    """
    bases = [_strip_proto(s) for s in srcs]
    hdrs = [b + ".pb.h" for b in bases]
    cc_srcs = [b + ".pb.cc" for b in bases]
    if grpc:
        hdrs += [b + ".grpc.pb.h" for b in bases]
        cc_srcs += [b + ".grpc.pb.cc" for b in bases]

    # All .proto files protoc may need to read: ours plus, transitively, those of our deps.
    native.filegroup(
        name = name + "_proto_srcs",
        srcs = srcs + [d + "_proto_srcs" for d in deps],
        visibility = visibility,
        testonly = testonly,
    )

    # protoc writes <out>/<path given on the command line>; with `-I.` the path is the
    # workspace-relative one, so <out> is the root of the output tree ($(GENDIR)).
    pkg = native.package_name()
    proto_paths = " ".join([(pkg + "/" + s) if pkg else s for s in srcs])
    grpc_flags = ""
    if grpc:
        grpc_flags = "--plugin=protoc-gen-grpc=%s --grpc_out=$(GENDIR) " % _GRPC_PLUGIN
    native.genrule(
        name = name + "_codegen",
        srcs = [":" + name + "_proto_srcs"],
        outs = hdrs + cc_srcs,
        cmd = ("%s -I. -I/usr/include --cpp_out=$(GENDIR) " % _PROTOC) + grpc_flags + proto_paths,
        message = "protoc (system) %s" % ", ".join(srcs),
        testonly = testonly,
        visibility = ["//visibility:private"],
    )

    system_deps = ["//third_party/system:grpc"] if grpc else ["//third_party/system:protobuf"]
    native.cc_library(
        name = name,
        srcs = cc_srcs,
        hdrs = hdrs,
        # Generated code: not ours to keep warning-free.
        copts = ["-w", "-Wno-error"],
        deps = deps + system_deps,
        visibility = visibility,
        testonly = testonly,
        **kwargs
    )
