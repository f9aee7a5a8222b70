# Regenerates llamacpp-xcheck.jsonl: llama.cpp itself (llama-cpp-python 0.3.36 = llama.cpp b11312,
# 0c1e57098, the peer of tests/data/reference, built from source with `pip install
# llama-cpp-python==0.3.36`) tokenizing pseudo-random hard text (Unicode whitespace, marks, symbols,
# unassigned code points, special-token texts) with every reference tokenizer, vocab-only load.
# Run from anywhere with that venv's python; SmolLM2 must sit in ~/.cache/ember/models/.
import json, random, itertools
from llama_cpp import Llama
D='/work/main/tests/data/'
models = {
 'vocab-qwen2': D+'reference/vocab/ggml-vocab-qwen2.gguf',
 'vocab-llama-bpe': D+'reference/vocab/ggml-vocab-llama-bpe.gguf',
 'vocab-deepseek-llm': D+'reference/vocab/ggml-vocab-deepseek-llm.gguf',
 'vocab-deepseek-coder': D+'reference/vocab/ggml-vocab-deepseek-coder.gguf',
 'tiny-deepseek-v3-q4_k_m': D+'models/tiny-deepseek-v3-q4_k_m.gguf',
 'tiny-deepseek-v2-lite-q4_k_m': D+'models/tiny-deepseek-v2-lite-q4_k_m.gguf',
 'tiny-qwen2-q4_0': D+'models/tiny-qwen2-q4_0.gguf',
 'tiny-qwen2-tied-q4_k_m': D+'models/tiny-qwen2-tied-q4_k_m.gguf',
 'tiny-llama-q2_k': D+'models/tiny-llama-q2_k.gguf',
 'smollm2-135m-instruct-q4_1': '/root/.cache/ember/models/SmolLM2-135M-Instruct.Q4_1.gguf',
}
alphabet = list("aZz9 0\t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u3000\u2009\u200a\u2028\u2029\u202f\u205f\u1680\u200b'\"~!?.,;:<|>_-=+*/\\^`$%&#@()[]{}ßéÅñøöõ中文字한국어ひらがなカタカナ。、！ａ‘😀👍🏽\u200d\ufe0f\u0301\u0300\U0010ffff\ue000\ufffd\u0378\u0e01\u0e31\u0915\u093f١٢٣¹²½ⅫΩΩKKµſİ")
words = ["hello", "world", "'s", "'RE", "'ll", "don't", "  ", "\n\n", "1234567", "3.14", "<|im_end|>", "<|im_start|>", "<｜User｜>", "<think>", "</think>", "<|eot_id|>", "<|begin_of_text|>", "<｜end▁of▁sentence｜>", "<|endoftext|>", "<reponame>", "[PAD151646]", "~~", " ~", "　", "ü", "Ångström", "naïve", "。　。", "中\u3000中"]
rng = random.Random(20240607)
texts = []
for i in range(100):
    parts = []
    for _ in range(rng.randint(1, 10)):
        if rng.random() < 0.35:
            parts.append(rng.choice(words))
        else:
            parts.append(''.join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))))
    texts.append(''.join(parts))
with open('/work/main/crates/ember-tokenizer/tests/data/llamacpp-xcheck.jsonl', 'w') as f:
    for name, path in models.items():
        llm = Llama(model_path=path, vocab_only=True, verbose=False)
        for t in texts:
            b = t.encode('utf-8')
            f.write(json.dumps({'dir': name, 'text': t,
                                'ids_special': llm.tokenize(b, add_bos=False, special=True),
                                'ids_plain': llm.tokenize(b, add_bos=False, special=False)},
                               ensure_ascii=False, separators=(',', ':')) + '\n')
