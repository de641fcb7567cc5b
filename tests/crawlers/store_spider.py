"""A Scrapy spider that takes everything a store links to, audio included.

Run by tests/test_crawlers.py: `scrapy runspider store_spider.py -a start=URL,URL -a out=DIR`.
It follows every link and <audio src>, and saves every audio response's body into `out`
(refusals too: the test checks that it did reach audio, and that no body is a real track).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import scrapy


class StoreSpider(scrapy.Spider):
    name = "store"

    def __init__(self, start: str, out: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_urls = start.split(",")
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)

    def parse(self, response: scrapy.http.Response) -> Any:
        if response.url.endswith((".mp3", ".flac")):
            name = hashlib.sha256(response.body).hexdigest()[:16]
            (self.out / f"{name}{Path(response.url).suffix}").write_bytes(response.body)
            return
        if not isinstance(response, scrapy.http.TextResponse):
            return
        for href in response.css("a::attr(href), audio::attr(src)").getall():
            yield response.follow(href, callback=self.parse)
