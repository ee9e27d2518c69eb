#!/usr/bin/python3
"""Generates tests/data/chat_templates/cases.json: the expected renders of every fixture
template (tests/data/chat_templates/<name>.jinja) for a fixed set of conversations, produced by
an independent renderer -- Debian's python3-jinja2, configured the way Hugging Face transformers
renders chat templates (ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, a
raise_exception() global, bos_token / eos_token / add_generation_prompt passed as variables).

model/chat_template_test.cc checks that glimpse's native renderer (model/chat_template.cc)
reproduces every render byte for byte, and fails with InvalidArgument wherever jinja2 raised.
CI only reads the committed cases.json; it does not need jinja2.

Regenerate (after editing a .jinja fixture or the CASES below), from the repository root:
    apt-get install -y python3-jinja2
    /usr/bin/python3 tools/gen_chat_template_fixtures.py
and commit tests/data/chat_templates/cases.json.
"""

import json
import os
import sys

import jinja2
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

FIXTURE_DIR = os.path.join("tests", "data", "chat_templates")

# Fixture name -> (family glimpse must detect, bos_token, eos_token), the special-token texts of
# a model that ships that template.
TEMPLATES = {
    "chatml": ("chatml", "<s>", "<|im_end|>"),
    "llama2": ("llama2", "<s>", "</s>"),
    "llama3": ("llama3", "<|begin_of_text|>", "<|eot_id|>"),
    "mistral": ("mistral", "<s>", "</s>"),
    "zephyr": ("zephyr", "<s>", "</s>"),
    "gemma": ("gemma", "<bos>", "<eos>"),
    "gemma3": ("gemma", "<bos>", "<eos>"),
    "phi3": ("phi3", "<s>", "<|endoftext|>"),
}


def m(role, content):
    return {"role": role, "content": content}


SYS = m("system", "You are a helpful assistant.")
U1 = m("user", "Hello!")
A1 = m("assistant", "Hi there. How can I help?")
U2 = m("user", "Write a haiku about the sea.")
A2 = m("assistant", "Waves fold into foam\nsalt wind carries gull voices\nthe tide keeps its time")

# (name, messages); each is rendered with add_generation_prompt false and true.
CASES = [
    ("single_user", [U1]),
    ("system_user", [SYS, U1]),
    ("multi_turn", [U1, A1, U2]),
    ("multi_turn_ending_with_assistant", [U1, A1, U2, A2]),
    ("system_multi_turn", [SYS, U1, A1, U2]),
    ("system_only", [SYS]),
    # Surrounding whitespace: Llama 2 strips it, Llama 3 and Gemma trim it, the rest keep it.
    # Includes Unicode whitespace (NBSP, ideographic space) and ASCII separators \x1c-\x1f,
    # which Python's str.strip() also removes.
    ("whitespace_around_content",
     [m("system", "  \n be terse \t"), m("user", "\n  What is 2+2?\u00a0 \n"),
      m("assistant", " 4\u3000"), m("user", "\x1f\x0bthanks\x0c\r\n")]),
    ("empty_contents", [m("system", ""), m("user", ""), m("assistant", ""), m("user", "")]),
    ("non_ascii_and_markup",
     [m("user", "Grüße, 你好 👋 {{ not a template }} {% raw %} <|im_end|> [INST]")]),
    # Role-order violations: templates that check alternation raise.
    ("two_users_in_a_row", [U1, U2]),
    ("starts_with_assistant", [A1, U1]),
    ("system_in_the_middle", [U1, A1, SYS, U2]),
    ("system_after_first_user", [U1, SYS]),
    ("two_systems", [SYS, SYS, U1]),
]


def raise_exception(message):
    raise TemplateError(message)


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    templates = {}
    compiled = {}
    for name, (family, bos, eos) in TEMPLATES.items():
        filename = name + ".jinja"
        with open(os.path.join(FIXTURE_DIR, filename), encoding="utf-8") as f:
            compiled[name] = env.from_string(f.read())
        templates[name] = {"file": filename, "family": family, "bos_token": bos, "eos_token": eos}

    cases = []
    for case_name, messages in CASES:
        for add_generation_prompt in (False, True):
            expected = {}
            for name, (family, bos, eos) in TEMPLATES.items():
                try:
                    output = compiled[name].render(messages=messages, bos_token=bos,
                                                   eos_token=eos,
                                                   add_generation_prompt=add_generation_prompt)
                    expected[name] = {"output": output}
                except TemplateError as e:
                    expected[name] = {"error": str(e)}
            cases.append({
                "name": case_name + ("_with_generation_prompt" if add_generation_prompt else ""),
                "messages": messages,
                "add_generation_prompt": add_generation_prompt,
                "expected": expected,
            })

    out = {
        "generated_by": "tools/gen_chat_template_fixtures.py",
        "renderer": "jinja2 %s (%s), ImmutableSandboxedEnvironment(trim_blocks=True, "
                    "lstrip_blocks=True)" % (jinja2.__version__, jinja2.__file__),
        "templates": templates,
        "cases": cases,
    }
    path = os.path.join(FIXTURE_DIR, "cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote %s: %d templates x %d cases" % (path, len(templates), len(cases)),
          file=sys.stderr)


if __name__ == "__main__":
    main()
