#!/usr/bin/env node
// A client built on node's `ws`, driven line by line, as a peer no one here wrote for tether's tests.
//
//   node ws_client.js URL [--no-compression] [--subprotocol NAME]... [--header 'Name: value']...
//                         [--max-payload N]
//
// stdin: one JSON command per line, sent in order (commands given before the connection opens wait):
//   {"send": "text"}                 a text message
//   {"send_binary_b64": "AAEC"}      a binary message (base64)
//   optional keys on either: "fin": false (a fragment: the message goes on with the next send),
//                            "compress": false (this message not compressed)
//   {"ping": "payload"}              a ping (payload as UTF-8 text, may be empty)
//   {"close": [code, reason]}        the closing handshake ({"close": []} for no code)
//   {"terminate": true}              drop the TCP connection without a closing handshake
// End of stdin closes the connection normally (1000) if it is still open.
//
// stdout: one JSON line per event:
//   {"open": {"protocol": "...", "extensions": "..."}}
//   {"message": "text", "binary": false}    or    {"message": "<base64>", "binary": true}
//   {"pong": "payload"}   {"ping": "payload"} (a ping from the server; ws answers it)
//   {"close": [code, "reason"]}             then the process exits 0
//   {"error": "..."}                         a bad command, or an error of the connection
// Exit status: 0 after a close event, 1 when the connection failed before opening.
'use strict';

const path = require('path');
const readline = require('readline');
const WebSocket = require(path.join(__dirname, 'node_modules', 'ws'));

function usage(message) {
  if (message) process.stderr.write(`ws_client.js: ${message}\n`);
  process.stderr.write('usage: node ws_client.js URL [--no-compression] [--subprotocol NAME]... '
    + "[--header 'Name: value']... [--max-payload N]\n");
  process.exit(2);
}

let url = null;
let compression = true;
let maxPayload = 100 * 1024 * 1024;
const subprotocols = [];
const headers = {};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i];
  const next = () => (i + 1 < argv.length ? argv[++i] : usage(`${arg} needs a value`));
  if (arg === '--no-compression') compression = false;
  else if (arg === '--subprotocol') subprotocols.push(next());
  else if (arg === '--max-payload') maxPayload = Number(next());
  else if (arg === '--header') {
    const header = next();
    const colon = header.indexOf(':');
    if (colon <= 0) usage(`bad header ${header}`);
    headers[header.slice(0, colon).trim()] = header.slice(colon + 1).trim();
  } else if (arg === '-h' || arg === '--help') usage();
  else if (url === null) url = arg;
  else usage(`unknown argument ${arg}`);
}
if (url === null) usage('URL is required');

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

let opened = false;
let finished = false;
const pending = [];

function finish(status) {
  if (finished) return;
  finished = true;
  // Let stdout drain before leaving.
  process.stdout.write('', () => process.exit(status));
}

let ws;
try {
  ws = new WebSocket(url, subprotocols, { perMessageDeflate: compression, headers, maxPayload });
} catch (err) {
  emit({ error: err.message });
  finish(1);
}

function run(command) {
  if (typeof command !== 'object' || command === null) throw new Error('a command is a JSON object');
  const options = {};
  if ('fin' in command) options.fin = Boolean(command.fin);
  if ('compress' in command) options.compress = Boolean(command.compress);
  if ('send' in command) {
    ws.send(String(command.send), { ...options, binary: false });
  } else if ('send_binary_b64' in command) {
    ws.send(Buffer.from(String(command.send_binary_b64), 'base64'), { ...options, binary: true });
  } else if ('ping' in command) {
    ws.ping(Buffer.from(String(command.ping ?? ''), 'utf8'));
  } else if ('close' in command) {
    const args = Array.isArray(command.close) ? command.close : [command.close];
    if (args.length === 0 || args[0] === null || args[0] === undefined) ws.close();
    else ws.close(Number(args[0]), args.length > 1 ? String(args[1]) : undefined);
  } else if ('terminate' in command) {
    ws.terminate();
  } else {
    throw new Error(`unknown command ${JSON.stringify(command)}`);
  }
}

function submit(line) {
  let command;
  try {
    command = JSON.parse(line);
  } catch (err) {
    emit({ error: `bad command (not JSON): ${line}` });
    return;
  }
  if (!opened) {
    pending.push(command);
    return;
  }
  try {
    run(command);
  } catch (err) {
    emit({ error: `command ${line} failed: ${err.message}` });
  }
}

ws.on('open', () => {
  opened = true;
  emit({ open: { protocol: ws.protocol, extensions: ws.extensions } });
  while (pending.length && ws.readyState === WebSocket.OPEN) {
    const command = pending.shift();
    try {
      run(command);
    } catch (err) {
      emit({ error: `command ${JSON.stringify(command)} failed: ${err.message}` });
    }
  }
  if (stdinEnded && ws.readyState === WebSocket.OPEN) ws.close(1000);
});

ws.on('message', (data, isBinary) => {
  const buffer = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
  if (isBinary) emit({ message: buffer.toString('base64'), binary: true });
  else emit({ message: buffer.toString('utf8'), binary: false });
});

ws.on('ping', (data) => emit({ ping: data.toString('utf8') }));
ws.on('pong', (data) => emit({ pong: data.toString('utf8') }));

ws.on('unexpected-response', (req, res) => {
  emit({ error: `unexpected response: HTTP ${res.statusCode}`, status: res.statusCode });
  req.destroy();
  finish(1);
});

ws.on('error', (err) => {
  emit({ error: err.message });
  if (!opened) finish(1);
});

ws.on('close', (code, reason) => {
  emit({ close: [code, reason.toString('utf8')] });
  finish(opened ? 0 : 1);
});

let stdinEnded = false;
const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on('line', (line) => {
  if (line.trim()) submit(line);
});
rl.on('close', () => {
  stdinEnded = true;
  if (opened && ws.readyState === WebSocket.OPEN && pending.length === 0) ws.close(1000);
});
