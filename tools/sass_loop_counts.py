#!/usr/bin/env python3
"""Counts the SASS instructions of each loop of the kernels whose names match a regex.

    sass_loop_counts.py SASS_FILE REGEX

SASS_FILE is `cuobjdump -sass` output (tools/sass_counts.sh makes it). A loop is the range from
a backward branch's target to the branch; nested and overlapping ranges are all listed, each
with its instruction count by opcode (static: a branch inside the loop counts whether taken or
not). Used to count a kernel's issue slots per byte it streams (kernels/cuda/BENCHMARKS.md)
where no GPU is at hand to time it.
"""
import collections
import re
import sys


def parse_functions(text):
    for chunk in re.split(r"\n\s*Function : ", text)[1:]:
        name = chunk.split("\n", 1)[0].strip()
        instructions = []
        for line in chunk.split("\n"):
            m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
            if m:
                instructions.append((int(m.group(1), 16), m.group(2).strip()))
        yield name, instructions


def opcode(instruction):
    without_predicate = re.sub(r"^@!?U?P\w+\s+", "", instruction)
    return without_predicate.split()[0].split(".")[0]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path, pattern = sys.argv[1], sys.argv[2]
    found = False
    for name, instructions in parse_functions(open(path).read()):
        if not re.search(pattern, name):
            continue
        found = True
        index = {address: i for i, (address, _) in enumerate(instructions)}
        print(f"{name}: {len(instructions)} instructions")
        for i, (address, text) in enumerate(instructions):
            m = re.search(r"\bBRA\b.*?(0x[0-9a-f]+)", text)
            if not m:
                continue
            target = int(m.group(1), 16)
            if target >= address or target not in index:
                continue
            body = instructions[index[target]:i + 1]
            counts = collections.Counter(opcode(t) for _, t in body)
            top = ", ".join(f"{op} {n}" for op, n in counts.most_common(12))
            print(f"  loop {target:#x}-{address:#x}: {len(body)} instructions ({top})")
    if not found:
        sys.exit(f"no function matches {pattern!r} in {path}")


if __name__ == "__main__":
    main()
