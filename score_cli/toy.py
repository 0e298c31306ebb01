"""The embedded toy world: a character tokenizer and tiny causal LMs that run offline on a CPU.

Everything here is built locally and saved with `save_pretrained`, so every command loads a toy
model exactly like a hub model.
"""

from __future__ import annotations

import string

from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "user": "<|user|>", "assistant": "<|assistant|>"}
ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \n"

# A minimal chat template: "<s><|user|>...</s><|assistant|>...</s>". An assistant turn ends with
# EOS, so the rollout's instruction suffix is "<|user|>{instruction}</s><|assistant|>".
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}{{ eos_token }}"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}{{ eos_token }}"
    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_char_tokenizer(alphabet: str = ALPHABET) -> PreTrainedTokenizerFast:
    """A character-level tokenizer with a chat template; it round-trips text exactly."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    specials = list(SPECIAL_TOKENS.values())
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(alphabet)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["pad"]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["pad"],
        additional_special_tokens=[SPECIAL_TOKENS["user"], SPECIAL_TOKENS["assistant"]],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_causal_lm(tokenizer, *, hidden: int = 64, layers: int = 2, heads: int = 4, max_len: int = 2048, seed: int = 0):
    """A randomly initialised Llama-architecture causal LM sized for tests and the toy world."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_len,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
