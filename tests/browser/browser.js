// Headless Chromium for tether's browser tests: Debian's /usr/bin/chromium driven by playwright-core
// (installed under tests/peers/node_modules by scripts/setup; no browser is ever downloaded).
//
//   const { openBrowser, runScript } = require('./browser');
//   const browser = await openBrowser();           // a fresh, empty profile each time
//   const page = await browser.newPage();
//   await page.goto('http://127.0.0.1:8080/');
//   ...playwright-core's Page API...
//   await browser.close();                          // also deletes the profile
//
// runScript(script) runs the JSON steps that run_page.js takes (see there).
// Environment: TETHER_CHROMIUM overrides the executable; TETHER_ARTIFACTS the screenshot folder
// (default: artifacts/ at the repository's root).
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { createRequire } = require('module');

const peerRequire = createRequire(path.join(__dirname, '..', 'peers', 'package.json'));
const { chromium } = peerRequire('playwright-core');

const REPO_ROOT = path.resolve(__dirname, '..', '..');
const EXECUTABLE = process.env.TETHER_CHROMIUM || '/usr/bin/chromium';
// --headless and --no-sandbox (we run as root); the rest keep Chromium off the network, which this
// machine does not reach: without them it keeps trying, and failing, to call Google's services.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function artifactsDir() {
  const dir = process.env.TETHER_ARTIFACTS || path.join(REPO_ROOT, 'artifacts');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

// Opens Chromium with a new empty profile; resolves to a BrowserContext whose close() also
// removes the profile. Options: viewport ({width, height}), timeoutMs (default for every action).
async function openBrowser(options = {}) {
  if (!fs.existsSync(EXECUTABLE)) {
    throw new Error(`${EXECUTABLE} not found: run scripts/setup (it installs Debian's chromium)`);
  }
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'tether-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: EXECUTABLE,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: options.viewport || { width: 1000, height: 700 },
    timeout: options.timeoutMs || 30000,
  });
  context.setDefaultTimeout(options.timeoutMs || 10000);
  const close = context.close.bind(context);
  context.close = async () => {
    try {
      await close();
    } finally {
      fs.rmSync(profile, { recursive: true, force: true });
    }
  };
  return context;
}

// Saves a full-page screenshot under the artifacts folder; returns its path.
async function screenshot(page, name) {
  const file = path.join(artifactsDir(), name.endsWith('.png') ? name : `${name}.png`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

// One step of a script: an object with exactly one of these keys.
async function runStep(page, step, log) {
  const [action] = Object.keys(step).filter((k) => k !== 'timeout_ms');
  const arg = step[action];
  const timeout = step.timeout_ms;
  switch (action) {
    case 'goto':
      await page.goto(arg, { timeout });
      return { url: page.url() };
    case 'fill': // [selector, text]: sets the input's value
      await page.fill(arg[0], arg[1], { timeout });
      return {};
    case 'type': // [selector, text]: types key by key
      await page.locator(arg[0]).pressSequentially(arg[1], { timeout });
      return {};
    case 'press': // [selector, key], e.g. ["#input", "Enter"]
      await page.press(arg[0], arg[1], { timeout });
      return {};
    case 'click':
      await page.click(arg, { timeout });
      return {};
    case 'wait_for_text': // text anywhere in the page (or [selector, text])
      if (Array.isArray(arg)) await page.locator(arg[0]).getByText(arg[1]).first().waitFor({ timeout });
      else await page.getByText(arg).first().waitFor({ timeout });
      return {};
    case 'wait_for_selector':
      await page.waitForSelector(arg, { timeout });
      return {};
    case 'text': // the visible text of a selector
      return { text: await page.locator(arg).innerText({ timeout }) };
    case 'eval': // a JavaScript expression evaluated in the page
      return { value: await page.evaluate(arg) };
    case 'sleep_ms':
      await page.waitForTimeout(arg);
      return {};
    case 'screenshot':
      return { file: await screenshot(page, arg) };
    default:
      throw new Error(`unknown step ${JSON.stringify(step)}`);
  }
}

// Runs {"url": optional first page, "timeout_ms": default per step, "steps": [...]}.
// log(event) gets one object per step, console message and page error. On a failure it saves
// artifacts/<name>-failure.png ("name" from the script, default "browser") and rethrows.
async function runScript(script, log = () => {}) {
  const browser = await openBrowser({ timeoutMs: script.timeout_ms });
  try {
    const page = await browser.newPage();
    page.on('console', (msg) => log({ console: `${msg.type()}: ${msg.text()}` }));
    page.on('pageerror', (err) => log({ pageerror: err.message }));
    const steps = script.url ? [{ goto: script.url }, ...(script.steps || [])] : script.steps || [];
    for (const step of steps) {
      try {
        const result = await runStep(page, step, log);
        log({ step, ok: true, ...result });
      } catch (err) {
        let file = null;
        try {
          file = await screenshot(page, `${script.name || 'browser'}-failure`);
        } catch (_) {
          // the page may be gone
        }
        log({ step, ok: false, error: err.message.split('\n')[0], screenshot: file });
        throw err;
      }
    }
  } finally {
    await browser.close();
  }
}

module.exports = { CHROMIUM_ARGS, EXECUTABLE, artifactsDir, openBrowser, runScript, runStep, screenshot };
