// A listener in Debian's Firefox ESR, driven over WebDriver BiDi (no Playwright build):
// the artist page, an album, a track played with the browser's own Range requests, a seek.
// Usage: node firefox.mjs BASE_URL TRACK_SLUG PROFILE_DIR; prints one JSON line.
import puppeteer from 'puppeteer-core';

const [base, track, profile] = process.argv.slice(2);
const browser = await puppeteer.launch({
  browser: 'firefox',
  executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr',
  headless: false,
  userDataDir: profile,
  extraPrefsFirefox: {
    'media.autoplay.default': 0,
    'media.autoplay.blocking_policy': 0,
    'browser.shell.checkDefaultBrowser': false,
    'app.update.enabled': false,
    'network.captive-portal-service.enabled': false,
    'network.connectivity-service.enabled': false,
    'datareporting.policy.dataSubmissionEnabled': false,
    'browser.safebrowsing.malware.enabled': false,
    'browser.safebrowsing.phishing.enabled': false,
  },
});
const out = {};
try {
  const page = await browser.newPage();
  await page.goto(base + '/');
  out.ua = await page.evaluate(() => navigator.userAgent);
  await Promise.all([page.waitForNavigation(), page.click('a[href="/album/first-light"]')]);
  const player = `document.querySelector('audio[data-track="${track}"]')`;
  await page.evaluate(`${player}.play()`);
  await page.waitForFunction(`${player}.currentTime > 1.0`, {timeout: 30000});
  await page.evaluate(`${player}.currentTime = 40`);
  await page.waitForFunction(`${player}.currentTime > 40.5`, {timeout: 30000});
  out.duration = await page.evaluate(`${player}.duration`);
  out.error = await page.evaluate(`${player}.error && ${player}.error.message`);
  out.played = true;
} catch (e) {
  out.failure = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
