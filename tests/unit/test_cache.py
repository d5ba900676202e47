from shared.cache import cache_key
from shared.providers.base import Message, ProviderRequest


def request(**fields) -> ProviderRequest:
    return ProviderRequest(
        model="gpt-4o-mini", system="Be brief.", messages=[Message(role="user", content="Hi")], **fields
    )


def test_stop_sequences_are_part_of_the_key():
    plain, stopped = cache_key("gpt-4o-mini", request()), cache_key("gpt-4o-mini", request(stop=["\n"]))
    assert plain != stopped != cache_key("gpt-4o-mini", request(stop=["."]))
    assert stopped == cache_key("gpt-4o-mini", request(stop=["\n"]))


def test_a_key_without_stop_sequences_is_the_one_cached_before_them():
    """Answers cached before stop sequences were passed on are still found (the key the previous release computed)."""
    assert cache_key("gpt-4o-mini", request()) == "3cc4fe65c1a42933392541e6652f4fe5f06a2d80ce01cfdafd80e6beafc0ac6c"
