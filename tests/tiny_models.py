"""A tiny randomly initialised BERT classifier base, built offline in a folder, for fast tests of
the fine-tuning specialist and of model export."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import FILLER, WORDS

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tiny_bert(path: Path) -> Path:
    """Write a 2-layer, 32-wide BERT (no classification head yet) and a WordPiece tokenizer whose
    vocabulary covers the toy datasets' words; return the folder."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    words = sorted({w for ws in WORDS.values() for w in ws} | set(FILLER))
    vocab = {tok: i for i, tok in enumerate(SPECIAL + words)}
    # Built with `tokenizers` directly: the slow/fast BERT tokenizer constructors differ between
    # transformers 4 and 5, a tokenizer.json loads the same in both.
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                        model_max_length=64)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
