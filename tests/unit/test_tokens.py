import hashlib

import tiktoken

from shared import tokens


def test_offline_cache_is_seeded_with_the_exact_file_tiktoken_expects(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    path = tokens.seed_tiktoken_cache("cl100k_base")
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    assert path == tmp_path / hashlib.sha1(url.encode()).hexdigest()
    # the sha256 tiktoken checks before trusting a cached file
    assert hashlib.sha256(path.read_bytes()).hexdigest() == (
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
    )
    encoding = tiktoken.get_encoding("cl100k_base")
    assert encoding.encode_ordinary("hello world") == [15339, 1917]


def test_counts_known_values_and_treats_special_tokens_as_text():
    assert tokens.count_tokens("") == 0
    assert tokens.count_tokens("hello world") == 2
    # user text containing a special token must be counted, not rejected
    assert tokens.count_tokens("a <|endoftext|> b") > 3


def test_decode_round_trips_unicode():
    text = "naïve café — 東京 🚀"
    assert tokens.decode(tokens.encode(text)) == text
