#!/usr/bin/env node
// Runs a browser script in headless Chromium and prints one JSON line per event.
//
//   node tests/browser/run_page.js SCRIPT.json        (or "-" to read the script from stdin)
//
// SCRIPT.json:
//   {"name": "demo", "url": "http://127.0.0.1:8080/", "timeout_ms": 10000,
//    "steps": [{"wait_for_text": "Greetings!"},
//              {"fill": ["#message", "foo"]}, {"press": ["#message", "Enter"]},
//              {"click": "#send"}, {"wait_for_text": "bar"},
//              {"text": "#log"}, {"eval": "document.title"},
//              {"screenshot": "demo.png"}]}
// Steps: goto, fill, type, press, click, wait_for_text, wait_for_selector, text, eval, sleep_ms,
// screenshot (saved under artifacts/, or $TETHER_ARTIFACTS); any step may add "timeout_ms".
// stdout: {"step": ..., "ok": true, ...result} per step, {"console": ...} and {"pageerror": ...} as
// they come, then {"done": true}. Exit status 0 when every step passed, 1 otherwise (a screenshot
// artifacts/<name>-failure.png is kept), 2 for a bad script.
'use strict';

const fs = require('fs');
const { runScript } = require('./browser');

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

async function main() {
  const source = process.argv[2];
  if (!source) {
    process.stderr.write('usage: node tests/browser/run_page.js SCRIPT.json|-\n');
    return 2;
  }
  let script;
  try {
    script = JSON.parse(fs.readFileSync(source === '-' ? 0 : source, 'utf8'));
  } catch (err) {
    emit({ error: `bad script: ${err.message}` });
    return 2;
  }
  try {
    await runScript(script, emit);
  } catch (err) {
    emit({ done: false, error: err.message.split('\n')[0] });
    return 1;
  }
  emit({ done: true });
  return 0;
}

main().then(
  (status) => process.stdout.write('', () => process.exit(status)),
  (err) => {
    emit({ done: false, error: String(err && err.stack ? err.stack : err) });
    process.exit(1);
  },
);
