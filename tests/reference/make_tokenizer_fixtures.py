"""Reference tokenizers, expected token ids and rendered chat templates for the tokenizer tests,
written into <fixture_dir>/tokenizers/.

Nothing is downloaded. The byte-level tokenizers take the vocabulary and merges of the default
model's GGUF (read with gguf-py) and put around them the pipelines their families publish:
  smollm2/     SmolLM2-135M-Instruct: Digits(individual) + ByteLevel(use_regex), ByteLevel
               post-processor and decoder, the 17 special tokens, its tokenizer_config.json
  qwen2/       Qwen2: NFC normalizer, Split(Qwen2 regex, Isolated) + ByteLevel(no regex), plus a
               normalized non-special added token ("naïve") matched after NFC
  llama3/      Llama 3: Split(Llama 3 regex) + ByteLevel(no regex), ignore_merges, the Llama 3
               special tokens appended, TemplateProcessing that adds <|begin_of_text|>, plus an
               lstrip/rstrip special token and a single_word token
The SentencePiece tokenizers come from a BPE model trained here with the sentencepiece package on a
seeded varied text, turned into tokenizer.json by transformers:
  spm/         transformers' LlamaTokenizer (Metaspace prepend_scheme "first", byte_fallback,
               Replace/ByteFallback/Fuse/Strip decoder, BOS added)
  spm_legacy/  the same model as the legacy Llama 2 converter writes it: Prepend("▁") +
               Replace(" ", "▁") normalizer, no pre-tokenizer
  spm_metaspace/  the same model with Metaspace(always, split) as pre-tokenizer and a Metaspace,
               ByteFallback, Fuse decoder
GGUF files written with gguf-py:
  smollm2.gguf   smollm2's vocabulary as tokenizer model gpt2, pre "smollm"
  qwen2.gguf, llama3.gguf  the same vocabulary with pre "qwen2" and "llama-bpe" (llama3.gguf
                 adds the Llama 3 special tokens as control tokens and their BOS); their
                 expectations (expected/gguf_qwen2.json, expected/gguf_llama3.json) come from
                 the plain Qwen2 and Llama 3 pipelines, without the fixture-only added tokens
  spm.gguf       the SentencePiece model as tokenizer model llama, with scores and token types
  bad/*.gguf     a token_type count that differs from the token count, an unknown pre, an
                 unsupported tokenizer model
bad/<case>/     tokenizer.json files that must be rejected (missing file, invalid JSON, no model,
                merges naming unknown tokens, a token id far past the vocabulary, WordPiece and
                Unigram models, an unknown pre-tokenizer)

expected/<name>.json, from the Hugging Face tokenizers library:
  texts: per text, ids without and with special tokens, decode(ids) with and without skipping
         special tokens
  random_decode: random id sequences (splitting multi-byte characters, invalid byte runs) and
         their decodes
  vocab_size, bos_id, eos_id, add_bos (what encode with special tokens does)
chat/<name>.json: a chat template source and conversations rendered by transformers'
  apply_chat_template(messages, tokenize=False, add_generation_prompt=...), with the tokenizer
  directory whose BOS/EOS the template sees.

Usage: make_tokenizer_fixtures.py <fixture_dir>
"""
import codecs
import json
import os
import random
import shutil
import sys
import tempfile

import gguf
import numpy as np
import sentencepiece as spm
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors
from transformers import LlamaTokenizer, PreTrainedTokenizerFast
from transformers.tokenization_utils_base import generate_merges

SEED = 20241122
METASPACE = "\u2581"

# Split patterns from the Qwen2 and Llama 3 tokenizer.json files.
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>"]


def jinja(escaped):
    """A template as its publisher's JSON/JS string spells it (\\n = newline, \\\\n = the Jinja
    escape), turned into the template source."""
    return codecs.decode(escaped, "unicode_escape")


# Qwen2.5-7B-Instruct's chat_template.
QWEN25_TEMPLATE = jinja(r"""{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}\n        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n""")

# Qwen3-0.6B's chat_template.
QWEN3_TEMPLATE = jinja(r"""{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0].role == 'system' %}\n        {{- messages[0].content + '\\n\\n' }}\n    {%- endif %}\n    {{- \"# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0].role == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\n{%- for message in messages[::-1] %}\n    {%- set index = (messages|length - 1) - loop.index0 %}\n    {%- if ns.multi_step_tool and message.role == \"user\" and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}\n        {%- set ns.multi_step_tool = false %}\n        {%- set ns.last_query_index = index %}\n    {%- endif %}\n{%- endfor %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- elif message.role == \"assistant\" %}\n        {%- set content = message.content %}\n        {%- set reasoning_content = '' %}\n        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}\n            {%- set reasoning_content = message.reasoning_content %}\n        {%- else %}\n            {%- if '</think>' in message.content %}\n                {%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}\n                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}\n            {%- endif %}\n        {%- endif %}\n        {%- if loop.index0 > ns.last_query_index %}\n            {%- if loop.last or (not loop.last and reasoning_content) %}\n                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}\n            {%- else %}\n                {{- '<|im_start|>' + message.role + '\\n' + content }}\n            {%- endif %}\n        {%- else %}\n            {{- '<|im_start|>' + message.role + '\\n' + content }}\n        {%- endif %}\n        {%- if message.tool_calls %}\n            {%- for tool_call in message.tool_calls %}\n                {%- if (loop.first and content) or (not loop.first) %}\n                    {{- '\\n' }}\n                {%- endif %}\n                {%- if tool_call.function %}\n                    {%- set tool_call = tool_call.function %}\n                {%- endif %}\n                {{- '<tool_call>\\n{\"name\": \"' }}\n                {{- tool_call.name }}\n                {{- '\", \"arguments\": ' }}\n                {%- if tool_call.arguments is string %}\n                    {{- tool_call.arguments }}\n                {%- else %}\n                    {{- tool_call.arguments | tojson }}\n                {%- endif %}\n                {{- '}\\n</tool_call>' }}\n            {%- endfor %}\n        {%- endif %}\n        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}\n        {%- if loop.first or (messages[loop.index0 - 1].role != \"tool\") %}\n            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n    {%- if enable_thinking is defined and enable_thinking is false %}\n        {{- '<think>\\n\\n</think>\\n\\n' }}\n    {%- endif %}\n{%- endif %}""")

# Meta-Llama-3-8B-Instruct's chat_template.
LLAMA3_TEMPLATE = jinja(r"""{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}""")

# Llama-3.1-8B-Instruct's chat_template.
LLAMA31_TEMPLATE = jinja(r"""{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%- endif %}\n{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_message = true %}\n{%- endif %}\n{%- if not date_string is defined %}\n    {%- set date_string = "26 Jul 2024" %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n\n{#- This block extracts the system message, so we can slot it into the right place. #}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = "" %}\n{%- endif %}\n\n{#- System message + builtin tools #}\n{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n{%- if builtin_tools is defined or tools is not none %}\n    {{- "Environment: ipython\\n" }}\n{%- endif %}\n{%- if builtin_tools is defined %}\n    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\\n\\n"}}\n{%- endif %}\n{{- "Cutting Knowledge Date: December 2023\\n" }}\n{{- "Today Date: " + date_string + "\\n\\n" }}\n{%- if tools is not none and not tools_in_user_message %}\n    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}\n    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}\n    {{- "Do not use variables.\\n\\n" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- "\\n\\n" }}\n    {%- endfor %}\n{%- endif %}\n{{- system_message }}\n{{- "<|eot_id|>" }}\n\n{#- Custom tools are passed in a user message with some extra guidance #}\n{%- if tools_in_user_message and not tools is none %}\n    {#- Extract the first user message so we can plug it in here #}\n    {%- if messages | length != 0 %}\n        {%- set first_user_message = messages[0]['content']|trim %}\n        {%- set messages = messages[1:] %}\n    {%- else %}\n        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}\n{%- endif %}\n    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n    {{- "Given the following functions, please respond with a JSON for a function call " }}\n    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}\n    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}\n    {{- "Do not use variables.\\n\\n" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- "\\n\\n" }}\n    {%- endfor %}\n    {{- first_user_message + "<|eot_id|>"}}\n{%- endif %}\n\n{%- for message in messages %}\n    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n    {%- elif 'tool_calls' in message %}\n        {%- if not message.tool_calls|length == 1 %}\n            {{- raise_exception("This model only supports single tool-calls at once!") }}\n        {%- endif %}\n        {%- set tool_call = message.tool_calls[0].function %}\n        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}\n            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n            {{- "<|python_tag|>" + tool_call.name + ".call(" }}\n            {%- for arg_name, arg_val in tool_call.arguments | items %}\n                {{- arg_name + '="' + arg_val + '"' }}\n                {%- if not loop.last %}\n                    {{- ", " }}\n                {%- endif %}\n                {%- endfor %}\n            {{- ")" }}\n        {%- else  %}\n            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n            {{- '{"name": "' + tool_call.name + '", ' }}\n            {{- '"parameters": ' }}\n            {{- tool_call.arguments | tojson }}\n            {{- "}" }}\n        {%- endif %}\n        {%- if builtin_tools is defined %}\n            {#- This means we're in ipython mode #}\n            {{- "<|eom_id|>" }}\n        {%- else %}\n            {{- "<|eot_id|>" }}\n        {%- endif %}\n    {%- elif message.role == "tool" or message.role == "ipython" %}\n        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}\n        {%- if message.content is mapping or message.content is iterable %}\n            {{- message.content | tojson }}\n        {%- else %}\n            {{- message.content }}\n        {%- endif %}\n        {{- "<|eot_id|>" }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n""")

# A template in no family the engine renders natively: it must fall back to Plain.
UNKNOWN_TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)


# ---------------------------------------------------------------- texts


def varied_texts(rng):
    long_paragraph = " ".join([
        "Tokenizers turn text into integers, and every detail matters:",
        "whitespace   runs,\ttabs,\nnewlines, numbers like 1234567890 and 3.14159,",
        "accents (café, naïve, Ångström), CJK (東京は日本の首都です。你好，世界！),",
        "emoji (👩‍👩‍👧‍👦 🏳️‍🌈 👍🏽), and code: for (int i = 0; i < n; ++i) { s += a[i]; }",
    ] * 12)
    words = ["the", "tokenizer", "café", "naïve", "1999", "3.5", "東京", "😀", "don't", "we'll",
             "  ", "\t", "\n", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "x=1;", "λ", "Ω",
             "e\u0301", "n\u0303o", "👨‍💻", "....", "--", "USER", "it's", "THEY'LL", "ﬁ", "Ⅻ"]
    random_mixes = ["".join(rng.choice(words) + rng.choice(["", " ", "  ", "\n"]) for _ in range(40))
                    for _ in range(6)]
    return fixed_texts(random_mixes, long_paragraph) + random_unicode_texts(rng)


def random_unicode_texts(rng):
    """Random strings over code points where tokenizers differ easily: every kind of whitespace,
    digits of several scripts, combining marks, apostrophes, letters, symbols, emoji parts."""
    pools = [
        list(range(0x20, 0x7F)) * 4,
        [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0xA0, 0x1680, 0x180E, 0x2000, 0x2007, 0x200A, 0x200B,
         0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0x1C, 0x1F],
        list(range(0xC0, 0x180)), list(range(0x300, 0x370)), list(range(0x660, 0x66A)),
        list(range(0x966, 0x970)), list(range(0xFF10, 0xFF1A)), [0x2160, 0x2167, 0xB2, 0xBD, 0x3007],
        list(range(0x4E00, 0x4E80)), list(range(0x3040, 0x30A0)), list(range(0xAC00, 0xAC40)),
        [0x1F600, 0x1F44D, 0x1F3FD, 0x200D, 0xFE0F, 0x1F468, 0x1F4BB, 0x1F1FA, 0x1F1F8],
        [ord(c) for c in "'’sStTlLdDmMvVeErR"] * 3,
    ]
    out = []
    for _ in range(60):
        n = rng.randint(1, 40)
        out.append("".join(chr(rng.choice(rng.choice(pools))) for _ in range(n)))
    return out


def fixed_texts(random_mixes, long_paragraph):
    return [
        "", " ", "  ", "\t", "\n", "\n\n\n", " \t \n ", "Hello world", " Hello world ",
        "Hello  world   again    and\tagain\t\ttabs\n\nnew  lines \n\n  mixed", "   leading spaces",
        "trailing spaces   ", "12345678901234567890", "3.14159 2,718 1e-10 0x1F 007",
        "In 2024, 1,000,000 people paid $99.99.", "def f(x):\n    return x ** 2  # square\n",
        "int main() {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n", "if (a != b && c <= d) { x->y[3] = 'z'; }",
        "café naïve résumé façade Ångström Straße", "cafe\u0301 nai\u0308ve (combining marks)",
        "e\u0301\u0301\u0301 a\u030a o\u0308\u0304", "東京は日本の首都です。", "你好，世界！这是一个测试。",
        "한국어 텍스트입니다", "Россия и Україна", "مرحبا بالعالم", "😀😃😄 👍🏽 🇺🇸 ❤️",
        "👩‍👩‍👧‍👦 family, 👨‍💻 coder, 🏳️‍🌈 flag", "It's we'll they're I'm you've he'd SHE'LL IT'S",
        "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
        "text<|im_end|>more<|endoftext|>", "<s>Hello</s> <s> spaced </s>",
        "special <|im_start|> in the middle", "a naïve idea and a nai\u0308ve one",
        "mask <|mask|> here and<|mask|>there", "wordtok alone, xwordtok inside, wordtok_ no, (wordtok)",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
        "\u2581already\u2581marked \u2581", "zero\u200bwidth and\u00a0nbsp", "Ⅻ ² ½ ﬁ ㎏",
        "tab\tat\tevery\tword", "\r\nwindows\r\nlines\r\n",
    ] + random_mixes + [long_paragraph]


def long_text(rng):
    """About 100K tokens of mixed prose, numbers and code, for the speed check."""
    pieces = ["The quick brown fox jumps over the lazy dog.", "Numbers: 31415926535 and 2718281828.",
              "for i in range(10):\n    print(i * i)\n", "Café, naïve, résumé.", "東京 大阪 京都",
              "emoji 😀 and 👍🏽", "  indented   text\twith\ttabs  ", "It's what they'll do."]
    return " ".join(rng.choice(pieces) for _ in range(12000))


# ---------------------------------------------------------------- tokenizers


def default_gguf_vocab(path):
    r = gguf.GGUFReader(path)

    def strings(key):
        f = r.fields[key]
        return [f.contents(i) for i in range(len(f.data))]

    tokens = strings("tokenizer.ggml.tokens")
    merges = strings("tokenizer.ggml.merges")
    types = list(r.fields["tokenizer.ggml.token_type"].contents())
    template = r.fields["tokenizer.chat_template"].contents()
    return tokens, merges, types, template


def bpe_model(tokens, merges, **kw):
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ")) for m in merges]
    return models.BPE(vocab=vocab, merges=pairs, dropout=None, unk_token=None, fuse_unk=False,
                      byte_fallback=False, **kw)


def save_dir(tok, dir_path, config, string_merges=False):
    os.makedirs(dir_path, exist_ok=True)
    path = os.path.join(dir_path, "tokenizer.json")
    tok.save(path)
    if string_merges:
        # The older "a b" spelling of merges, as the published SmolLM2 file has it.
        with open(path, encoding="utf-8") as f:
            j = json.load(f)
        j["model"]["merges"] = [" ".join(pair) for pair in j["model"]["merges"]]
        write_json(path, j)
    write_json(os.path.join(dir_path, "tokenizer_config.json"), config)


def build_smollm2(tokens, merges, types, template, out):
    tok = Tokenizer(bpe_model(tokens, merges))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    specials = [t for t, ty in zip(tokens, types) if ty == 3]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    save_dir(tok, out, {
        "add_prefix_space": False, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>", "chat_template": template,
        "clean_up_tokenization_spaces": False, "model_max_length": 8192,
        "tokenizer_class": "GPT2Tokenizer", "vocab_size": 49152}, string_merges=True)


def build_qwen2(tokens, merges, types, out=None):
    """With `out`, the fixture directory (with an extra normalized token); without, the plain
    pipeline a GGUF with pre "qwen2" stands for."""
    tok = Tokenizer(bpe_model(tokens, merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    specials = [t for t, ty in zip(tokens, types) if ty == 3]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if out is None:
        return tok
    tok.add_tokens([AddedToken("naïve", special=False, normalized=True)])
    save_dir(tok, out, {
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "chat_template": QWEN25_TEMPLATE, "clean_up_tokenization_spaces": False,
        "tokenizer_class": "Qwen2Tokenizer"})


def build_llama3(tokens, merges, types, out=None):
    """With `out`, the fixture directory (with lstrip/rstrip and single_word tokens); without,
    the plain pipeline a GGUF with pre "llama-bpe" stands for."""
    tok = Tokenizer(bpe_model(tokens, merges, ignore_merges=True))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    specials = [t for t, ty in zip(tokens, types) if ty == 3] + LLAMA3_SPECIALS
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    bos_id = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos_id)])])
    if out is None:
        return tok
    tok.add_special_tokens([AddedToken("<|mask|>", special=True, normalized=False, lstrip=True, rstrip=True)])
    tok.add_tokens([AddedToken("wordtok", special=False, normalized=False, single_word=True)])
    save_dir(tok, out, {
        "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA31_TEMPLATE,
        "clean_up_tokenization_spaces": True, "tokenizer_class": "PreTrainedTokenizerFast"})


def training_corpus(rng):
    syllables = ["ka", "to", "ri", "mon", "sel", "ba", "ne", "qui", "dor", "fa", "lu", "xis",
                 "ph", "th", "ing", "er", "est", "ion", "al", "pre"]
    extra = ["café", "naïve", "résumé", "東京", "日本語", "你好", "世界", "테스트", "Россия",
             "def", "return", "print(x)", "{ }", "3.14", "2024", "don't", "we'll", "😀", "λ"]
    lines = []
    for _ in range(4000):
        words = []
        for _ in range(rng.randint(3, 16)):
            if rng.random() < 0.25:
                words.append(rng.choice(extra))
            else:
                words.append("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))))
        lines.append(" ".join(words))
    return lines


def build_spm(rng, out_first, out_legacy, out_metaspace, work):
    model_path = os.path.join(work, "spm.model")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_corpus(rng)), model_prefix=model_path[:-len(".model")],
        model_type="bpe", vocab_size=1200, byte_fallback=True, character_coverage=1.0,
        split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", num_threads=1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=model_path)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = generate_merges(vocab)
    hf = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    hf.save_pretrained(out_first)
    # The legacy Llama 2 pipeline: the space handling moves into the normalizer.
    with open(os.path.join(out_first, "tokenizer.json"), encoding="utf-8") as f:
        j = json.load(f)
    j["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": METASPACE},
        {"type": "Replace", "pattern": {"String": " "}, "content": METASPACE}]}
    j["pre_tokenizer"] = None
    os.makedirs(out_legacy, exist_ok=True)
    write_json(os.path.join(out_legacy, "tokenizer.json"), j)
    shutil.copy(os.path.join(out_first, "tokenizer_config.json"), out_legacy)
    # Metaspace on both sides: prepend always, split into words, Metaspace decoder first.
    j["normalizer"] = None
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": METASPACE, "prepend_scheme": "always", "split": True}
    j["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Metaspace", "replacement": METASPACE, "prepend_scheme": "always", "split": True},
        {"type": "ByteFallback"}, {"type": "Fuse"}]}
    os.makedirs(out_metaspace, exist_ok=True)
    write_json(os.path.join(out_metaspace, "tokenizer.json"), j)
    shutil.copy(os.path.join(out_first, "tokenizer_config.json"), out_metaspace)
    return sp


# ---------------------------------------------------------------- GGUF files


def write_gguf(path, kv):
    w = gguf.GGUFWriter(path, arch="llama")
    for key, (value, vtype) in kv.items():
        if vtype == "array_str":
            w.add_array(key, value)
        elif vtype == "array_int":
            w.add_array(key, [int(v) for v in value])
        elif vtype == "array_f32":
            w.add_array(key, [float(v) for v in value])
        elif vtype == "str":
            w.add_string(key, value)
        elif vtype == "u32":
            w.add_uint32(key, value)
        elif vtype == "bool":
            w.add_bool(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def byte_level_gguf_kv(tokens, merges, types, template, pre="smollm"):
    return {
        "tokenizer.ggml.model": ("gpt2", "str"), "tokenizer.ggml.pre": (pre, "str"),
        "tokenizer.ggml.tokens": (tokens, "array_str"), "tokenizer.ggml.token_type": (types, "array_int"),
        "tokenizer.ggml.merges": (merges, "array_str"), "tokenizer.ggml.bos_token_id": (1, "u32"),
        "tokenizer.ggml.eos_token_id": (2, "u32"), "tokenizer.ggml.unknown_token_id": (0, "u32"),
        "tokenizer.ggml.padding_token_id": (2, "u32"), "tokenizer.ggml.add_bos_token": (False, "bool"),
        "tokenizer.chat_template": (template, "str")}


def spm_gguf_kv(sp):
    n = sp.get_piece_size()
    tokens = [sp.id_to_piece(i) for i in range(n)]
    scores = [sp.get_score(i) for i in range(n)]

    def kind(i):
        if sp.is_unknown(i):
            return 2
        if sp.is_control(i):
            return 3
        if sp.is_byte(i):
            return 6
        if sp.is_unused(i):
            return 5
        return 1

    return {
        "tokenizer.ggml.model": ("llama", "str"), "tokenizer.ggml.tokens": (tokens, "array_str"),
        "tokenizer.ggml.scores": (scores, "array_f32"),
        "tokenizer.ggml.token_type": ([kind(i) for i in range(n)], "array_int"),
        "tokenizer.ggml.bos_token_id": (sp.bos_id(), "u32"), "tokenizer.ggml.eos_token_id": (sp.eos_id(), "u32"),
        "tokenizer.ggml.unknown_token_id": (sp.unk_id(), "u32"),
        "tokenizer.ggml.add_bos_token": (True, "bool"), "tokenizer.ggml.add_space_prefix": (True, "bool")}


# ---------------------------------------------------------------- bad inputs


def tiny_tokenizer_json(model):
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None,
            "model": model}


def write_bad_inputs(out, smollm_kv):
    bad = os.path.join(out, "bad")
    os.makedirs(os.path.join(bad, "missing"), exist_ok=True)
    os.makedirs(os.path.join(bad, "invalid_json"), exist_ok=True)
    with open(os.path.join(bad, "invalid_json", "tokenizer.json"), "w") as f:
        f.write('{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0,')
    bpe = {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}
    write_json(os.path.join(bad, "no_model", "tokenizer.json"),
               {k: v for k, v in tiny_tokenizer_json(bpe).items() if k != "model"})
    write_json(os.path.join(bad, "unknown_merge", "tokenizer.json"),
               tiny_tokenizer_json(dict(bpe, merges=["a b", "a zz"])))
    write_json(os.path.join(bad, "wordpiece", "tokenizer.json"), tiny_tokenizer_json(
        {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
         "max_input_chars_per_word": 100, "vocab": {"[UNK]": 0, "a": 1}}))
    write_json(os.path.join(bad, "unigram", "tokenizer.json"), tiny_tokenizer_json(
        {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0], ["a", -1.0]], "byte_fallback": False}))
    write_json(os.path.join(bad, "huge_id", "tokenizer.json"),
               tiny_tokenizer_json(dict(bpe, vocab={"a": 0, "b": 1, "ab": 2000000000})))
    j = tiny_tokenizer_json(bpe)
    j["pre_tokenizer"] = {"type": "BertPreTokenizer"}
    write_json(os.path.join(bad, "unsupported_pre", "tokenizer.json"), j)

    tokens = smollm_kv["tokenizer.ggml.tokens"][0][:300]
    types = smollm_kv["tokenizer.ggml.token_type"][0][:300]
    kept = set(tokens)
    merges = [m for m in smollm_kv["tokenizer.ggml.merges"][0]
              if m.split(" ")[0] in kept and m.split(" ")[1] in kept and m.replace(" ", "") in kept]
    base = {"tokenizer.ggml.model": ("gpt2", "str"), "tokenizer.ggml.tokens": (tokens, "array_str"),
            "tokenizer.ggml.token_type": (types, "array_int"), "tokenizer.ggml.merges": (merges, "array_str"),
            "tokenizer.ggml.pre": ("smollm", "str")}
    write_gguf(os.path.join(bad, "type_count.gguf"),
               dict(base, **{"tokenizer.ggml.token_type": (types[:-1], "array_int")}))
    write_gguf(os.path.join(bad, "unknown_pre.gguf"), dict(base, **{"tokenizer.ggml.pre": ("mystery-pre", "str")}))
    write_gguf(os.path.join(bad, "bert_model.gguf"), dict(base, **{"tokenizer.ggml.model": ("bert", "str")}))


# ---------------------------------------------------------------- expectations


def random_id_sequences(rng, tok, n_seq):
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    byte_ids = [tok.token_to_id("<0x%02X>" % b) for b in range(256)]
    byte_ids = [i for i in byte_ids if i is not None]
    out = []
    for k in range(n_seq):
        length = rng.randint(1, 24)
        if byte_ids and k % 2 == 0:
            seq = [rng.choice(byte_ids) if rng.random() < 0.7 else rng.randrange(vocab_size) for _ in range(length)]
        else:
            seq = [rng.randrange(vocab_size) for _ in range(length)]
        out.append(seq)
    return out


def expectations(tok, texts, rng):
    with_special = [tok.encode(t, add_special_tokens=True).ids for t in texts]
    plain = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    bos = None
    for a, b in zip(with_special, plain):
        if len(a) == len(b) + 1 and a[1:] == b:
            bos = a[0]
    return {
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "template_bos_id": bos,
        "texts": [{"text": t, "ids": ids, "ids_special": ws,
                   "decoded": tok.decode(ids, skip_special_tokens=False),
                   "decoded_skip": tok.decode(ids, skip_special_tokens=True)}
                  for t, ids, ws in zip(texts, plain, with_special)],
        "random_decode": [{"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                           "decoded_skip": tok.decode(ids, skip_special_tokens=True)}
                          for ids in random_id_sequences(rng, tok, 60)],
    }


def conversations():
    return [
        [{"role": "user", "content": "Hello!"}],
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
         {"role": "user", "content": "  And 3+3?  \n"}],
        [{"role": "system", "content": "  Be kind.\n"}, {"role": "user", "content": "Tell me a joke"},
         {"role": "assistant", "content": "Why did the chicken cross the road?"},
         {"role": "user", "content": "Why?"}, {"role": "assistant", "content": "To get to the other side! 🐔"}],
        [{"role": "user", "content": "Café, 東京 and\ttabs\n\nnewlines"},
         {"role": "assistant", "content": "<think>\nThe user lists things.\n</think>\n\nNice list."},
         {"role": "user", "content": "Thanks"},
         {"role": "assistant", "content": "<think>\nPolite reply.\n</think>\n\nYou're welcome."}],
        [{"role": "system", "content": "sys"}, {"role": "user", "content": "q1"},
         {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"},
         {"role": "assistant", "content": "\n\na2 with leading newlines"}],
        [{"role": "user", "content": ""}],
    ]


def render_chats(out, dirs):
    specs = [
        ("smollm2", None, "smollm2"),
        ("qwen25", QWEN25_TEMPLATE, "qwen2"),
        ("qwen3", QWEN3_TEMPLATE, "qwen2"),
        ("llama3", LLAMA3_TEMPLATE, "llama3"),
        ("llama31", LLAMA31_TEMPLATE, "llama3"),
        ("unknown", UNKNOWN_TEMPLATE, "smollm2"),
    ]
    for name, template, tok_dir in specs:
        hf = PreTrainedTokenizerFast.from_pretrained(dirs[tok_dir])
        source = template if template is not None else hf.chat_template
        cases = []
        for messages in conversations():
            for gen in (False, True):
                rendered = hf.apply_chat_template(messages, chat_template=source, tokenize=False,
                                                  add_generation_prompt=gen)
                cases.append({"messages": messages, "add_generation_prompt": gen, "expected": rendered})
        write_json(os.path.join(out, "chat", name + ".json"),
                   {"source": source, "tokenizer": tok_dir, "cases": cases})


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_tokenizer_fixtures.py <fixture_dir>")
    out = os.path.join(sys.argv[1], "tokenizers")
    model_path = os.environ.get("DMS_DEFAULT_MODEL")
    if not model_path or not os.path.exists(model_path):
        sys.exit("make_tokenizer_fixtures.py: DMS_DEFAULT_MODEL does not name the default model GGUF")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    rng = random.Random(SEED)
    np.random.seed(SEED)

    tokens, merges, types, template = default_gguf_vocab(model_path)
    names = ["smollm2", "qwen2", "llama3", "spm", "spm_legacy", "spm_metaspace"]
    dirs = {name: os.path.join(out, name) for name in names}
    build_smollm2(tokens, merges, types, template, dirs["smollm2"])
    build_qwen2(tokens, merges, types, dirs["qwen2"])
    build_llama3(tokens, merges, types, dirs["llama3"])
    with tempfile.TemporaryDirectory() as work:
        sp = build_spm(rng, dirs["spm"], dirs["spm_legacy"], dirs["spm_metaspace"], work)

    smollm_kv = byte_level_gguf_kv(tokens, merges, types, template)
    write_gguf(os.path.join(out, "smollm2.gguf"), smollm_kv)
    write_gguf(os.path.join(out, "qwen2.gguf"), byte_level_gguf_kv(tokens, merges, types, QWEN25_TEMPLATE, "qwen2"))
    llama3_tokens = tokens + LLAMA3_SPECIALS
    llama3_kv = byte_level_gguf_kv(llama3_tokens, merges, types + [3] * len(LLAMA3_SPECIALS), LLAMA31_TEMPLATE,
                                   "llama-bpe")
    llama3_kv["tokenizer.ggml.bos_token_id"] = (llama3_tokens.index("<|begin_of_text|>"), "u32")
    llama3_kv["tokenizer.ggml.eos_token_id"] = (llama3_tokens.index("<|eot_id|>"), "u32")
    del llama3_kv["tokenizer.ggml.add_bos_token"]  # llama-bpe asks for BOS by default
    write_gguf(os.path.join(out, "llama3.gguf"), llama3_kv)
    write_gguf(os.path.join(out, "spm.gguf"), spm_gguf_kv(sp))
    write_bad_inputs(out, smollm_kv)

    texts = varied_texts(rng)
    write_json(os.path.join(out, "long_text.json"), {"text": long_text(rng)})
    for name, path in dirs.items():
        tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        write_json(os.path.join(out, "expected", name + ".json"), expectations(tok, texts, rng))
    write_json(os.path.join(out, "expected", "gguf_qwen2.json"),
               expectations(build_qwen2(tokens, merges, types), texts, rng))
    write_json(os.path.join(out, "expected", "gguf_llama3.json"),
               expectations(build_llama3(tokens, merges, types), texts, rng))
    with open(os.path.join(out, "long_text.json"), encoding="utf-8") as f:
        long = json.load(f)["text"]
    smollm = Tokenizer.from_file(os.path.join(dirs["smollm2"], "tokenizer.json"))
    write_json(os.path.join(out, "long_text.json"),
               {"text": long, "smollm2_ids": smollm.encode(long, add_special_tokens=False).ids})
    render_chats(out, dirs)
    print("tokenizer fixtures written to", out)


if __name__ == "__main__":
    main()
