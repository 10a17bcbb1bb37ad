"""Reference token ids for tests/model/test_tokenizer.c, from llama.cpp (llama-cpp-python).

Builds a fixed corpus (hand-picked edge cases, generated combinations and one ~100K-token text),
tokenizes it with llama.cpp on the SmolLM2 vocabulary, on copies of that vocabulary whose
tokenizer.ggml.pre names other pre-tokenizers and on a SentencePiece vocabulary derived from it,
and writes one JSON-lines file per vocabulary:
a header {"gguf": path, "pre": name, "round_trip": bool} then {"hex": text bytes, "special": bool, "add": bool,
"utf8": bool, "ids": [...]} per case. Run: venv/bin/python tokenizer_oracle.py --model M.gguf --outdir DIR
"""
import argparse
import json
import os
import random
import sys

import gguf
import llama_cpp

PRE_VARIANTS = ["llama-bpe", "qwen2", "gpt-2", "default", "starcoder"]

SPECIAL_TEXTS = [
    "<|im_start|>user\nHi there<|im_end|>\n",
    "<|endoftext|>",
    "text<|endoftext|>more text",
    "<|im_start|><|im_end|>",
    "<repo_name>omnikv<file_sep>src/main.c<|endoftext|>",
    "<|im_start",
    "<|im_start|>>",
    "< |im_start|>",
    "<|im_start|> system",
    "<jupyter_code>print(1)<jupyter_output>1<empty_output>",
    "a<|im_end|>b<|im_end|>c",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<<|endoftext|>>",
    "<|endoftext|><|endoftext|>",
]

HAND_TEXTS = [
    "", "Hello", "Hello world", "Hello, world!", " Hello", "  Hello", "Hello ", "Hello  ",
    "The quick brown fox jumps over the lazy dog.",
    "SmolLM2 is a family of compact language models.",
    # digits and numbers
    "1", "12", "123", "1234", "12345", "123456789012345678901234567890", "3.14159265358979",
    "1,000,000", "v2.0.1", "2024-01-15T10:30:00Z", "0x1F2E", "phone: 555-1234", " 42", "  42",
    "a1b2c3", "1st 2nd 3rd 4th", "١٢٣ ٤٥٦", "²³ ½ ¾ Ⅻ", "-17.5e+10", "$1,299.99", "100%",
    # whitespace
    " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", " \n ", "a  b",
    "a   b", "a\tb", "a \tb", "a\t b", "a\n\nb", "a \n b", "a\n \nb", "hello   ", "   hello",
    "\u00a0", "a\u00a0b", "\u3000", "a\u2003b", "\x0b\x0c", "a \u00a0 b", "line1\nline2\n",
    "\t\tindented\n\t\t\tmore", "trailing\n   ", "x \n\n  y", "  \n", "\n  ", "a\r\rb",
    "end with space ", "end with spaces   ", "\u2028\u2029", "a\u0085b",
    # punctuation
    "...", "?!?!", "(a)", "[b]", "{c}", "--", "—", "«quote»", "“smart quotes”", "'single'",
    "a.b.c", "#hashtag", "@user", "&&", "||", "->", "=>", "!=", "<=", ">=", "::", ";;",
    "Wait... what?!", "«Bonjour», dit-il.", "¿Qué? ¡Sí!", "a—b–c", "* bullet", "~/path",
    # contractions
    "it's", "we're", "I've", "they'll", "he'd", "I'm", "don't", "IT'S", "WE'RE", "We'Re",
    "'s", "'", "''", "rock 'n' roll", "O'Neil's", "you'd've", "'tis", "'ll'll", "dogs'",
    " 's", "x's's", "I'M", "She'D",
    # emoji
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇺🇸", "I ❤️ NY", "emoji😀in😀text", "🤖 robots",
    "😀😀😀", " 😀", "🧑🏿‍💻 coding",
    # CJK and other scripts
    "你好，世界", "日本語のテキスト", "한국어 텍스트", "中文 English 混合", "東京タワー",
    "Καλημέρα κόσμε", "Привет мир", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีครับ",
    "Tiếng Việt có dấu", "ａｂｃ１２３", "ｶﾀｶﾅ",
    # accents, composed and decomposed
    "café", "cafe\u0301", "naïve", "nai\u0308ve", "Ångström", "A\u030angstro\u0308m", "résumé",
    "Über", "ñandú", "Crème brûlée", "Ça va?", "Zürich", "e\u0301\u0301",
    # code
    "def f(x):\n    return x * 2\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "<div class=\"x\"><a href='#'>link</a></div>",
    "for i in $(seq 1 10); do echo \"$i\"; done",
    "SELECT * FROM users WHERE id = 42;",
    "```python\nimport numpy as np\n```",
    "x+=1;y-=2;z*=3;",
    "if (a && b || !c) { return; }",
    "    four spaces\n        eight spaces",
    "#include <stdio.h>",
    "^[a-z0-9_.+-]+@[a-z0-9-]+\\.[a-z]+$",
    "const auto it = std::find(v.begin(), v.end(), 42);",
    "lambda x: x**2 if x > 0 else -x",
    # URLs
    "https://example.com/path?query=1&x=y#frag", "http://localhost:8080/api/v1",
    "user.name+tag@example.co.uk", "ftp://a.b/c", "www.test.org/~user/index.html",
    "See https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct for details.",
    # control characters
    "\x00", "a\x00b", "\x01\x02\x03", "\x7f", "tab\there", "bell\x07", "\x1b[31mred\x1b[0m",
    # long runs
    "a" * 3000, "supercalifragilisticexpialidocious" * 40, "1" * 1000, " " * 1000, "\n" * 300,
    "!" * 2000, "ab " * 500, "😀" * 200, "é" * 500, "\t" * 100 + "x",
]


# Not UTF-8: llama.cpp reads these leniently (overlong forms decoded, stray bytes as U+FFFD).
BAD_UTF8 = [
    b"\xff\xfe", b"abc\x80def", b"\xe4\xbd", b"x\xc3", b"\xc3(", b"1\xf0\x9f\x98 2",
    b"\xed\xa0\x80 surrogate", b"\xc0\xaf overlong", b" \x80\x80\x80 ", b"\xe0\x80\x80!",
    b"caf\xe9 latin-1", b"<|im_end|>\xff<|im_start|>",
]


def generated_texts():
    rng = random.Random(20240501)
    frags = ["a", "ab", " ", "  ", "\n", "\t", "1", "23", "'s", "'re", "!", ".", "é", "😀", "中",
             "A", "\r\n", "x1", "—", "'"]
    out = []
    for _ in range(160):
        out.append("".join(rng.choice(frags) for _ in range(rng.randint(2, 7))))
    letters = "abcdefghijklmnopqrstuvwxyz"
    out.append("".join(rng.choice(letters) for _ in range(20000)))  # one very long word
    return out


def big_text():
    """About 100K tokens of varied prose, numbers, code and non-English text."""
    rng = random.Random(7)
    words = ("the of and to in is that for it as was with be by on not he this are or his from at "
             "which but have an they you were her she there been one all we their has would when "
             "tokenizer attention sparse pipeline inference model layer cache memory bandwidth "
             "Llama SmolLM OmniKV GPU throughput latency").split()
    extra = ["naïve", "café", "日本語", "Привет", "😀", "don't", "it's", "3.14", "2024", "x_1",
             "foo()", "{a: 1}", "—", "\n", "\n\n", "\t", "  "]
    parts = []
    size = 0
    while size < 450000:
        if rng.random() < 0.1:
            w = rng.choice(extra)
        elif rng.random() < 0.05:
            w = str(rng.randint(0, 10 ** rng.randint(1, 12)))
        else:
            w = rng.choice(words)
            if rng.random() < 0.08:
                w = w.capitalize() + rng.choice([",", ".", ";", ":", "!", "?"])
        parts.append(w)
        size += len(w) + 1
    return " ".join(parts)


def corpus():
    """(utf-8 bytes, parse_special, add_special) triples."""
    cases = []
    for t in HAND_TEXTS + generated_texts():
        cases.append((t.encode(), False, False))
        cases.append((t.encode(), True, False))
    for t in SPECIAL_TEXTS:
        cases.append((t.encode(), False, False))
        cases.append((t.encode(), True, False))
        cases.append((t.encode(), True, True))
    for b in BAD_UTF8:
        cases.append((b, False, False))
        cases.append((b, True, False))
    cases.append((b"Hello world", False, True))
    cases.append((big_text().encode(), False, False))
    return cases


def write_variant(src, dst, pre):
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, arch=r.fields["general.architecture"].contents())
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        val = pre if name == "tokenizer.ggml.pre" else f.contents()
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, val, f.types[0], sub_type=sub)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def byte_decoder():
    """GPT-2's byte-to-unicode map, inverted."""
    plain = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cps = plain[:]
    n = 0
    for b in range(256):
        if b not in plain:
            plain.append(b)
            cps.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(plain, cps)}


def spm_vocab(r):
    """A SentencePiece vocabulary made from the SmolLM2 GGUF read by r: the byte-level tokens that
    are whole UTF-8 strings, spaces written as U+2581, scored by rank; <unk> <s> </s>, 256 <0xNN>
    byte tokens, the ChatML control tokens and one user-defined token. Returns (tokens, scores,
    types); make_arch_models.py builds a model on it too."""
    f = r.fields["tokenizer.ggml.tokens"]
    dec = byte_decoder()
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    for special, ty in (("<|im_start|>", 3), ("<|im_end|>", 3), ("<tool>", 4)):
        tokens.append(special)
        types.append(ty)
    seen = set(tokens)
    for i in range(len(f.data)):
        t = bytes(f.parts[f.data[i]]).decode("utf-8")
        if t.startswith("<") and t.endswith(">"):
            continue  # SmolLM2's own special tokens
        try:
            text = bytes(dec[c] for c in t).decode("utf-8").replace(" ", "\u2581")
        except (KeyError, UnicodeDecodeError):
            continue
        if text and text not in seen:
            seen.add(text)
            tokens.append(text)
            types.append(1)
    scores = [0.0] * 262 + [-float(i) for i in range(len(tokens) - 262)]
    return tokens, scores, types


def write_spm(src, dst):
    """A vocabulary-only GGUF of spm_vocab's SentencePiece tokens with src's other metadata."""
    r = gguf.GGUFReader(src)
    tokens, scores, types = spm_vocab(r)
    w = gguf.GGUFWriter(dst, arch=r.fields["general.architecture"].contents())
    for name, fld in r.fields.items():
        if name.startswith("GGUF.") or name.startswith("tokenizer.") or name == "general.architecture":
            continue
        val = len(tokens) if name.endswith(".vocab_size") else fld.contents()
        sub = fld.types[-1] if fld.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, val, fld.types[0], sub_type=sub)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def run(model_path, out_path, pre, cases):
    llm = llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        # SentencePiece decodes with the added space prefix, so only byte-level round-trips.
        f.write(json.dumps({"gguf": model_path, "pre": pre, "n": len(cases),
                            "round_trip": pre != "spm"}) + "\n")
        for b, special, add in cases:
            ids = llm.tokenize(b, add_bos=add, special=special)
            try:
                b.decode("utf-8")
                utf8 = True
            except UnicodeDecodeError:
                utf8 = False
            f.write(json.dumps({"hex": b.hex(), "special": special, "add": add, "utf8": utf8,
                                "ids": ids}) + "\n")
    os.replace(tmp, out_path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--outdir", required=True)
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    cases = corpus()
    # The variants first: the SmolLM2 file is written last, so its presence marks a full run.
    for pre in PRE_VARIANTS:
        path = os.path.join(a.outdir, "tok_%s.gguf" % pre)
        write_variant(a.model, path, pre)
        run(path, os.path.join(a.outdir, "tok_%s.jsonl" % pre), pre, cases)
    path = os.path.join(a.outdir, "tok_spm.gguf")
    write_spm(a.model, path)
    run(path, os.path.join(a.outdir, "tok_spm.jsonl"), "spm", cases)
    run(a.model, os.path.join(a.outdir, "tok_smollm.jsonl"), "smollm", cases)
    print("tokenizer_oracle: %d cases x %d vocabularies" % (len(cases), len(PRE_VARIANTS) + 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
