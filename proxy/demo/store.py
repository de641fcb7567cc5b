"""A small Bandcamp-like store, the upstream the demo (and the tests) put SonicShield in front of.

Pages: artist (/), album (/album/SLUG), track (/track/SLUG) with <audio> players and OpenGraph
tags; MP3 streams (/stream/SLUG.mp3), FLAC downloads (/download/SLUG.flac), covers
(/cover/SLUG.png), CSS, an RSS feed with enclosures (/feed.xml), /sitemap.xml and /robots.txt.
Audio and covers are served by FileResponse: Range, If-Range, conditional requests, 304, 416
and HEAD as a real static server answers them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from html import escape
from pathlib import Path

from aiohttp import web

from .catalogue import CATALOGUE, Catalogue, Track, ensure_catalogue

STATIC_DIR = Path(__file__).parent / "static"
CATALOGUE_KEY = web.AppKey("catalogue", Catalogue)
MEDIA_KEY = web.AppKey("media", Path)


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _page(request: web.Request, title: str, body: str, og: dict[str, str]) -> web.Response:
    meta = "\n".join(
        f'<meta property="{escape(k)}" content="{escape(v)}">' for k, v in og.items()
    )
    html = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
{meta}
<link rel="stylesheet" href="/static/style.css">
<link rel="alternate" type="application/rss+xml" href="/feed.xml"
  title="{escape(CATALOGUE.artist)}">
</head>
<body>
<header><a class="artist" href="/">{escape(request.app[CATALOGUE_KEY].artist)}</a></header>
<main>
{body}
</main>
<footer>Sold and streamed directly by the artist.</footer>
</body>
</html>
"""
    return web.Response(text=html, content_type="text/html")


def _player(track: Track) -> str:
    return (
        f'<audio controls preload="none" data-track="{track.slug}" '
        f'src="/stream/{track.slug}.mp3"></audio>'
    )


async def artist_page(request: web.Request) -> web.Response:
    cat = request.app[CATALOGUE_KEY]
    albums = "\n".join(
        f'<li><a href="/album/{a.slug}"><img src="/cover/{a.slug}.png" alt="{escape(a.title)} '
        f'cover" width="300" height="300"><span>{escape(a.title)} ({a.year})</span></a></li>'
        for a in cat.albums
    )
    body = f'<h1>{escape(cat.artist)}</h1>\n<p class="bio">{escape(cat.bio)}</p>\n' \
           f'<ul class="albums">\n{albums}\n</ul>'
    og = {
        "og:type": "profile",
        "og:title": cat.artist,
        "og:description": cat.bio,
        "og:image": f"{_base(request)}/cover/{cat.albums[0].slug}.png",
        "og:url": f"{_base(request)}/",
    }
    return _page(request, cat.artist, body, og)


async def album_page(request: web.Request) -> web.Response:
    cat = request.app[CATALOGUE_KEY]
    album = cat.album(request.match_info["slug"])
    if album is None:
        raise web.HTTPNotFound(text="No such album.")
    rows = "\n".join(
        f'<li><span class="n">{t.number}.</span> <a href="/track/{t.slug}">{escape(t.title)}</a>'
        f' <span class="len">{t.seconds // 60}:{t.seconds % 60:02d}</span> {_player(t)}'
        f' <a class="dl" href="/download/{t.slug}.flac">FLAC</a></li>'
        for t in album.tracks
    )
    body = (
        f'<img class="cover" src="/cover/{album.slug}.png" alt="{escape(album.title)} cover" '
        f'width="300" height="300">\n<h1>{escape(album.title)}</h1>\n'
        f'<p>{escape(cat.artist)}, {album.year}</p>\n<ol class="tracks">\n{rows}\n</ol>'
    )
    og = {
        "og:type": "music.album",
        "og:title": f"{album.title}, by {cat.artist}",
        "og:image": f"{_base(request)}/cover/{album.slug}.png",
        "og:url": f"{_base(request)}/album/{album.slug}",
        "og:audio": f"{_base(request)}/stream/{album.tracks[0].slug}.mp3",
    }
    return _page(request, f"{album.title} | {cat.artist}", body, og)


async def track_page(request: web.Request) -> web.Response:
    cat = request.app[CATALOGUE_KEY]
    found = cat.track(request.match_info["slug"])
    if found is None:
        raise web.HTTPNotFound(text="No such track.")
    album, track = found
    body = (
        f'<img class="cover" src="/cover/{album.slug}.png" alt="{escape(album.title)} cover" '
        f'width="300" height="300">\n<h1>{escape(track.title)}</h1>\n'
        f'<p>from <a href="/album/{album.slug}">{escape(album.title)}</a></p>\n'
        f'{_player(track)}\n<p><a class="dl" href="/download/{track.slug}.flac">'
        f'Download FLAC</a></p>\n<p class="isrc">ISRC {track.isrc}</p>'
    )
    og = {
        "og:type": "music.song",
        "og:title": f"{track.title}, by {cat.artist}",
        "og:image": f"{_base(request)}/cover/{album.slug}.png",
        "og:url": f"{_base(request)}/track/{track.slug}",
        "og:audio": f"{_base(request)}/stream/{track.slug}.mp3",
        "og:audio:type": "audio/mpeg",
    }
    return _page(request, f"{track.title} | {cat.artist}", body, og)


def _media(request: web.Request, name: str, content_type: str) -> web.FileResponse:
    path = request.app[MEDIA_KEY] / name
    if not path.is_file():
        raise web.HTTPNotFound(text="No such file.")
    return web.FileResponse(path, headers={"Content-Type": content_type})


async def stream(request: web.Request) -> web.StreamResponse:
    slug = request.match_info["slug"]
    if request.app[CATALOGUE_KEY].track(slug) is None:
        raise web.HTTPNotFound(text="No such track.")
    return _media(request, f"{slug}.mp3", "audio/mpeg")


async def download(request: web.Request) -> web.StreamResponse:
    slug = request.match_info["slug"]
    if request.app[CATALOGUE_KEY].track(slug) is None:
        raise web.HTTPNotFound(text="No such track.")
    resp = _media(request, f"{slug}.flac", "audio/flac")
    resp.headers["Content-Disposition"] = f'attachment; filename="{slug}.flac"'
    return resp


async def cover(request: web.Request) -> web.StreamResponse:
    slug = request.match_info["slug"]
    if request.app[CATALOGUE_KEY].album(slug) is None:
        raise web.HTTPNotFound(text="No such cover.")
    return _media(request, f"{slug}.png", "image/png")


def _rfc822(year: int, month: int) -> str:
    return format_datetime(datetime(year, month, 1, 12, 0, tzinfo=UTC))


async def feed(request: web.Request) -> web.Response:
    cat = request.app[CATALOGUE_KEY]
    base = _base(request)
    items = []
    for album, track in cat.tracks():
        size = (request.app[MEDIA_KEY] / f"{track.slug}.mp3").stat().st_size
        items.append(
            f"<item><title>{escape(track.title)}</title>"
            f"<link>{base}/track/{track.slug}</link>"
            f'<guid isPermaLink="false">{track.isrc}</guid>'
            f"<pubDate>{_rfc822(album.year, track.number)}</pubDate>"
            f'<enclosure url="{base}/stream/{track.slug}.mp3" length="{size}" type="audio/mpeg"/>'
            f"<itunes:duration>{track.seconds}</itunes:duration>"
            f'<itunes:image href="{base}/cover/{album.slug}.png"/></item>'
        )
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">'
        f"<channel><title>{escape(cat.artist)}</title><link>{base}/</link>"
        f"<description>{escape(cat.bio)}</description><language>en</language>"
        f"<itunes:author>{escape(cat.artist)}</itunes:author>{''.join(items)}</channel></rss>\n"
    )
    return web.Response(text=xml, content_type="application/rss+xml")


async def sitemap(request: web.Request) -> web.Response:
    cat = request.app[CATALOGUE_KEY]
    base = _base(request)
    urls = [f"{base}/"] + [f"{base}/album/{a.slug}" for a in cat.albums]
    urls += [f"{base}/track/{t.slug}" for _, t in cat.tracks()]
    body = "".join(f"<url><loc>{u}</loc></url>" for u in urls)
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</urlset>\n'
    )
    return web.Response(text=xml, content_type="application/xml")


async def robots(request: web.Request) -> web.Response:
    # The store's own robots.txt, as a typical shop ships it: nothing about AI at all.
    text = f"User-agent: *\nDisallow: /cart\n\nSitemap: {_base(request)}/sitemap.xml\n"
    return web.Response(text=text, content_type="text/plain")


async def cart(_: web.Request) -> web.Response:
    return web.Response(text="Your cart is empty.", content_type="text/plain")


def build_store_app(media_dir: Path, catalogue: Catalogue = CATALOGUE) -> web.Application:
    """The store app; media_dir must already hold the rendered catalogue (ensure_catalogue)."""
    app = web.Application()
    app[CATALOGUE_KEY] = catalogue
    app[MEDIA_KEY] = media_dir
    r = app.router
    r.add_get("/", artist_page)
    r.add_get("/album/{slug}", album_page)
    r.add_get("/track/{slug}", track_page)
    r.add_get("/stream/{slug}.mp3", stream)
    r.add_get("/download/{slug}.flac", download)
    r.add_get("/cover/{slug}.png", cover)
    r.add_get("/feed.xml", feed)
    r.add_get("/sitemap.xml", sitemap)
    r.add_get("/robots.txt", robots)
    r.add_get("/cart", cart)
    r.add_static("/static/", STATIC_DIR)
    return app


def prepare_store(cache_dir: Path) -> web.Application:
    return build_store_app(ensure_catalogue(cache_dir))
