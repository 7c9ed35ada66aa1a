#!/usr/bin/env node
// An echo server built on node's `ws`, as a peer no one here wrote, for tether's interop tests.
//
//   node ws_server.js PORT [--host H] [--no-compression] [--max-payload N] [--threshold N]
//                          [--subprotocol NAME]...
//
// PORT 0 picks a free port. When it is ready it prints "listening PORT" (the real port) on stdout.
// Every path is accepted. Text is echoed as text and binary as binary; the text "close:CODE:REASON"
// makes it close with that code and reason instead (REASON may be empty or contain colons).
// Pings are answered by ws itself. permessage-deflate is on (threshold 0: every message is
// compressed) unless --no-compression. --subprotocol accepts that subprotocol when the client offers
// it. The same options can come from the environment: WS_NO_COMPRESSION=1, WS_MAX_PAYLOAD=N,
// WS_THRESHOLD=N. Errors of a connection are logged on stderr and never stop the server.
// SIGTERM / SIGINT close the server (1001 to every client) and exit 0.
'use strict';

const path = require('path');
const { WebSocketServer } = require(path.join(__dirname, 'node_modules', 'ws'));

function usage(message) {
  if (message) process.stderr.write(`ws_server.js: ${message}\n`);
  process.stderr.write('usage: node ws_server.js PORT [--host H] [--no-compression] '
    + '[--max-payload N] [--threshold N] [--subprotocol NAME]...\n');
  process.exit(2);
}

function integer(value, name) {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) usage(`${name} must be a non-negative integer, not ${value}`);
  return n;
}

const opts = {
  port: null,
  host: '127.0.0.1',
  compression: !process.env.WS_NO_COMPRESSION,
  maxPayload: process.env.WS_MAX_PAYLOAD ? integer(process.env.WS_MAX_PAYLOAD, 'WS_MAX_PAYLOAD') : 100 * 1024 * 1024,
  threshold: process.env.WS_THRESHOLD ? integer(process.env.WS_THRESHOLD, 'WS_THRESHOLD') : 0,
  subprotocols: [],
};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i];
  const next = () => (i + 1 < argv.length ? argv[++i] : usage(`${arg} needs a value`));
  if (arg === '--no-compression') opts.compression = false;
  else if (arg === '--max-payload') opts.maxPayload = integer(next(), arg);
  else if (arg === '--threshold') opts.threshold = integer(next(), arg);
  else if (arg === '--host') opts.host = next();
  else if (arg === '--subprotocol') opts.subprotocols.push(next());
  else if (arg === '-h' || arg === '--help') usage();
  else if (opts.port === null && /^\d+$/.test(arg)) opts.port = Number(arg);
  else usage(`unknown argument ${arg}`);
}
if (opts.port === null) usage('PORT is required');

const wss = new WebSocketServer({
  host: opts.host,
  port: opts.port,
  maxPayload: opts.maxPayload,
  perMessageDeflate: opts.compression ? { threshold: opts.threshold } : false,
  handleProtocols: (offered) => {
    for (const name of offered) if (opts.subprotocols.includes(name)) return name;
    return false;
  },
});

wss.on('listening', () => {
  process.stdout.write(`listening ${wss.address().port}\n`);
});

wss.on('error', (err) => {
  process.stderr.write(`ws_server.js: server error: ${err.message}\n`);
  process.exit(1);
});

wss.on('connection', (ws) => {
  ws.on('error', (err) => {
    process.stderr.write(`ws_server.js: connection error: ${err.message}\n`);
  });
  ws.on('message', (data, isBinary) => {
    if (!isBinary) {
      const text = data.toString('utf8');
      if (text.startsWith('close:')) {
        const rest = text.slice('close:'.length);
        const colon = rest.indexOf(':');
        const code = Number(colon < 0 ? rest : rest.slice(0, colon));
        const reason = colon < 0 ? '' : rest.slice(colon + 1);
        try {
          ws.close(code, reason);
        } catch (err) {
          // An invalid code or a too-long reason: say so, and close normally.
          process.stderr.write(`ws_server.js: cannot close with ${JSON.stringify(rest)}: ${err.message}\n`);
          ws.close(1011, 'bad close command');
        }
        return;
      }
    }
    ws.send(data, { binary: isBinary });
  });
});

function shutdown() {
  for (const client of wss.clients) client.close(1001, 'server shutting down');
  wss.close(() => process.exit(0));
  setTimeout(() => {
    for (const client of wss.clients) client.terminate();
    process.exit(0);
  }, 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
