# A Mastodon-style link preview: what Mastodon's FetchLinkCardService does when a post links
# to a page, with the same HTTP library (http.rb, Debian's ruby-http) and request headers:
# fetch the page as text/html, read its OpenGraph tags, fetch the og:image for the card.
# Run by tests/clients/programs.py: ruby link_preview.rb URL OUT_DIR
require 'http'
require 'time'

url, out = ARGV
ua = "http.rb/#{HTTP::VERSION} (Mastodon/4.3.0; +https://social.example/)"

def fetch(url, ua, accept)
  HTTP.headers('User-Agent' => ua, 'Date' => Time.now.utc.httpdate,
               'Accept-Encoding' => 'gzip', 'Accept' => accept,
               'Accept-Language' => 'en, *;q=0.5')
      .use(:auto_inflate).timeout(10).get(url)
end

page = fetch(url, ua, 'text/html')
abort "page: #{page.status}" unless page.status.success?
html = page.to_s
image = html[/<meta\s+property="og:image"\s+content="([^"]+)"/, 1]
title = html[/<meta\s+property="og:title"\s+content="([^"]+)"/, 1]
abort 'no og:image' unless image && title
image = URI.join(url, image).to_s  # as Mastodon does: relative to the page, absolute as is
picture = fetch(image, ua, '*/*')
abort "image: #{picture.status}" unless picture.status.success?
File.binwrite(File.join(out, File.basename(URI(image).path)), picture.to_s)
puts ua
puts title
