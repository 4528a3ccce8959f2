"""The API key never shows, even in part, in an error quoting a server's answer."""

from __future__ import annotations

import pytest
from httpserver import Response
from openai_server import serve_openai

from loomk import LLMError
from loomk.llm import LLMClient, LLMSettings

KEY = "sk-live-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@pytest.mark.parametrize("offset", [0, 270, 280, 290, 299])
async def test_a_key_straddling_the_quoted_part_is_masked_whole(offset: int) -> None:
    body = ("x" * offset + f" bad key {KEY} " + "y" * 400).encode()
    async with serve_openai() as fake:
        fake.script("chat/completions", Response(401, body))
        async with LLMClient(
            LLMSettings(base_url=fake.base_url, api_key=KEY, max_retries=0)
        ) as client:
            with pytest.raises(LLMError) as caught:
                await client.chat([{"role": "user", "content": "hi"}])
    message = str(caught.value)
    for start in range(len(KEY) - 8):  # no 8 characters of the key, anywhere
        assert KEY[start : start + 8] not in message
