// A real browser against herald: headless Chromium (Debian's package, driven by
// playwright-core) loads a page from another origin that opens an EventSource with
// credentials (the JWT in the `token` cookie) on /eventsource and a WebSocket on
// /sub/broadcast. Events are published; then /admin/pause cuts the EventSource, which
// reconnects by itself with Last-Event-ID after the retry delay while more events are
// published. Both must see exactly e0..e9, in order; e4 is published by the page itself with
// a cross-origin `fetch` carrying `Authorization` (a preflighted request: the browser sends
// OPTIONS first and refuses an answer whose CORS headers come twice). A screenshot is kept as
// an artifact.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { readFileSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const bin = process.env.HERALD_BIN || join(root, 'target', 'debug', 'herald');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const artifacts = join(root, 'target', 'browser');
const secret = 'browser-test-secret';
const publishKey = 'browser-test-publish-key';
const deadline = 30_000;

function jwt(claims) {
  const b64 = (s) => Buffer.from(s).toString('base64url');
  const head = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

// The page's origin: a different port from herald's.
const page = readFileSync(join(here, 'page.html'));
const pageServer = createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
  res.end(page);
});
await new Promise((r) => pageServer.listen(0, '127.0.0.1', r));
const pageOrigin = `http://127.0.0.1:${pageServer.address().port}`;

const herald = spawn(bin, [
  '--listen', '127.0.0.1:0', '--workers', '2', '--jwt-secret', secret,
  '--publish-key', publishKey, '--cors-origins', pageOrigin,
], { stdio: ['ignore', 'ignore', 'pipe'] });
const heraldUrl = await new Promise((resolve, reject) => {
  let text = '';
  const timer = setTimeout(() => reject(new Error('herald did not start: ' + text)), deadline);
  herald.stderr.on('data', (d) => {
    text += d;
    const m = text.match(/listening on (\S+)/);
    if (m) { clearTimeout(timer); resolve(`http://${m[1]}`); }
  });
});

async function publish(data) {
  const r = await fetch(`${heraldUrl}/pub/broadcast`, {
    method: 'POST', body: data, headers: { Authorization: `Bearer ${publishKey}` },
  });
  if (r.status !== 200) throw new Error(`publish ${data}: ${r.status}`);
}

let browser;
let failed = null;
try {
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext();
  await context.addCookies([{ name: 'token', value: jwt({ sub: '42', groups: ['Readers'] }), domain: '127.0.0.1', path: '/' }]);
  const tab = await context.newPage();
  await tab.goto(`${pageOrigin}/page.html?herald=${encodeURIComponent(heraldUrl)}`);
  // Subscribed once the stream is open (herald registers before the head goes out).
  await tab.waitForFunction(() => window.esOpens >= 1, null, { timeout: deadline });
  await tab.evaluate(() => window.wsOpen);

  for (let i = 0; i < 4; i++) await publish(`e${i}`);
  const fromPage = await tab.evaluate((key) => window.publishFromPage('e4', key), publishKey);
  if (fromPage !== 200) throw new Error(`the page's preflighted publish: ${fromPage}`);
  await tab.waitForFunction(() => window.esEvents.length >= 5 && window.wsEvents.length >= 5, null, { timeout: deadline });

  // Cut the EventSource: it gets `retry: 500`, its stream ends, and the browser reconnects
  // by itself with Last-Event-ID. Publish while it is away.
  const paused = await fetch(`${heraldUrl}/admin/pause?delay_ms=500`, {
    method: 'POST', headers: { Authorization: `Bearer ${publishKey}` },
  });
  if (paused.status !== 200) throw new Error(`pause: ${paused.status}`);
  for (let i = 5; i < 10; i++) await publish(`e${i}`);
  await tab.waitForFunction(
    () => window.esOpens >= 2 && window.esEvents.length >= 10 && window.wsEvents.length >= 10,
    null, { timeout: deadline });

  const got = await tab.evaluate(() => ({ es: window.esEvents.map((e) => e.data), ws: window.wsEvents, opens: window.esOpens }));
  const want = Array.from({ length: 10 }, (_, i) => `e${i}`);
  if (JSON.stringify(got.es) !== JSON.stringify(want)) throw new Error(`EventSource saw ${JSON.stringify(got.es)}`);
  if (JSON.stringify(got.ws) !== JSON.stringify(want)) throw new Error(`WebSocket saw ${JSON.stringify(got.ws)}`);
  if (got.opens < 2) throw new Error('the EventSource never reconnected');
  mkdirSync(artifacts, { recursive: true });
  await tab.screenshot({ path: join(artifacts, 'herald.png'), fullPage: true });
  console.log(`browser: EventSource ${got.es.length} events over ${got.opens} connections, WebSocket ${got.ws.length}; screenshot in target/browser/herald.png`);
} catch (e) {
  failed = e;
} finally {
  if (browser) await browser.close();
  herald.kill('SIGTERM');
  pageServer.close();
}
if (failed) {
  console.error('browser test FAILED:', failed.message);
  console.log('0 passed, 1 failed');
  process.exit(1);
}
console.log('1 passed, 0 failed');
